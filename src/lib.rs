//! featurestream: a real-time map feature stream server, wire-compatible with ArcGIS stream
//! services (the `StreamLayer` of the ArcGIS Maps SDK for JavaScript, 4.x and 5.x).
//!
//! The modules in the order the data flows (docs/architecture.md):
//! - [`source`]: the contract every source hands a broker (a `Batch` of observations in the
//!   service's schema, the `Receipt` a publisher may wait for, the `Lease` a source that runs
//!   once per cluster publishes under); [`simulator`] is one
//!   source, publishing a batch per tick through the broker's `BatchSink` (its routes embedded
//!   or from a file); [`ingest`] is the other: Esri JSON, GeoJSON and NDJSON documents parsed
//!   and validated feature by feature, published by `http` (HTTP and the broadcast WebSocket).
//! - [`feeds`]: outside feeds a service takes observations from, through the same message
//!   path as NATS subjects (`ServiceRuntime::take_message`): MQTT topics (3.1.1 or 5; QoS 1
//!   acknowledged once recorded) and GTFS-Realtime VehiclePositions polled over HTTP, each run
//!   on one node at a time under the service's source lease.
//! - [`latest`]: the latest observation of every track (numbered, ordered by the start-time
//!   field, expired by age), saved to and restored from a file. Plain Rust.
//! - [`cluster`]: with `FEATURESTREAM_NATS_URL`, the NATS backbone between sources and
//!   brokers: the sources' batches are appended to a log per service in JetStream, which every
//!   node's broker applies in the log's one order by one rule (so every node holds the same
//!   state), with checkpoints written by one node at a time to keep the log short; the
//!   simulator's lease; server-initiated messages and SSE filter updates for sessions on other
//!   nodes; ingest from NATS subjects, at most or at least once. Unset: not running.
//! - [`broker`]: one per service (`ServiceRuntime`): the inbox that merges and coalesces
//!   batches, the latest state, snapshots, expiry, subscriptions grouped when identical,
//!   frames encoded once per batch and pushed as shared `Bytes` into each subscriber's bounded
//!   `queue` (a subscriber behind it gets a snapshot when it has room), and the queries of
//!   the latest state the feature layer serves (`archive`). It knows subscribers and the
//!   bytes it gives them, never a transport.
//! - [`session`]: the transports: a WebSocket session (server and custom mode, compressed
//!   when the client offers permessage-deflate) or an SSE session per client, its budgets, and
//!   the upgraded socket; each says "session ended, because X" in its own bytes.
//! - [`http`]: the only code that knows URLs: endpoints (the ArcGIS streams and the GeoJSON
//!   stream, ingest, the latest state as an ArcGIS feature layer and as OGC API - Features,
//!   readiness), admission (connection gate, origins, hosts, trusted proxies), auth checks,
//!   metrics.
//! - [`server`]: wires services, brokers, simulators and the HTTP server together.
//!
//! Plain Rust underneath, no actix: [`feature`] (schema, values, features), [`geometry`]
//! (spatial references, envelopes, routes), [`filter`] (where clauses, envelopes, outFields,
//! the filter-update state machine, the per-service filter budget, CQL2 text mapped onto where
//! clauses), [`protocol`] (the only code that knows JSON field names and close codes: Esri JSON
//! and GeoJSON frames, OGC API documents), [`config`] and [`auth`].
//!
//! Dependency rules: `feature`, `geometry`, `filter`, `protocol`, `ingest`, `latest` and
//! `source` never import actix; only `cluster` imports NATS (`async_nats`), only `feeds`
//! imports MQTT and HTTP clients (`rumqttc`, `reqwest`), and nothing they feed (`broker`,
//! `latest`, `source`, `session`) imports `cluster` or `feeds`.

#![recursion_limit = "256"] // serde_json::json! of the feature layer document (protocol::feature_layer)

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod feature;
pub mod feeds;
pub mod filter;
pub mod geometry;
pub mod http;
pub mod ingest;
pub mod latest;
pub mod protocol;
pub mod server;
pub mod service;
pub mod session;
pub mod simulator;
pub mod source;
