//! Support shared by the integration tests: a frame pool, a reference model
//! and a random-operation driver.
#![allow(dead_code)]

pub mod driver;
pub mod model;
pub mod pool;
