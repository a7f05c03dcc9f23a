//! The latest state per track and snapshots: a session gets every live track its filter
//! selects as soon as it subscribes (custom mode: after the echo; server mode and SSE: at
//! once) and again right after each accepted filter change, without waiting for the tracks to
//! report again. The simulator here ticks once at start and then not for 100 s, so everything
//! a session receives within the test comes from the snapshot.

use std::collections::BTreeSet;

use featurestream::config::Config;
use serde_json::json;

use crate::support::{TestServer, connect, get_json, next_json, next_reply, send};

const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";

fn sparse_server() -> TestServer {
    TestServer::start(Config::for_tests(8, 0.01))
}

/// Waits until the broker has recorded the first tick (bounded).
async fn first_tick(server: &TestServer) {
    for _ in 0..100 {
        let (_, stats) = get_json(server.addr, "/api/stats").await;
        if stats["services"]["vehicles"]["tracksLive"] == 8 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the first tick was not recorded");
}

#[actix_web::test]
async fn a_server_mode_session_gets_every_track_at_once_and_again_after_a_filter_change() {
    let server = sparse_server();
    first_tick(&server).await;
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut tracks = BTreeSet::new();
    for _ in 0..8 {
        let feature = next_json(&mut socket).await;
        tracks.insert(feature["attributes"]["TRACKID"].as_i64().expect("TRACKID"));
    }
    assert_eq!(tracks, (1..=8).collect(), "one observation of every track");
    send(&mut socket, r#"{"filter":{"where":"TRACKID IN (2, 5)"}}"#).await;
    let (reply, skipped) = next_reply(&mut socket).await;
    assert_eq!(skipped, 0);
    assert_eq!(reply["error"], serde_json::Value::Null);
    let mut selected = BTreeSet::new();
    for _ in 0..2 {
        let feature = next_json(&mut socket).await;
        selected.insert(feature["attributes"]["TRACKID"].as_i64().expect("TRACKID"));
    }
    assert_eq!(
        selected,
        BTreeSet::from([2, 5]),
        "the new filter's snapshot"
    );
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    assert_eq!(stats["services"]["vehicles"]["snapshotFrames"], 2);
}

#[actix_web::test]
async fn a_custom_mode_session_gets_the_snapshot_right_after_the_echo() {
    let server = sparse_server();
    first_tick(&server).await;
    let mut socket = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
    send(
        &mut socket,
        &json!({"format": "json", "spatialReference": {"wkid": 4326}, "filter": {"where": "TRACKID <= 3"}})
            .to_string(),
    )
    .await;
    assert_eq!(next_json(&mut socket).await["format"], "json");
    let frame = next_json(&mut socket).await;
    assert_eq!(frame["type"], "featureResult");
    let tracks: BTreeSet<i64> = frame["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|feature| feature["attributes"]["TRACKID"].as_i64().expect("TRACKID"))
        .collect();
    assert_eq!(tracks, BTreeSet::from([1, 2, 3]));
}

#[actix_web::test]
async fn every_session_joining_a_group_gets_its_snapshot() {
    let server = sparse_server();
    first_tick(&server).await;
    let mut first = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut second = connect(&server.ws_url(SUBSCRIBE)).await;
    for socket in [&mut first, &mut second] {
        let mut tracks = BTreeSet::new();
        for _ in 0..8 {
            tracks.insert(next_json(socket).await["attributes"]["TRACKID"].as_i64());
        }
        assert_eq!(tracks.len(), 8);
    }
}
