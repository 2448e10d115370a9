//! Placeholder until the ept benchmark lands.
fn main() {}
