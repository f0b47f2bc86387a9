//! (module `client`: being written)
