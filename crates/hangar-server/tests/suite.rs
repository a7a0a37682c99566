//! Test modules.

mod common;
mod fuzz;
mod isolation;
mod limits;
