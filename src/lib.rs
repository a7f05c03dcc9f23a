//! featurestream: a real-time map feature stream server, wire-compatible with ArcGIS stream
//! services (the `StreamLayer` of the ArcGIS Maps SDK for JavaScript, 4.x and 5.x).
//!
//! The modules in the order the data flows (docs/architecture.md):
//! - [`simulator`]: a source: moves a service's fleet and publishes a batch per tick through
//!   the broker's `BatchSink`.
//! - [`broker`]: one per service: the inbox that merges batches a busy broker has not taken,
//!   groups of identical subscriptions, frames encoded once per batch and shared as `Bytes`.
//! - [`session`]: the transports: a WebSocket session (server and custom mode) or an SSE
//!   session per client, its bounded outbound queue, budgets, and the upgraded socket.
//! - [`http`]: the only code that knows URLs: endpoints, admission (connection gate, origins,
//!   hosts, trusted proxies), auth checks, metrics.
//! - [`server`]: wires services, brokers, simulators and the HTTP server together.
//!
//! Plain Rust underneath, no actix: [`feature`] (schema, values, features), [`geometry`]
//! (spatial references, envelopes, routes), [`filter`] (where clauses, envelopes, outFields,
//! the filter-update state machine, the per-service filter budget), [`protocol`] (the only code
//! that knows JSON field names and close codes), [`config`] and [`auth`].
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
