//! (module `config`: being written)
