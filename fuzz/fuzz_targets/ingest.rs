//! Ingest documents (Esri JSON, GeoJSON, NDJSON) and simulator route files never panic; every
//! feature read is either accepted or rejected exactly once, by index, and accepted ones have
//! finite coordinates in the service's spatial reference; a document read in one pass reads
//! exactly as read feature by feature.
#![no_main]

use featurestream::feature::GeometryType;
use featurestream::geometry::{Geometry, Wkid};
use featurestream::ingest::{Ingested, NdjsonPosition, parse_document, parse_each, parse_ndjson};
use featurestream::service::vehicles_schema;
use featurestream::simulator::parse_routes;
use libfuzzer_sys::fuzz_target;

fn check(ingested: &Ingested) {
    let mut indexes: Vec<usize> = ingested.indexes.clone();
    indexes.extend(ingested.rejected.iter().map(|rejection| rejection.index));
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), ingested.total());
    assert_eq!(ingested.features.len(), ingested.indexes.len());
    for feature in &ingested.features {
        let finite = match &feature.geometry {
            Geometry::Point { x, y } => x.is_finite() && y.is_finite(),
            Geometry::Polyline { paths: parts } | Geometry::Polygon { rings: parts } => parts
                .iter()
                .flatten()
                .all(|[x, y]| x.is_finite() && y.is_finite()),
        };
        assert!(finite);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for (geometry, wkid) in [
        (GeometryType::Point, Wkid::Wgs84),
        (GeometryType::Polyline, Wkid::WebMercator(3857)),
        (GeometryType::Polygon, Wkid::Wgs84),
    ] {
        let schema = vehicles_schema(geometry, wkid);
        let read = parse_document(text, &schema, 0, 0, 1000);
        if let Ok(ingested) = &read {
            check(ingested);
        }
        let careful = parse_each(text, &schema, 0, 0, 1000);
        assert_eq!(format!("{read:?}"), format!("{careful:?}"));
        let (ingested, _) = parse_ndjson(text, &schema, 0, 1000, &mut NdjsonPosition::default());
        check(&ingested);
    }
    let _ = parse_routes(text);
});
