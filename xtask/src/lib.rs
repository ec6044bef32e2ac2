//! Support for the end-to-end tests and for `cargo xtask`: where the test control plane lives
//! ([`testenv`]), what a test needs to use it ([`support`]) and the test registries ([`registry`]).

pub mod image;
pub mod registry;
pub mod support;
pub mod testenv;
