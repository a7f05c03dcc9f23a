//! featurestream: a real-time map feature stream server, wire-compatible with ArcGIS stream
//! services (the `StreamLayer` of the ArcGIS Maps SDK for JavaScript, 4.x and 5.x).
//!
//! Architecture map:
//! - [`feature`]: the domain model (schema, field types, attribute values, features).
//! - [`geometry`]: f64 geometry: spatial references 4326 and Web Mercator, envelopes,
//!   spatial relations, routes for the simulator. No I/O.
//! - [`filter`]: the where-clause compiler and evaluator, envelope filter, outFields and the
//!   filter-update state machine. No actix, no JSON.
//! - `protocol`: the only code that knows JSON field names (handshake, filter message and
//!   reply, featureResult, metadata, close codes).
//!
//! Dependency rules: `feature`, `geometry`, `filter` and `protocol` never import actix.

pub mod auth;
pub mod broker;
pub mod config;
pub mod feature;
pub mod filter;
pub mod geometry;
pub mod http;
pub mod protocol;
pub mod server;
pub mod service;
pub mod session;
pub mod simulator;
