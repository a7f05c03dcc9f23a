//! Shared test helpers.

pub mod where_gen;
