//! A message on a service's stream (another node's, another version's, or garbage) never
//! panics a replica: a log message decodes to observations that read back as themselves, a
//! checkpoint message to features that match its metadata, a delete to the track it names,
//! or each is refused.
#![no_main]

use featurestream::cluster::Codec;
use featurestream::feature::GeometryType;
use featurestream::geometry::Wkid;
use featurestream::service::vehicles_schema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (geometry, wkid) in [
        (GeometryType::Point, Wkid::Wgs84),
        (GeometryType::Polyline, Wkid::WebMercator(102100)),
        (GeometryType::Polygon, Wkid::Wgs84),
    ] {
        let codec = Codec::new(&vehicles_schema(geometry, wkid));
        if let Ok(decoded) = codec.decode_log(data, i64::MAX / 4) {
            // What a node appends of it reads back the same.
            let features: Vec<_> = decoded
                .features
                .into_iter()
                .map(|(_, feature)| feature)
                .collect();
            for (stored, range) in codec.encode_log(&features) {
                let again = codec
                    .decode_log(&stored, i64::MAX / 4)
                    .expect("an appended batch reads back");
                assert!(again.rejected.is_empty());
                assert_eq!(again.features.len(), range.len());
            }
        }
        if let Some(Ok(key)) = codec.decode_delete(data) {
            // A delete reads back as the track it names.
            assert_eq!(
                codec
                    .decode_delete(&codec.encode_delete(&key))
                    .and_then(Result::ok),
                Some(key)
            );
        }
        if let Ok((meta, features)) = codec.decode_checkpoint(data) {
            assert_eq!(features.len(), meta.ids.len());
            assert_eq!(meta.ids.len(), meta.received.len());
        }
    }
});
