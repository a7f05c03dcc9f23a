use super::*;
use crate::feature::{FieldValue, GeometryType};
use crate::geometry::{Geometry, Wkid};
use crate::service::vehicles_schema;

const NOW: i64 = 1_795_420_842_492;

fn points() -> Schema {
    vehicles_schema(GeometryType::Point, Wkid::Wgs84)
}

fn one(text: &str, schema: &Schema) -> Result<Feature, Reason> {
    let mut ingested = parse_document(text, schema, NOW, 0, 100).expect("a document");
    match ingested.rejected.pop() {
        Some(rejection) => Err(rejection.reason),
        None => Ok(ingested.features.pop().expect("one feature")),
    }
}

const GOOD: &str = r#"{"attributes":{"TRACKID":7,"name":"bus 7","route":"R1","status":null,"speed":12.5,"heading":90,"active":true,"observed":1795420842000},"geometry":{"x":-117.2,"y":34.05}}"#;

#[test]
fn an_esri_feature_becomes_a_feature_of_the_schema() {
    let feature = one(GOOD, &points()).unwrap();
    assert_eq!(
        feature.attributes[0],
        FieldValue::Integer(0),
        "object id left to the broker"
    );
    assert_eq!(feature.attributes[1], FieldValue::Integer(7));
    assert_eq!(feature.attributes[5], FieldValue::Double(12.5));
    assert_eq!(feature.attributes[6], FieldValue::Double(90.0));
    assert_eq!(feature.attributes[7], FieldValue::Boolean(true));
    assert_eq!(feature.attributes[8], FieldValue::Date(1_795_420_842_000));
    assert_eq!(
        feature.geometry,
        Geometry::Point {
            x: -117.2,
            y: 34.05
        }
    );
}

#[test]
fn the_receive_time_fills_a_missing_start_time_and_input_object_ids_are_ignored() {
    let text = r#"{"attributes":{"OBJECTID":99,"TRACKID":7,"name":"a","route":"b","speed":1,"heading":2,"active":0},"geometry":{"x":1,"y":2}}"#;
    let feature = one(text, &points()).unwrap();
    assert_eq!(feature.attributes[0], FieldValue::Integer(0));
    assert_eq!(feature.attributes[8], FieldValue::Date(NOW));
    assert_eq!(
        feature.attributes[4],
        FieldValue::Null,
        "status is nullable"
    );
}

#[test]
fn geojson_is_read_as_wgs84_and_projected_to_the_service() {
    let text = r#"{"type":"Feature","properties":{"TRACKID":"7","name":"a","route":"b","speed":1,"heading":2,"active":false,"observed":"2026-11-22T12:00:00Z"},"geometry":{"type":"Point","coordinates":[180,0]}}"#;
    let mercator = vehicles_schema(GeometryType::Point, Wkid::WebMercator(3857));
    // A string track id in an integer field is a wrong type.
    assert_eq!(one(text, &mercator).unwrap_err().code(), "wrongType");
    let text = text.replace(r#""TRACKID":"7""#, r#""TRACKID":7"#);
    let feature = one(&text, &mercator).unwrap();
    let Geometry::Point { x, y } = feature.geometry else {
        panic!("a point")
    };
    assert!((x - 20_037_508.342789244).abs() < 1e-6 && y.abs() < 1e-9);
    assert_eq!(
        feature.attributes[8],
        FieldValue::Date(1_795_953_600_000 - 7 * 86_400_000)
    );
}

#[test]
fn feature_sets_collections_arrays_and_ndjson_count_indexes_across_the_request() {
    let schema = points();
    let bad = r#"{"attributes":{"TRACKID":8},"geometry":{"x":1,"y":2}}"#;
    let set = format!(r#"{{"features":[{GOOD},{bad}],"spatialReference":{{"wkid":4326}}}}"#);
    let ingested = parse_document(&set, &schema, NOW, 0, 100).unwrap();
    assert_eq!(
        (ingested.features.len(), ingested.indexes.clone()),
        (1, vec![0])
    );
    assert_eq!(ingested.rejected[0].index, 1);
    let array = format!("[{bad},{GOOD},{GOOD}]");
    assert_eq!(
        parse_document(&array, &schema, NOW, 0, 100)
            .unwrap()
            .indexes,
        [1, 2]
    );
    let ndjson = format!("{GOOD}\n\n[{bad},{GOOD}]\n{GOOD}\n");
    let mut position = NdjsonPosition::default();
    let (ingested, error) = parse_ndjson(&ndjson, &schema, NOW, 100, &mut position);
    assert!(error.is_none());
    assert_eq!(ingested.indexes, [0, 2, 3]);
    assert_eq!(ingested.rejected[0].index, 1);
    assert_eq!((position.features, position.lines), (4, 4));
    let broken = format!("{GOOD}\n{{nope\n");
    let (before, error) = parse_ndjson(&broken, &schema, NOW, 100, &mut NdjsonPosition::default());
    let (line, error) = error.expect("line 2 is not JSON");
    assert_eq!(line, 2);
    assert_eq!(before.features.len(), 1, "the line before it");
    assert!(matches!(
        error,
        IngestError::Document(DocumentError::NotJson(_))
    ));
}

#[test]
fn the_feature_limit_refuses_the_request() {
    let array = format!("[{GOOD},{GOOD},{GOOD}]");
    assert_eq!(
        parse_document(&array, &points(), NOW, 0, 2).unwrap_err(),
        IngestError::TooManyFeatures { given: 3, max: 2 }
    );
    let ndjson = format!("{GOOD}\n[{GOOD},{GOOD}]\n[{GOOD},{GOOD},{GOOD}]\n{GOOD}\n");
    let (before, error) = parse_ndjson(&ndjson, &points(), NOW, 2, &mut NdjsonPosition::default());
    assert_eq!(before.features.len(), 3, "the limit is per line");
    let (line, error) = error.expect("too many");
    assert_eq!(
        (line, error),
        (3, IngestError::TooManyFeatures { given: 3, max: 2 })
    );
}

/// Every way a feature can be wrong, and the reason it gets.
#[test]
fn each_bad_feature_gets_its_reason() {
    let points = points();
    let lines = vehicles_schema(GeometryType::Polyline, Wkid::Wgs84);
    let attrs = r#""TRACKID":7,"name":"a","route":"b","speed":1,"heading":2,"active":true"#;
    let with = |extra: &str, geometry: &str| {
        format!(r#"{{"attributes":{{{attrs}{extra}}},"geometry":{geometry}}}"#)
    };
    let point = r#"{"x":1,"y":2}"#;
    let cases: Vec<(String, &Schema, &str)> = vec![
        (with(r#","colour":"red""#, point), &points, "unknownField"),
        (with(r#","speed":"fast""#, point), &points, "wrongType"),
        (with(r#","active":2"#, point), &points, "wrongType"),
        (with(r#","observed":"yesterday""#, point), &points, "wrongType"),
        (with(r#","heading":{"deg":2}"#, point), &points, "wrongType"),
        (with(r#","TRACKID":4294967296"#, point), &points, "outOfRange"),
        (with(r#","TRACKID":1.5"#, point), &points, "wrongType"),
        (with(r#","TRACKID":null"#, point), &points, "missingTrackId"),
        (r#"{"attributes":{"name":"a"},"geometry":{"x":1,"y":2}}"#.into(), &points, "missingTrackId"),
        (with(r#","name":null"#, point), &points, "nullNotAllowed"),
        (r#"{"attributes":{"TRACKID":1,"route":"b","speed":1,"heading":2,"active":true},"geometry":{"x":1,"y":2}}"#.into(), &points, "nullNotAllowed"),
        (with(&format!(r#","name":"{}""#, "x".repeat(33)), point), &points, "tooLong"),
        (with("", "null"), &points, "missingGeometry"),
        (format!(r#"{{"attributes":{{{attrs}}}}}"#), &points, "missingGeometry"),
        (with("", r#"{"x":1}"#), &points, "missingGeometry"),
        (with("", r#"{"paths":[[[1,2],[3,4]]]}"#), &points, "wrongGeometry"),
        (with("", point), &lines, "wrongGeometry"),
        (with("", r#"{"paths":[[[1,2]]]}"#), &lines, "malformedGeometry"),
        (with("", r#"{"paths":[[[1],[3,4]]]}"#), &lines, "malformedGeometry"),
        (with("", r#"{"x":1e999,"y":2}"#), &points, "malformed"),
        (with("", r#"{"x":"1","y":2}"#), &points, "malformed"),
        (with("", r#"{"x":200,"y":2}"#), &points, "outOfWorld"),
        (with("", r#"{"x":1,"y":2,"spatialReference":{"wkid":2193}}"#), &points, "spatialReference"),
        (with("", r#"{"x":1,"y":2,"spatialReference":{"wkt":"PROJCS[..]"}}"#), &points, "spatialReference"),
        (r#"{"type":"Feature","properties":{"TRACKID":1},"geometry":{"type":"LineString","coordinates":[[1,2],[3,4]]}}"#.into(), &points, "nullNotAllowed"),
        (format!(r#"{{"type":"Feature","properties":{{{attrs}}},"geometry":{{"type":"LineString","coordinates":[[1,2],[3,4]]}}}}"#), &points, "wrongGeometry"),
        (format!(r#"{{"type":"Feature","properties":{{{attrs}}},"geometry":{{"type":"Point","coordinates":[1]}}}}"#), &points, "malformedGeometry"),
        (format!(r#"{{"type":"Feature","properties":{{{attrs}}},"geometry":{{"coordinates":[1,2]}}}}"#), &points, "malformedGeometry"),
        (r#"{"attributes":[1,2],"geometry":{"x":1,"y":2}}"#.into(), &points, "malformed"),
    ];
    for (text, schema, code) in cases {
        let reason = one(&text, schema).expect_err(&text);
        assert_eq!(reason.code(), code, "{text}: {reason}");
        assert!(!reason.to_string().is_empty());
    }
}

#[test]
fn web_mercator_input_is_projected_to_a_wgs84_service_and_polygons_are_closed() {
    let schema = vehicles_schema(GeometryType::Polygon, Wkid::Wgs84);
    let text = r#"{"attributes":{"TRACKID":7,"name":"a","route":"b","speed":1,"heading":2,"active":true},"geometry":{"rings":[[[0,0],[0,1113194.9],[1113194.9,0]]],"spatialReference":{"wkid":102100,"latestWkid":3857}}}"#;
    let feature = one(text, &schema).unwrap();
    let Geometry::Polygon { rings } = feature.geometry else {
        panic!("a polygon")
    };
    assert_eq!(rings[0].len(), 4, "closed");
    assert_eq!(rings[0][0], rings[0][3]);
    assert!((rings[0][1][1] - 9.9).abs() < 0.1, "{rings:?}");
}

#[test]
fn a_document_read_in_one_pass_reads_as_feature_by_feature() {
    let schema = points();
    let bad_type = GOOD.replace("12.5", "\"fast\"");
    let escaped = GOOD.replace("bus 7", "bus \\\"7\\\" \\u00e9");
    let geojson = r#"{"type":"Feature","properties":{"TRACKID":8},"geometry":{"type":"Point","coordinates":[1,2]}}"#;
    let mercator = GOOD.replace("\"x\":-117.2,\"y\":34.05", "\"x\":1000,\"y\":2000");
    let documents = [
        format!("[{GOOD},{escaped}]"),
        format!("[{GOOD},{bad_type},{GOOD}]"),
        format!("[{GOOD},1,{GOOD}]"),
        format!("[{GOOD},{{\"attributes\":[]}}]"),
        format!(r#"{{"spatialReference":{{"wkid":102100}},"features":[{mercator},{GOOD}]}}"#),
        format!(r#"{{"type":"FeatureCollection","features":[{geojson},{geojson}]}}"#),
        format!(r#"{{"features":[{GOOD}],"attributes":{{}}}}"#),
        format!(r#"{{"features":[{GOOD}],"features":[]}}"#),
        format!(" \n[{GOOD}] \n"),
        "[]".to_owned(),
        "{\"features\":[]}".to_owned(),
        GOOD.to_owned(),
    ];
    for document in &documents {
        for max in [1, 100] {
            let fast = parse_document(document, &schema, NOW, 3, max);
            let careful = parse_each(document, &schema, NOW, 3, max);
            assert_eq!(format!("{fast:?}"), format!("{careful:?}"), "{document}");
        }
    }
    // The one pass reads the well-formed containers; the rest went feature by feature.
    let one_pass: Vec<usize> = (0..documents.len())
        .filter(|&index| document::whole(&documents[index]).is_some())
        .collect();
    assert_eq!(one_pass, [0, 1, 4, 5, 8, 9, 10]);
}
