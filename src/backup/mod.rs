//! (module `backup`: being written)
