//! Messages from outside feeds never panic: any bytes as a GTFS-Realtime feed (decoded,
//! mapped to observations, validated) and as an MQTT message (a document or the flat form).
#![no_main]

use featurestream::feature::GeometryType;
use featurestream::feeds::gtfs_realtime::{FeedMessage, Mapping, document, ingest};
use featurestream::geometry::Wkid;
use featurestream::ingest::{FlatFields, parse_message_or_flat};
use featurestream::service::{gtfs_realtime_schema, vehicles_schema};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(feed) = FeedMessage::decode(data) {
        let schema = gtfs_realtime_schema();
        let (text, vehicles, _) = document(&feed, &Mapping::for_schema(&schema));
        let _ = ingest(&text, vehicles, &schema, 1_800_000_000_000);
    }
    let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
    let flat = FlatFields {
        time: Some("ts".into()),
        ..FlatFields::default()
    };
    if let Ok(ingested) = parse_message_or_flat(data, &schema, 1_800_000_000_000, 1000, &flat) {
        assert!(ingested.features.len() + ingested.rejected.len() <= 1000);
    }
});
