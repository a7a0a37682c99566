//! Test modules, grouped so nextest can put the slow ones in the `system` group.

mod common;
mod system;
