//! Support for the end-to-end tests and for `cargo xtask`: where the test control plane lives
//! ([`testenv`]) and what a test needs to use it ([`support`]).

pub mod support;
pub mod testenv;
