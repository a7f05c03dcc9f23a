//! Wire formats: the only code that knows JSON field names. Handshake, filter message and
//! reply, featureResult and feature frames (Esri JSON or GeoJSON), metadata, OGC API - Features
//! documents, close codes. No actors, no evaluation.

pub mod close;
pub mod deflate;
pub mod envelope_json;
pub mod feature_layer;
pub mod feature_result;
pub mod filter_message;
pub mod handshake;
pub mod ingest_report;
pub mod metadata;
pub mod ogc;
pub mod sse;
pub mod ws_frame;
