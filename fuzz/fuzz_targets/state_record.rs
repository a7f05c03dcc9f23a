//! A state file's bytes (a torn journal, a damaged checkpoint, another version's, garbage)
//! never panic a start: every whole frame decodes to a record that encodes back to the same
//! frame, or is refused; the tail check answers for whatever follows.
#![no_main]

use featurestream::feature::GeometryType;
use featurestream::geometry::Wkid;
use featurestream::latest::codec;
use featurestream::service::vehicles_schema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (payloads, end) = codec::frames(data);
    let _ = codec::is_torn_tail(&data[end..]);
    for (geometry, wkid) in [
        (GeometryType::Point, Wkid::Wgs84),
        (GeometryType::Polyline, Wkid::WebMercator(102100)),
        (GeometryType::Polygon, Wkid::Wgs84),
    ] {
        let schema = vehicles_schema(geometry, wkid);
        for payload in &payloads {
            if let Ok(record) = codec::decode(payload, &schema) {
                let mut framed = Vec::new();
                codec::encode(&record, &mut framed);
                let (again, _) = codec::frames(&framed);
                assert_eq!(again.len(), 1);
                assert_eq!(codec::decode(again[0], &schema).as_ref(), Ok(&record));
            }
        }
    }
});
