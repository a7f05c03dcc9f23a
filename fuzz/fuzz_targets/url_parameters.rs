//! The subscribe URL's parameters, decoded and validated as the HTTP layer does, never panic.
#![no_main]

use featurestream::feature::GeometryType;
use featurestream::filter::{FilterLimits, FilterState, FilterUpdate, OutFields, OutFieldsInput, Patch};
use featurestream::geometry::{SpatialRel, Wkid};
use featurestream::protocol::envelope_json;
use featurestream::service::vehicles_schema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else { return };
    let get = |name: &str| pairs.iter().rev().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str());
    let out_sr = get("outSR").and_then(|text| text.trim().parse::<i64>().ok()).and_then(|n| Wkid::from_number(n).ok()).unwrap_or(Wkid::Wgs84);
    let geometry = match get("geometry").map(envelope_json::decode_text) {
        Some(Ok(Some(input))) => Patch::Set(input),
        Some(Err(err)) => Patch::Invalid(err),
        _ => Patch::Keep,
    };
    let spatial_rel = get("spatialRel").and_then(SpatialRel::parse).map_or(Patch::Keep, Patch::Set);
    let where_clause = get("where").map_or(Patch::Keep, |text| Patch::Set(text.to_owned()));
    let out_fields = get("outFields").map_or(Patch::Keep, |text| Patch::Set(OutFieldsInput::List(text.to_owned())));
    if let Some(text) = get("outFields") {
        let _ = OutFields::parse_list(&schema, text);
    }
    let update = FilterUpdate::Parts { where_clause, geometry, spatial_rel, out_fields };
    let _ = FilterState::default().apply(update, &schema, out_sr, FilterLimits::default());
});
