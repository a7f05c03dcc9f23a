//! Wire formats: the only code that knows JSON field names. Handshake, filter message and
//! reply, featureResult and feature frames, metadata, close codes. No actors, no evaluation.

pub mod envelope_json;
pub mod filter_message;
