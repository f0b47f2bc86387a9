//! (module `archive`: being written)
