//! (module `catalog`: being written)
