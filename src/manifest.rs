//! (module `manifest`: being written)
