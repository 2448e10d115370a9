//! Runners for okernel images.
