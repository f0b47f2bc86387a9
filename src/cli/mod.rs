//! (module `cli`: being written)
