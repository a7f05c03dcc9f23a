//! A message on a service's state stream (another node's, another version's, or garbage) never
//! panics a replica: it decodes to an observation that reads back as itself, or is refused.
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
        if let Ok(feature) = codec.decode(data, 7, i64::MAX / 4) {
            // What a node stores of it reads back the same.
            let stored = codec.encode(&feature);
            let again = codec.decode(&stored, 7, i64::MAX / 4).expect("a stored observation reads back");
            assert_eq!(codec.encode(&again), stored);
        }
    }
});
