//! ArcGIS server mode (seed 003, docs/protocol.md §2–3, §5–6): URL parameters validated before the
//! upgrade, one feature per frame, outSR, filter messages and their replies.

use std::collections::HashMap;
use std::sync::Arc;

use featurestream::feature::{FieldType, FieldValue, GeometryType, Schema};
use featurestream::filter::{FilterLimits, WhereClause};
use featurestream::geometry::{Wkid, lon_lat_to_mercator};
use featurestream::service::vehicles_schema;
use serde_json::{Value, json};

use crate::support::{Socket, TestServer, connect, next_json, next_reply, send, try_connect};

const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe";

fn schema() -> Schema {
    vehicles_schema(GeometryType::Point, Wkid::Wgs84)
}

/// A received feature's attributes as the engine's values, by schema field order.
fn attributes(schema: &Schema, feature: &Value) -> Vec<FieldValue> {
    schema
        .fields()
        .iter()
        .map(
            |field| match (&feature["attributes"][&field.name], field.field_type) {
                (Value::Null, _) => FieldValue::Null,
                (value, FieldType::String) => {
                    FieldValue::String(Arc::from(value.as_str().expect("string")))
                }
                (value, FieldType::Double) => FieldValue::Double(value.as_f64().expect("double")),
                (value, FieldType::Date) => FieldValue::Date(value.as_i64().expect("date")),
                (value, FieldType::Boolean) => {
                    FieldValue::Boolean(value.as_i64().expect("0 or 1") != 0)
                }
                (value, _) => FieldValue::Integer(value.as_i64().expect("integer")),
            },
        )
        .collect()
}

async fn refusal(server: &TestServer, query: &str) -> (u16, Value) {
    let (status, body) = try_connect(&server.ws_url(&format!("{SUBSCRIBE}?{query}")))
        .await
        .expect_err("refused");
    (status, serde_json::from_str(&body).expect("JSON body"))
}

#[actix_web::test]
async fn invalid_url_parameters_are_refused_before_the_upgrade_naming_the_parameter() {
    let server = TestServer::simulated(5);
    let unknown = try_connect(
        &server.ws_url("/arcgis/ws/services/WrongService/StreamServer/subscribe?token=XYZ"),
    )
    .await
    .expect_err("refused");
    assert_eq!(unknown.0, 404);
    let cases = [
        (
            "outSR=2193",
            "outSR: Unsupported spatial reference wkid 2193; supported wkids: 4326, 3857, 102100, 102113, 900913.",
        ),
        (
            "outSR=abc",
            "outSR: \"abc\" is not a wkid; supported wkids: 4326, 3857, 102100, 102113, 900913.",
        ),
        (
            "where=no_such_field_xyz%20%3E%201",
            "where: The field \"no_such_field_xyz\" does not exist in this Stream Service's schema.",
        ),
        (
            "where=speed%20%3E",
            "where: Invalid where clause: expected a field name or a value, found end of clause at position 7.",
        ),
        (
            "geometry=1,2,3",
            "geometry: Invalid geometry: expected xmin,ymin,xmax,ymax or an envelope JSON object, found \"1,2,3\".",
        ),
        (
            "geometry=5,0,1,1",
            "geometry: Invalid geometry: xmin (5) is greater than xmax (1).",
        ),
        (
            "outFields=speed,nope",
            "outFields: The field \"nope\" does not exist in this Stream Service's schema.",
        ),
        (
            "spatialRel=esriSpatialRelTouches",
            "spatialRel: Invalid spatialRel \"esriSpatialRelTouches\"; supported: esriSpatialRelIntersects, esriSpatialRelEnvelopeIntersects, esriSpatialRelContains, esriSpatialRelWithin.",
        ),
    ];
    for (query, problem) in cases {
        let (status, body) = refusal(&server, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(body["error"]["details"], json!([problem]), "{query}");
    }
    let (status, _, body) = crate::support::http(server.addr, "GET", SUBSCRIBE, &[]).await;
    assert_eq!(status, 400, "a plain GET is not a WebSocket: {body}");
}

#[actix_web::test]
async fn one_feature_per_frame_with_every_field() {
    let server = TestServer::simulated(10);
    let mut socket = connect(&server.ws_url(&format!("{SUBSCRIBE}?outSR=4326"))).await;
    let schema = schema();
    for _ in 0..25 {
        let feature = next_json(&mut socket).await;
        let fields = feature["attributes"]
            .as_object()
            .expect("a feature object per frame");
        assert_eq!(fields.len(), schema.fields().len());
        assert!(feature["geometry"]["x"].is_f64() && feature["geometry"]["y"].is_f64());
    }
}

/// Reads features until `count` are collected, keyed by OBJECTID.
async fn features_by_object_id(socket: &mut Socket, count: usize) -> HashMap<i64, Value> {
    let mut features = HashMap::new();
    while features.len() < count {
        let feature = next_json(socket).await;
        features.insert(
            feature["attributes"]["OBJECTID"]
                .as_i64()
                .expect("OBJECTID"),
            feature,
        );
    }
    features
}

#[actix_web::test]
async fn out_sr_projects_coordinates_into_web_mercator() {
    let server = TestServer::simulated(10);
    let mut degrees = connect(&server.ws_url(&format!("{SUBSCRIBE}?outSR=4326"))).await;
    let mut metres = connect(&server.ws_url(&format!("{SUBSCRIBE}?outSR=102100"))).await;
    let in_degrees = features_by_object_id(&mut degrees, 60).await;
    let in_metres = features_by_object_id(&mut metres, 60).await;
    let mut compared = 0;
    for (object_id, feature) in &in_degrees {
        let Some(projected) = in_metres.get(object_id) else {
            continue;
        };
        let lon = feature["geometry"]["x"].as_f64().expect("x");
        let lat = feature["geometry"]["y"].as_f64().expect("y");
        let (x, y) = lon_lat_to_mercator(lon, lat);
        assert!(
            (projected["geometry"]["x"].as_f64().expect("x") - x).abs() < 0.05,
            "{object_id}"
        );
        assert!(
            (projected["geometry"]["y"].as_f64().expect("y") - y).abs() < 0.05,
            "{object_id}"
        );
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} common features");
    // Reference point: the Esri sample's centre.
    let (x, y) = lon_lat_to_mercator(-117.1956, 34.0564);
    assert!((x - -13_046_154.515).abs() < 0.01 && (y - 4_036_377.685).abs() < 0.01);
}

#[actix_web::test]
async fn url_where_geometry_and_out_fields_filter_the_stream() {
    let server = TestServer::simulated(60);
    let query =
        "outSR=4326&where=speed%20%3E%2050&outFields=speed,name&geometry=-117.25,34.0,-117.16,34.1";
    let mut socket = connect(&server.ws_url(&format!("{SUBSCRIBE}?{query}"))).await;
    for _ in 0..30 {
        let feature = next_json(&mut socket).await;
        let attributes = feature["attributes"].as_object().expect("attributes");
        let mut keys: Vec<&str> = attributes.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["OBJECTID", "TRACKID", "name", "speed"]);
        assert!(attributes["speed"].as_f64().expect("speed") > 50.0);
        let (x, y) = (
            feature["geometry"]["x"].as_f64().expect("x"),
            feature["geometry"]["y"].as_f64().expect("y"),
        );
        assert!(
            (-117.25..=-117.16).contains(&x) && (34.0..=34.1).contains(&y),
            "{x},{y}"
        );
    }
    // An envelope JSON in 4326 on a Web Mercator connection is projected into it.
    let envelope = "%7B%22xmin%22%3A-117.25%2C%22ymin%22%3A34.0%2C%22xmax%22%3A-117.16%2C%22ymax%22%3A34.1%2C%22spatialReference%22%3A%7B%22wkid%22%3A4326%7D%7D";
    let mut metres =
        connect(&server.ws_url(&format!("{SUBSCRIBE}?outSR=102100&geometry={envelope}"))).await;
    let (xmin, ymin) = lon_lat_to_mercator(-117.25, 34.0);
    let (xmax, ymax) = lon_lat_to_mercator(-117.16, 34.1);
    for _ in 0..30 {
        let feature = next_json(&mut metres).await;
        let (x, y) = (
            feature["geometry"]["x"].as_f64().expect("x"),
            feature["geometry"]["y"].as_f64().expect("y"),
        );
        assert!(
            x >= xmin - 0.01 && x <= xmax + 0.01 && y >= ymin - 0.01 && y <= ymax + 0.01,
            "{x},{y}"
        );
    }
}

#[actix_web::test]
async fn filter_messages_set_merge_clear_and_always_reply_with_the_state() {
    let server = TestServer::simulated(30);
    let mut socket = connect(&server.ws_url(&format!("{SUBSCRIBE}?outSR=4326"))).await;
    let steps: Vec<(&str, Value)> = vec![
        (
            r#"{"filter":{"where":"speed > 50"}}"#,
            json!({"filter": {"where": "speed > 50"}, "error": null}),
        ),
        (
            r#"{"filter":{"outFields":"speed"}}"#,
            json!({"filter": {"where": "speed > 50", "outFields": "speed"}, "error": null}),
        ),
        (
            r#"{"filter":{}}"#,
            json!({"filter": {"where": "speed > 50", "outFields": "speed"}, "error": null}),
        ),
        (
            r#"{"filter":{"where":"no_such_field_xyz > 1","outFields":"speed,Invalid_Field_Name"}}"#,
            json!({"filter": {"where": "speed > 50", "outFields": "speed"}, "error": [
                "The field \"no_such_field_xyz\" does not exist in this Stream Service's schema.",
                "The field \"Invalid_Field_Name\" does not exist in this Stream Service's schema."
            ]}),
        ),
        (
            r#"{"filter":{"where":null}}"#,
            json!({"filter": {"outFields": "speed"}, "error": null}),
        ),
        (
            r#"{"filter":{"geometry":"{\"spatialReference\":{\"wkid\":4326},\"xmin\":-117.26,\"ymin\":33.98,\"xmax\":-117.17,\"ymax\":34.08}"}}"#,
            json!({"filter": {"geometry": {"xmin": -117.26, "ymin": 33.98, "xmax": -117.17, "ymax": 34.08, "spatialReference": {"wkid": 4326}}, "outFields": "speed"}, "error": null}),
        ),
        (
            r#"{"filter":{"geometry":{"xmin":1}}}"#,
            json!({"filter": {"geometry": {"xmin": -117.26, "ymin": 33.98, "xmax": -117.17, "ymax": 34.08, "spatialReference": {"wkid": 4326}}, "outFields": "speed"}, "error": ["Invalid geometry: the envelope has no ymin."]}),
        ),
        (r#"{"filter":null}"#, json!({"filter": {}, "error": null})),
        (
            "hello",
            json!({"filter": {}, "error": ["Invalid filter: the message is not JSON; expected {\"filter\": {...}}."]}),
        ),
    ];
    for (message, expected) in steps {
        send(&mut socket, message).await;
        let (reply, _) = next_reply(&mut socket).await;
        assert_eq!(reply, expected, "{message}");
    }
}

#[actix_web::test]
async fn after_the_reply_every_feature_follows_the_new_filter_and_a_bad_filter_keeps_the_old() {
    let server = TestServer::simulated(30);
    let mut socket = connect(&server.ws_url(&format!("{SUBSCRIBE}?outSR=4326"))).await;
    next_json(&mut socket).await;
    send(
        &mut socket,
        r#"{"filter":{"where":"speed > 50 AND status = 'moving'"}}"#,
    )
    .await;
    let (reply, _) = next_reply(&mut socket).await;
    assert_eq!(reply["error"], Value::Null);
    let check = |feature: &Value| {
        assert!(
            feature["attributes"]["speed"].as_f64().expect("speed") > 50.0,
            "{feature}"
        );
        assert_eq!(feature["attributes"]["status"], "moving");
    };
    for _ in 0..20 {
        check(&next_json(&mut socket).await);
    }
    send(&mut socket, r#"{"filter":{"where":"speed >"}}"#).await;
    let (reply, _) = next_reply(&mut socket).await;
    assert_eq!(
        reply["filter"],
        json!({"where": "speed > 50 AND status = 'moving'"})
    );
    assert_eq!(
        reply["error"][0],
        "Invalid where clause: expected a field name or a value, found end of clause at position 7."
    );
    for _ in 0..20 {
        check(&next_json(&mut socket).await);
    }
}

/// Collects features until one observed after `until` arrives; returns (observed, feature).
async fn collect_until(socket: &mut Socket, until: i64) -> Vec<(i64, Value)> {
    let mut features = Vec::new();
    loop {
        let feature = next_json(socket).await;
        let observed = feature["attributes"]["observed"]
            .as_i64()
            .expect("observed");
        if observed > until {
            return features;
        }
        features.push((observed, feature));
    }
}

#[actix_web::test]
async fn two_sessions_with_different_filters_each_get_exactly_what_their_filter_allows() {
    let server = TestServer::simulated(30);
    let schema = schema();
    let clause_a = "speed > 60";
    let clause_b = "status = 'moving' AND heading < 180 OR route LIKE 'I%'";
    let url = |clause: &str| {
        server.ws_url(&format!(
            "{SUBSCRIBE}?outSR=4326&where={}",
            crate::support::percent_encode(clause)
        ))
    };
    let mut session_a = connect(&url(clause_a)).await;
    let mut session_b = connect(&url(clause_b)).await;
    let mut everything = connect(&server.ws_url(&format!("{SUBSCRIBE}?outSR=4326"))).await;
    // Start from a tick boundary that all three sessions see from its first feature.
    let first = next_json(&mut everything).await["attributes"]["observed"]
        .as_i64()
        .expect("observed");
    let all: Vec<(i64, Value)> = collect_until(&mut everything, first + 400).await;
    let last = all.last().expect("features").0;
    let received_a = collect_until(&mut session_a, last).await;
    let received_b = collect_until(&mut session_b, last).await;
    let compile = |clause: &str| {
        WhereClause::compile(&schema, clause, FilterLimits::default()).expect("valid")
    };
    let (where_a, where_b) = (compile(clause_a), compile(clause_b));
    let ids = |features: &[(i64, Value)], from: i64| -> Vec<i64> {
        let mut ids: Vec<i64> = features
            .iter()
            .filter(|(observed, _)| *observed > from && *observed < last)
            .map(|(_, feature)| {
                feature["attributes"]["OBJECTID"]
                    .as_i64()
                    .expect("OBJECTID")
            })
            .collect();
        ids.sort_unstable();
        ids
    };
    let from = first;
    let expected_a: Vec<(i64, Value)> = all
        .iter()
        .filter(|(_, feature)| where_a.matches(&attributes(&schema, feature)))
        .cloned()
        .collect();
    let expected_b: Vec<(i64, Value)> = all
        .iter()
        .filter(|(_, feature)| where_b.matches(&attributes(&schema, feature)))
        .cloned()
        .collect();
    assert!(!ids(&expected_a, from).is_empty() && !ids(&expected_b, from).is_empty());
    assert_eq!(ids(&received_a, from), ids(&expected_a, from));
    assert_eq!(ids(&received_b, from), ids(&expected_b, from));
    for (_, feature) in received_a.iter().chain(&received_b) {
        assert!(
            feature["attributes"].as_object().expect("attributes").len() == schema.fields().len()
        );
    }
}
