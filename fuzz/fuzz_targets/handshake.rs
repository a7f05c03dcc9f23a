//! Custom-mode handshake decoding and its filter never panic; the echo is valid JSON.
#![no_main]

use featurestream::feature::GeometryType;
use featurestream::filter::{FilterLimits, FilterState};
use featurestream::geometry::Wkid;
use featurestream::protocol::handshake;
use featurestream::service::vehicles_schema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
    if let Ok(decoded) = handshake::decode(text) {
        let mut state = FilterState::default();
        let _ = state.apply(decoded.update.clone(), &schema, decoded.out_sr, FilterLimits::default());
        let echo = handshake::encode_echo(&decoded);
        assert!(serde_json::from_str::<serde_json::Value>(&echo).is_ok());
    }
});
