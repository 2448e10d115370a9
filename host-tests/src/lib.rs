//! Host tests of okernel's `no_std` crates live in `tests/`; this library
//! holds the shared fakes and builders they use.
