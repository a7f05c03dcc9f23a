//! Ingest over real sockets against the real server (docs/protocol.md §9): every form over HTTP
//! and the broadcast WebSocket, every bad input with its reason, auth and rate refusals,
//! stale observations, snapshot then live without gap or duplicate, per-track conflation for a
//! paused session, expiry with the delete message, and the state file across a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use featurestream::config::Config;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    TestServer, WAIT, connect, connect_with, get_json, http, next_json, post_json, raw_upgrade,
    send, try_connect,
};

const FEATURES: &str = "/api/services/vehicles/features";
const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";
const BROADCAST: &str = "/arcgis/ws/services/vehicles/StreamServer/broadcast";

/// A server without a simulator: everything streamed comes from ingest.
fn ingest_config() -> Config {
    let mut config = Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    config
}

/// An Esri JSON observation of the default schema.
fn observation(track: i64, observed: i64, x: f64) -> Value {
    json!({
        "attributes": {
            "OBJECTID": 999, "TRACKID": track, "name": format!("bus {track}"), "route": "R1",
            "status": "moving", "speed": 10.5, "heading": 90, "active": true, "observed": observed
        },
        "geometry": { "x": x, "y": 34.05 }
    })
}

async fn publish(server: &TestServer, body: &Value) -> (u16, Value) {
    post_json(server.addr, FEATURES, &[], &body.to_string()).await
}

async fn stats(server: &TestServer) -> Value {
    get_json(server.addr, "/api/stats").await.1["services"]["vehicles"].clone()
}

/// Waits (bounded) until the broker has a subscriber: a session's Subscribe reached it.
async fn sessions(server: &TestServer, count: u64) {
    for _ in 0..200 {
        if stats(server).await["sessions"] == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the broker never had {count} sessions");
}

#[actix_web::test]
async fn every_form_over_http_is_accepted_numbered_by_the_server_and_streamed() {
    let server = TestServer::start(ingest_config());
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    sessions(&server, 1).await;
    // A featureSet in Web Mercator (projected to the service's 4326), a GeoJSON collection, a
    // lone Esri feature, an array.
    let feature_set = json!({
        "spatialReference": {"wkid": 102100},
        "features": [{"attributes": {"TRACKID": 1, "name": "a", "route": "r", "speed": 1, "heading": 2, "active": 1},
                      "geometry": {"x": -13046223.0, "y": 4035449.0}}]
    });
    let geojson = json!({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"TRACKID": 2, "name": "b", "route": "r", "speed": 1, "heading": 2, "active": false, "observed": "2026-11-29T12:00:00Z"},
         "geometry": {"type": "Point", "coordinates": [-117.2, 34.1]}}]});
    let lone = observation(3, 1_000, -117.3);
    let array = json!([observation(4, 1_000, -117.4), observation(5, 1_000, -117.5)]);
    let mut tracks = BTreeMap::new();
    for body in [&feature_set, &geojson, &lone, &array] {
        let (status, answer) = publish(&server, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["rejected"], 0, "{answer}");
        let count = answer["accepted"].as_u64().unwrap();
        for _ in 0..count {
            let feature = next_json(&mut socket).await;
            let attributes = &feature["attributes"];
            tracks.insert(
                attributes["TRACKID"].as_i64().unwrap(),
                attributes["OBJECTID"].as_i64().unwrap(),
            );
            assert!(attributes["observed"].as_i64().unwrap() > 0, "{feature}");
        }
    }
    assert_eq!(tracks.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let ids: Vec<i64> = tracks.values().copied().collect();
    assert_eq!(
        ids,
        [1, 2, 3, 4, 5],
        "server-assigned, increasing, input 999 ignored"
    );
    let first = next_json_from(&feature_set_echo(&server).await);
    assert!(
        (first - (-117.2)).abs() < 0.01,
        "projected from Web Mercator: {first}"
    );
    let stats = stats(&server).await;
    assert_eq!(stats["observationsAccepted"], 5);
    assert_eq!(stats["tracksLive"], 5);
}

/// Track 1's x as the snapshot of a new session shows it.
async fn feature_set_echo(server: &TestServer) -> Value {
    let mut socket = connect(&server.ws_url(&format!("{SUBSCRIBE}&where=TRACKID%3D1"))).await;
    next_json(&mut socket).await
}

fn next_json_from(feature: &Value) -> f64 {
    feature["geometry"]["x"].as_f64().expect("x")
}

#[actix_web::test]
async fn bad_features_are_reported_by_index_and_reason_and_the_good_ones_go_through() {
    let server = TestServer::start(ingest_config());
    let good = observation(1, 1_000, -117.2);
    let with = |change: Value| {
        let mut feature = observation(2, 1_000, -117.2);
        for (key, value) in change.as_object().unwrap() {
            if key == "geometry" {
                feature["geometry"] = value.clone();
            } else {
                feature["attributes"][key] = value.clone();
            }
        }
        feature
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(json!({"colour": "red"})), "unknownField"),
        (with(json!({"speed": "fast"})), "wrongType"),
        (with(json!({"TRACKID": null})), "missingTrackId"),
        (with(json!({"name": null})), "nullNotAllowed"),
        (with(json!({"name": "x".repeat(40)})), "tooLong"),
        (with(json!({"geometry": null})), "missingGeometry"),
        (
            with(json!({"geometry": {"paths": [[[1, 2], [3, 4]]]}})),
            "wrongGeometry",
        ),
        (with(json!({"geometry": {"x": null, "y": 2}})), "malformed"),
        (
            with(json!({"geometry": {"x": 1, "y": 2, "spatialReference": {"wkid": 2193}}})),
            "spatialReference",
        ),
        (with(json!({"geometry": {"x": 500, "y": 2}})), "outOfWorld"),
        (with(json!({"TRACKID": 2147483648i64})), "outOfRange"),
    ];
    let mut features = vec![good];
    features.extend(cases.iter().map(|(feature, _)| feature.clone()));
    // 1e999 is not representable in serde_json's Value: write it into the text by hand.
    let body = serde_json::to_string(&json!({ "features": features }))
        .unwrap()
        .replace("\"x\":null", "\"x\":1e999");
    let (status, answer) = post_json(server.addr, FEATURES, &[], &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["received"], cases.len() + 1);
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["rejected"], cases.len());
    let errors = answer["errors"].as_array().unwrap();
    for (position, (_, code)) in cases.iter().enumerate() {
        let error = &errors[position];
        assert_eq!(error["index"], position + 1, "{error}");
        assert_eq!(error["code"], *code, "{error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let stats = stats(&server).await;
    assert_eq!(stats["observationsRejected"]["unknownField"], 1);
    assert_eq!(stats["observationsAccepted"], 1);
}

#[actix_web::test]
async fn whole_requests_are_refused_with_the_status_that_names_the_problem() {
    let mut config = ingest_config();
    config.ingest.max_features = 3;
    config.ingest.max_body_bytes = 4096;
    let server = TestServer::start(config);
    let error_of = |answer: &Value| answer["error"]["message"].as_str().unwrap_or("").to_owned();
    let (status, answer) = post_json(server.addr, FEATURES, &[], "{not json").await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("not JSON"), "{answer}");
    let (status, answer) = post_json(server.addr, FEATURES, &[], r#"{"a":1}"#).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("featureSet"), "{answer}");
    let four = json!([
        observation(1, 1, 1.0),
        observation(2, 1, 1.0),
        observation(3, 1, 1.0),
        observation(4, 1, 1.0)
    ]);
    let (status, answer) = publish(&server, &four).await;
    assert_eq!(status, 413);
    assert!(error_of(&answer).contains("at most 3"), "{answer}");
    let big = format!(r#"{{"features":[],"pad":"{}"}}"#, "x".repeat(5000));
    let (status, _) = post_json(server.addr, FEATURES, &[], &big).await;
    assert_eq!(status, 413);
    let (status, _) = post_json(server.addr, "/api/services/nope/features", &[], "[]").await;
    assert_eq!(status, 404);
    let (status, _, body) = http(
        server.addr,
        "POST",
        FEATURES,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "3"),
        ],
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(stats(&server).await["ingestRequestsRefused"], 3);
}

#[actix_web::test]
async fn ndjson_lines_are_published_as_they_come_and_a_bad_line_is_named() {
    let server = TestServer::start(ingest_config());
    let lines = format!(
        "{}\n\n{}\n",
        observation(1, 1_000, -117.1),
        json!([observation(2, 1_000, -117.2), {"attributes": {"TRACKID": 3}}])
    );
    let (status, _, body) = http_post(&server, "application/x-ndjson", &lines).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer["received"].as_u64(), answer["accepted"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(answer["errors"][0]["index"], 2);
    let broken = format!("{}\n{{oops\n", observation(4, 1_000, -117.4));
    let (status, _, body) = http_post(&server, "application/x-ndjson", &broken).await;
    assert_eq!(status, 400, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2:"),
        "{answer}"
    );
    assert_eq!(answer["accepted"], 1, "the line before it was published");
    assert_eq!(stats(&server).await["tracksLive"], 3);
}

async fn http_post(
    server: &TestServer,
    content_type: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "POST {FEATURES} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, Vec::new(), body.to_owned())
}

#[actix_web::test]
async fn publishing_needs_the_publish_right_and_respects_the_ingest_rate() {
    let mut config = ingest_config();
    config.auth = featurestream::auth::Auth::new(
        featurestream::auth::parse_static_tokens(
            "reader-token=vehicles,publisher-token=vehicles:publisher,other-publisher=trucks:publisher",
        )
        .unwrap(),
        None,
        None,
    )
    .unwrap();
    config.admission.ingest_rate = Some(1.0);
    config.admission.rate_limit_loopback = true;
    let server = TestServer::start(config);
    let body = json!([observation(1, 1_000, -117.1)]).to_string();
    let (status, _) = post_json(server.addr, FEATURES, &[], &body).await;
    assert_eq!(status, 401);
    for token in ["reader-token", "other-publisher", "not-a-token"] {
        let bearer = format!("Bearer {token}");
        let (status, answer) =
            post_json(server.addr, FEATURES, &[("Authorization", &bearer)], &body).await;
        assert_eq!(status, 403, "{token}: {answer}");
    }
    let headers = [("Authorization", "Bearer publisher-token")];
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(post_json(server.addr, FEATURES, &headers, &body).await.0);
    }
    assert!(outcomes.contains(&200), "{outcomes:?}");
    assert!(
        outcomes.contains(&429),
        "a burst of 2, then 1/s: {outcomes:?}"
    );
    // The broadcast socket asks the same right.
    let refused = try_connect(&server.ws_url(&format!("{BROADCAST}?token=reader-token"))).await;
    assert_eq!(refused.err().map(|(status, _)| status), Some(403));
}

#[actix_web::test]
async fn without_auth_only_a_caller_on_this_machine_may_publish() {
    let server = TestServer::start(ingest_config());
    let body = json!([observation(1, 1_000, -117.1)]).to_string();
    let (status, answer) = post_json(
        server.addr,
        FEATURES,
        &[("X-Forwarded-For", "203.0.113.9")],
        &body,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, _) = post_json(
        server.addr,
        FEATURES,
        &[
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 403, "a page of another site");
    let (status, _) = post_json(server.addr, FEATURES, &[], &body).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn an_older_observation_is_stale_not_streamed_and_not_an_error() {
    let server = TestServer::start(ingest_config());
    let (status, _) = publish(&server, &observation(7, 2_000, -117.2)).await;
    assert_eq!(status, 200);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["attributes"]["observed"], 2_000);
    let (status, answer) = publish(
        &server,
        &json!([observation(7, 1_000, -117.9), observation(8, 1_000, -117.3)]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (answer["accepted"].as_u64(), answer["stale"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(answer["staleIndexes"], json!([0]));
    assert_eq!(answer["rejected"], 0);
    let live = next_json(&mut socket).await;
    assert_eq!(
        live["attributes"]["TRACKID"], 8,
        "the stale one is not streamed: {live}"
    );
    assert_eq!(stats(&server).await["staleObservations"], 1);
}

#[actix_web::test]
async fn the_broadcast_socket_reports_rejections_by_index_and_acknowledges_when_asked() {
    let server = TestServer::start(ingest_config());
    let mut viewer = connect(&server.ws_url(SUBSCRIBE)).await;
    sessions(&server, 1).await;
    let mut quiet = connect(&server.ws_url(BROADCAST)).await;
    send(
        &mut quiet,
        &json!([observation(1, 1_000, -117.1)]).to_string(),
    )
    .await;
    assert_eq!(next_json(&mut viewer).await["attributes"]["TRACKID"], 1);
    send(
        &mut quiet,
        &json!([observation(2, 1_000, -117.2), {"attributes": {"TRACKID": 3, "x": 1}}]).to_string(),
    )
    .await;
    let reply = next_json(&mut quiet).await;
    assert_eq!(reply["type"], "rejected", "{reply}");
    assert_eq!(
        reply["sequence"], 2,
        "nothing came back for the fully accepted first message"
    );
    assert_eq!(reply["errors"][0]["index"], 1);
    assert_eq!(reply["errors"][0]["code"], "unknownField");
    assert_eq!(next_json(&mut viewer).await["attributes"]["TRACKID"], 2);
    send(&mut quiet, "not json").await;
    let reply = next_json(&mut quiet).await;
    assert_eq!(
        (reply["type"].as_str(), reply["sequence"].as_u64()),
        (Some("error"), Some(3))
    );
    let mut acked = connect(&server.ws_url(&format!("{BROADCAST}?ack=true"))).await;
    send(&mut acked, &observation(4, 1_000, -117.4).to_string()).await;
    let reply = next_json(&mut acked).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(
        (reply["accepted"].as_u64(), reply["sequence"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(next_json(&mut viewer).await["attributes"]["TRACKID"], 4);
}

/// Custom mode: snapshot first, then live, every track once, nothing twice; the same after a
/// filter change (SSE: `sse_sessions_get_the_snapshot_then_live_and_delete_events`).
#[actix_web::test]
async fn snapshot_then_live_has_no_gap_and_no_duplicate_in_custom_mode() {
    let server = TestServer::start(ingest_config());
    let first: Vec<Value> = (1..=20)
        .map(|track| observation(track, 1_000, -117.0 - track as f64 / 100.0))
        .collect();
    assert_eq!(publish(&server, &json!(first)).await.0, 200);
    let mut socket = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
    send(
        &mut socket,
        r#"{"format":"json","spatialReference":{"wkid":4326}}"#,
    )
    .await;
    assert_eq!(next_json(&mut socket).await["format"], "json");
    let snapshot = next_json(&mut socket).await;
    let tracks = |frame: &Value| -> Vec<i64> {
        frame["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["attributes"]["TRACKID"].as_i64().unwrap())
            .collect()
    };
    let mut seen: Vec<i64> = tracks(&snapshot);
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    let second: Vec<Value> = (15..=25)
        .map(|track| observation(track, 2_000, -117.5))
        .collect();
    assert_eq!(publish(&server, &json!(second)).await.0, 200);
    let live = next_json(&mut socket).await;
    let mut live_tracks = tracks(&live);
    live_tracks.sort();
    assert_eq!(
        live_tracks,
        (15..=25).collect::<Vec<_>>(),
        "exactly the new observations"
    );
    let ids: BTreeSet<i64> = live["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["attributes"]["OBJECTID"].as_i64().unwrap())
        .collect();
    let snapshot_ids: BTreeSet<i64> = snapshot["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["attributes"]["OBJECTID"].as_i64().unwrap())
        .collect();
    assert!(
        ids.is_disjoint(&snapshot_ids),
        "new observations, new object ids"
    );
    assert!(
        snapshot_ids
            .iter()
            .all(|id| *id >= featurestream::latest::RESEND_IDS),
        "a snapshot resends under ids of their own range"
    );
    // After a filter change: the reply, the new filter's snapshot (latest of each), then live.
    send(&mut socket, r#"{"filter":{"where":"TRACKID <= 16"}}"#).await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["error"], Value::Null, "{reply}");
    let snapshot = next_json(&mut socket).await;
    let mut seen = tracks(&snapshot);
    seen.sort();
    assert_eq!(seen, (1..=16).collect::<Vec<_>>());
    let fifteen = snapshot["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["attributes"]["TRACKID"] == 15)
        .unwrap();
    assert_eq!(
        fifteen["attributes"]["observed"], 2_000,
        "the latest of track 15"
    );
    let third: Vec<Value> = [3, 30]
        .iter()
        .map(|track| observation(*track, 3_000, -117.6))
        .collect();
    assert_eq!(publish(&server, &json!(third)).await.0, 200);
    assert_eq!(tracks(&next_json(&mut socket).await), [3], "live, filtered");
}

/// Server mode: the snapshot (one frame per track), then live frames of new observations only.
#[actix_web::test]
async fn snapshot_then_live_has_no_gap_and_no_duplicate_in_server_mode() {
    let server = TestServer::start(ingest_config());
    let first: Vec<Value> = (1..=12)
        .map(|track| observation(track, 1_000, -117.1))
        .collect();
    assert_eq!(publish(&server, &json!(first)).await.0, 200);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let feature = next_json(&mut socket).await;
        assert!(
            seen.insert(feature["attributes"]["TRACKID"].as_i64().unwrap()),
            "{feature}"
        );
    }
    let second: Vec<Value> = (10..=14)
        .map(|track| observation(track, 2_000, -117.2))
        .collect();
    assert_eq!(publish(&server, &json!(second)).await.0, 200);
    let mut live = BTreeSet::new();
    for _ in 10..=14 {
        let feature = next_json(&mut socket).await;
        assert_eq!(feature["attributes"]["observed"], 2_000, "{feature}");
        live.insert(feature["attributes"]["TRACKID"].as_i64().unwrap());
    }
    assert_eq!(live, (10..=14).collect());
}

/// A session that stops reading falls behind its queue; when it reads again it gets the
/// newest observation of every track, including tracks whose last update came in a batch it
/// never received.
#[actix_web::test]
async fn a_paused_session_gets_every_tracks_newest_observation_when_it_reads_again() {
    let mut config = ingest_config();
    config.session.queue_bytes = 4096;
    config.session.slow_consumer_after = Duration::from_secs(600);
    config.ingest.coalesce = Duration::ZERO;
    let server = TestServer::start(config);
    let (status, stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    sessions(&server, 1).await;
    // Fill the socket buffers and the queue: rounds of 100 tracks until frames are dropped.
    let mut round = 0;
    while stats(&server).await["framesConflated"] == 0 {
        round += 1;
        assert!(round <= 400, "the paused session never fell behind");
        let batch: Vec<Value> = (1..=100)
            .map(|track| observation(track, round, -117.0))
            .collect();
        assert_eq!(publish(&server, &json!(batch)).await.0, 200);
    }
    // Each track's last observation in a batch of its own: only the last batch is newest.
    let last = round + 1;
    for track in 1..=100 {
        assert_eq!(
            publish(&server, &json!([observation(track, last, -117.9)]))
                .await
                .0,
            200
        );
    }
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let mut newest: BTreeMap<i64, i64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while newest
        .values()
        .filter(|observed| **observed == last)
        .count()
        < 100
    {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of 100 tracks caught up",
                    newest.values().filter(|o| **o == last).count()
                )
            })
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = message {
            let feature: Value = serde_json::from_str(&text).unwrap();
            let attributes = &feature["attributes"];
            newest.insert(
                attributes["TRACKID"].as_i64().unwrap(),
                attributes["observed"].as_i64().unwrap(),
            );
        }
    }
    let stats = stats(&server).await;
    assert!(
        stats["snapshotFrames"].as_u64().unwrap() >= 1,
        "the catch-up snapshot: {stats}"
    );
}

#[actix_web::test]
async fn an_expired_track_leaves_the_state_and_its_sessions_get_a_delete_message() {
    let mut config = ingest_config();
    config.services[0].max_feature_age = Some(Duration::from_secs(1));
    let server = TestServer::start(config);
    let mut custom = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
    send(
        &mut custom,
        r#"{"format":"json","spatialReference":{"wkid":4326},"filter":{"where":"TRACKID = 41"}}"#,
    )
    .await;
    assert_eq!(next_json(&mut custom).await["format"], "json");
    let mut server_mode = connect(&server.ws_url(SUBSCRIBE)).await;
    sessions(&server, 2).await;
    assert_eq!(
        publish(
            &server,
            &json!([
                observation(41, 1_000, -117.1),
                observation(42, 1_000, -117.2)
            ])
        )
        .await
        .0,
        200
    );
    let frame = next_json(&mut custom).await;
    assert_eq!(frame["features"].as_array().unwrap().len(), 1);
    let mut deleted = BTreeSet::new();
    while deleted.len() < 2 {
        let message = next_json(&mut server_mode).await;
        if message["type"] == "delete" {
            deleted.extend(
                message["trackIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| id.as_i64().unwrap()),
            );
        }
    }
    assert_eq!(deleted, BTreeSet::from([41, 42]));
    assert_eq!(
        next_json(&mut custom).await,
        json!({"type": "delete", "trackIds": [41]}),
        "only what its filter selected"
    );
    let stats = stats(&server).await;
    assert_eq!(stats["tracksExpired"], 2);
    assert_eq!(stats["tracksLive"], 0);
}

#[actix_web::test]
async fn the_latest_state_survives_a_restart_and_a_corrupt_file_is_set_aside() {
    let dir = std::env::temp_dir().join(format!(
        "featurestream-state-{}-{}",
        std::process::id(),
        line!()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || {
        let mut config = ingest_config();
        config.state.dir = Some(dir.clone());
        config
    };
    let server = TestServer::start(config());
    let batch: Vec<Value> = (1..=30)
        .map(|track| observation(track, 1_000, -117.0))
        .collect();
    assert_eq!(publish(&server, &json!(batch)).await.0, 200);
    server.shutdown().await;
    drop(server);
    let server = TestServer::start(config());
    assert_eq!(stats(&server).await["tracksLive"], 30);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut tracks = BTreeSet::new();
    for _ in 0..30 {
        tracks.insert(
            next_json(&mut socket).await["attributes"]["TRACKID"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(tracks, (1..=30).collect(), "every track restored");
    let (_, stored) = get_json(
        server.addr,
        "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=1%3D1&returnIdsOnly=true",
    )
    .await;
    let ids: Vec<i64> = stored["objectIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=30).collect::<Vec<_>>(),
        "restored with their object ids"
    );
    assert_eq!(
        publish(&server, &json!([observation(99, 1_000, -117.0)]))
            .await
            .0,
        200
    );
    let next = next_json(&mut socket).await["attributes"]["OBJECTID"]
        .as_i64()
        .unwrap();
    assert!(next > 30, "ids continue above the restored ones ({next})");
    drop(socket);
    server.shutdown().await;
    drop(server);
    // A checkpoint damaged in the middle (a flipped byte): the store is set aside whole,
    // never half-loaded, and numbering resumes above anything it may have handed out.
    let checkpoint = dir.join("vehicles.checkpoint");
    let mut bytes = std::fs::read(&checkpoint).expect("a shutdown leaves a checkpoint");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&checkpoint, &bytes).unwrap();
    let server = TestServer::start(config());
    assert_eq!(stats(&server).await["tracksLive"], 0, "starts empty");
    let aside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".corrupt-"))
        .collect();
    assert!(
        aside
            .iter()
            .any(|name| name.starts_with("vehicles.checkpoint.corrupt-")),
        "the damaged checkpoint is kept aside: {aside:?}"
    );
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    sessions(&server, 1).await;
    assert_eq!(
        publish(&server, &json!([observation(7, 1_000, -117.0)]))
            .await
            .0,
        200
    );
    let after = next_json(&mut socket).await["attributes"]["OBJECTID"]
        .as_i64()
        .unwrap();
    assert!(
        after > next,
        "no id reissued after the store was set aside ({after} after {next})"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_web::test]
async fn sse_sessions_get_the_snapshot_then_live_and_delete_events() {
    let mut config = ingest_config();
    config.services[0].max_feature_age = Some(Duration::from_secs(1));
    let server = TestServer::start(config);
    assert_eq!(
        publish(&server, &json!([observation(5, 1_000, -117.1)]))
            .await
            .0,
        200
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/services/vehicles/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !text.contains("event: delete") {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a delete event within the wait")
            .unwrap();
        assert!(read > 0, "stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    let features = text.find("event: features").expect("the snapshot");
    let delete = text.find("event: delete").unwrap();
    assert!(features < delete, "{text}");
    assert!(
        text.contains(r#"{"type":"delete","trackIds":[5]}"#),
        "{text}"
    );
}

/// The header check the broadcast endpoint needs before anything else: a plain GET is refused.
#[actix_web::test]
async fn the_broadcast_endpoint_takes_websockets_only() {
    let server = TestServer::start(ingest_config());
    let (status, _, _) = http(server.addr, "GET", BROADCAST, &[]).await;
    assert_eq!(status, 400);
    let (_, headers) = connect_with(&server.ws_url(BROADCAST), &[]).await;
    assert!(!headers.is_empty());
}
