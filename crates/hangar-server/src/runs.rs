//! Runs: the rules for creating, cancelling and continuing a run.

pub mod options;
