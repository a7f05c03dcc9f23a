//! The GeoJSON stream (`/api/services/{name}/geojson`): a WebSocket or server-sent events,
//! the snapshot first and then live batches as RFC 7946 FeatureCollections keyed by track
//! id, deletes and filter replies as their own messages, the same filters and limits as the
//! ArcGIS streams under GeoJSON names (`bbox`, `properties`).

use std::time::Duration;

use featurestream::config::Config;
use serde_json::{Value, json};

use crate::sse::EventStream;
use crate::support::{TestServer, connect, get_json, next_json, post_json, send, try_connect};

const FEATURES: &str = "/api/services/vehicles/features";

fn ingest_config() -> Config {
    let mut config = Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    config
}

fn observation(track: i64, observed: i64, x: f64) -> Value {
    json!({
        "attributes": {
            "TRACKID": track, "name": format!("bus {track}"), "route": "R1",
            "status": "moving", "speed": 10.5, "heading": 90, "active": true, "observed": observed
        },
        "geometry": { "x": x, "y": 34.05 }
    })
}

async fn publish(server: &TestServer, body: Value) {
    let (status, report) = post_json(server.addr, FEATURES, &[], &body.to_string()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
}

async fn sessions(server: &TestServer, count: u64) {
    for _ in 0..400 {
        let stats = get_json(server.addr, "/api/stats").await.1;
        if stats["services"]["vehicles"]["sessions"] == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the broker never had {count} sessions");
}

/// The track ids of a FeatureCollection, checking that it is one.
fn ids(collection: &Value) -> Vec<i64> {
    assert_eq!(collection["type"], "FeatureCollection", "{collection}");
    collection["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| {
            assert_eq!(feature["type"], "Feature", "{feature}");
            feature["id"].as_i64().unwrap()
        })
        .collect()
}

/// The next filter reply; the ids of the FeatureCollections before it go to `seen` (the new
/// filter's snapshot may come before its reply).
async fn next_reply(socket: &mut crate::support::Socket, seen: &mut Vec<i64>) -> Value {
    loop {
        let message = next_json(socket).await;
        if message.get("filter").is_some() {
            return message;
        }
        seen.extend(ids(&message));
    }
}

#[actix_web::test]
async fn a_geojson_websocket_streams_the_state_then_batches_keyed_by_track_id() {
    let mut config = ingest_config();
    config.services[0].max_feature_age = Some(Duration::from_secs(2));
    let server = TestServer::start(config);
    publish(
        &server,
        json!([
            observation(41, 1_000, -117.1),
            observation(42, 1_000, -117.2)
        ]),
    )
    .await;
    let mut socket = connect(&server.ws_url(
        "/api/services/vehicles/geojson?where=TRACKID%3D41&properties=speed,observed,active",
    ))
    .await;
    // The snapshot: the latest state as one FeatureCollection, in WGS84, the track id as id.
    let snapshot = next_json(&mut socket).await;
    assert_eq!(
        snapshot,
        json!({"type": "FeatureCollection", "features": [{
            "type": "Feature", "id": 41,
            "geometry": {"type": "Point", "coordinates": [-117.1, 34.05]},
            "properties": {"OBJECTID": snapshot["features"][0]["properties"]["OBJECTID"],
                           "TRACKID": 41, "speed": 10.5, "active": true,
                           "observed": "1970-01-01T00:00:01Z"}
        }]})
    );
    // Live batches, filtered.
    publish(
        &server,
        json!([
            observation(41, 2_000, -117.11),
            observation(42, 2_000, -117.21)
        ]),
    )
    .await;
    let batch = next_json(&mut socket).await;
    assert_eq!(ids(&batch), [41]);
    assert_eq!(
        batch["features"][0]["geometry"]["coordinates"],
        json!([-117.11, 34.05])
    );
    // A filter message gets the documented reply, and the stream follows it.
    send(&mut socket, r#"{"filter": {"where": "TRACKID = 42"}}"#).await;
    let mut seen = Vec::new();
    let reply = next_reply(&mut socket, &mut seen).await;
    assert_eq!(reply["filter"]["where"], "TRACKID = 42", "{reply}");
    assert!(reply["error"].is_null(), "{reply}");
    send(&mut socket, r#"{"filter": {"where": "TRACKID = "}}"#).await;
    let refused = next_reply(&mut socket, &mut seen).await;
    assert_eq!(refused["filter"]["where"], "TRACKID = 42", "{refused}");
    assert!(
        refused["error"]
            .as_array()
            .is_some_and(|details| !details.is_empty()),
        "{refused}"
    );
    publish(
        &server,
        json!([
            observation(41, 3_000, -117.12),
            observation(42, 3_000, -117.22)
        ]),
    )
    .await;
    let delete = loop {
        let message = next_json(&mut socket).await;
        if message["type"] == "delete" {
            break message;
        }
        seen.extend(ids(&message));
    };
    assert!(seen.iter().all(|id| *id == 42), "{seen:?}");
    assert!(seen.contains(&42), "the new filter's batch: {seen:?}");
    // An expired track leaves, said by a message of its own.
    assert_eq!(delete, json!({"type": "delete", "trackIds": [42]}));
}

#[actix_web::test]
async fn a_geojson_event_stream_takes_bbox_and_properties_and_filter_posts() {
    let server = TestServer::start(ingest_config());
    publish(
        &server,
        json!([
            observation(41, 1_000, -117.1),
            observation(42, 1_000, -117.3)
        ]),
    )
    .await;
    let (status, mut events) = EventStream::open(
        &server,
        "/api/services/vehicles/geojson?bbox=-117.15,34.0,-117.05,34.1&properties=name",
    )
    .await;
    assert_eq!(status, 200);
    let hello = events.next("session").await;
    let filter_url = hello["filterUrl"].as_str().unwrap().to_owned();
    assert!(
        filter_url.starts_with("/api/services/vehicles/geojson/"),
        "{hello}"
    );
    let snapshot = events.next("features").await;
    assert_eq!(ids(&snapshot), [41]);
    assert_eq!(snapshot["features"][0]["properties"]["name"], "bus 41");
    assert!(
        snapshot["features"][0]["properties"].get("speed").is_none(),
        "{snapshot}"
    );
    let (status, reply) = post_json(
        server.addr,
        &filter_url,
        &[],
        r#"{"filter": {"geometry": "-117.4,34.0,-117.25,34.1"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["error"].is_null(), "{reply}");
    publish(
        &server,
        json!([
            observation(41, 2_000, -117.1),
            observation(42, 2_000, -117.31)
        ]),
    )
    .await;
    let mut batch = events.next("features").await;
    // The new filter's snapshot, then the live batch: every feature is track 42.
    while ids(&batch).is_empty() {
        batch = events.next("features").await;
    }
    assert!(ids(&batch).iter().all(|id| *id == 42), "{batch}");
}

#[actix_web::test]
async fn geojson_parameters_are_checked_before_anything_streams() {
    let server = TestServer::start(ingest_config());
    for (query, blamed) in [
        ("bbox=1,2,3", "bbox: "),
        ("bbox=10,0,5,1", "bbox: "),
        ("properties=nope", "properties: "),
        ("outSR=3857", "outSR: "),
        ("where=speed%20%3E", "where: "),
    ] {
        let (status, body) = get_json(
            server.addr,
            &format!("/api/services/vehicles/geojson?{query}"),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        let details = body["error"]["details"].as_array().expect("details");
        assert!(
            details
                .iter()
                .any(|detail| detail.as_str().unwrap().starts_with(blamed)),
            "{query}: {body}"
        );
        match try_connect(&server.ws_url(&format!("/api/services/vehicles/geojson?{query}"))).await
        {
            Err((status, _)) => assert_eq!(status, 400, "{query}"),
            Ok(_) => panic!("{query}: the upgrade was accepted"),
        }
    }
    let (status, _) = get_json(server.addr, "/api/services/nothing/geojson").await;
    assert_eq!(status, 404);
    // Nothing was left behind.
    sessions(&server, 0).await;
}

#[actix_web::test]
async fn the_maplibre_example_is_served() {
    let server = TestServer::start(ingest_config());
    let (status, headers, page) =
        crate::support::http(server.addr, "GET", "/examples/maplibre.html", &[]).await;
    assert_eq!(status, 200);
    assert!(
        crate::support::header(&headers, "content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(page.contains("maplibre.js") && page.contains("startMapLibreExample"));
    let (status, _, script) =
        crate::support::http(server.addr, "GET", "/examples/maplibre.js", &[]).await;
    assert_eq!(status, 200);
    assert!(
        script.contains("/geojson?"),
        "the example reads the GeoJSON stream"
    );
}
