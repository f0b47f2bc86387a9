//! (module `emulator`: being written)
