//! The single integration-test binary; one module per behaviour.

mod support;

mod abuse;
mod admin;
mod admission;
mod auth;
mod cluster;
mod compression;
mod custom_mode;
mod durability;
mod feature_layer;
mod filter_differential;
mod filter_properties;
mod geojson;
mod gtfs;
mod hardening;
mod ingest;
mod lifecycle;
mod load_tester;
mod mqtt;
mod ogc;
mod rest;
mod snapshot;
mod sse;
mod subscribe;
