//! (module `naming`: being written)
