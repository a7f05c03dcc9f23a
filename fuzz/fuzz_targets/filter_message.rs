//! Filter-message and envelope decoding, then the filter-state merge, never panic; a failed
//! update leaves the state unchanged.
#![no_main]

use featurestream::feature::{Field, FieldType, GeometryType, Schema};
use featurestream::filter::{FilterLimits, FilterState};
use featurestream::geometry::Wkid;
use featurestream::protocol::{envelope_json, filter_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let schema = Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("speed", FieldType::Double),
            Field::new("name", FieldType::String),
        ],
        "OBJECTID",
        "OBJECTID",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .expect("schema");
    let _ = envelope_json::decode_text(text);
    let mut state = FilterState::default();
    for out_sr in [Wkid::Wgs84, Wkid::WebMercator(102100)] {
        if let filter_message::ClientMessage::Filter(update) = filter_message::decode(text) {
            let before = state.clone();
            if state.apply(update, &schema, out_sr, FilterLimits::default()).is_err() {
                assert_eq!(state, before);
            }
            let _ = filter_message::encode_reply(&state, &[]);
        }
    }
});
