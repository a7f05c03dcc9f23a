//! The single integration-test binary; one module per behaviour.

mod support;

mod filter_differential;
mod filter_properties;
