//! Several nodes on one NATS backbone (docs/cluster.md): real `nats-server` processes with
//! JetStream on 127.0.0.1, real nodes on ephemeral ports, real sockets. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use featurestream::config::{ClusterSettings, Config};
use serde_json::{Value, json};

use crate::support::{
    TestServer, WAIT, connect, get_json, next_json, post_json, post_json_within, send,
};

const FEATURES: &str = "/api/services/vehicles/features";
const CUSTOM: &str = "/arcgis/ws/services/vehicles/custom";

/// A `nats-server` with JetStream, its store in a directory of its own; killed on drop.
pub struct Nats {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with(None)
    }

    /// A server whose configuration file includes `include` (a file of `deploy/`).
    pub fn start_with(include: Option<&str>) -> Nats {
        let dir = std::env::temp_dir().join(format!(
            "featurestream-nats-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("a store directory");
        if let Some(include) = include {
            let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(include);
            std::fs::copy(&source, dir.join("included.conf")).expect("the included file");
            std::fs::write(dir.join("nats.conf"), "include included.conf\n").unwrap();
        }
        let child = Nats::spawn(&dir, "-1");
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let mut nats = Nats {
            child,
            dir,
            port: 0,
        };
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Ok(value) = serde_json::from_str::<Value>(&text)
                && let Some(url) = value["nats"][0].as_str()
            {
                nats.port = url.rsplit(':').next().unwrap().parse().unwrap();
                return nats;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        nats.kill();
        panic!("nats-server did not write its port (is it installed? scripts/test installs it)");
    }

    fn spawn(dir: &std::path::Path, port: &str) -> Child {
        let mut command = Command::new("nats-server");
        let config = dir.join("nats.conf");
        if config.exists() {
            command
                .arg("-c")
                .arg(&config)
                .env("FEATURESTREAM_NATS_NODE_PASSWORD", "node-secret")
                .env("FEATURESTREAM_NATS_PUBLISHER_PASSWORD", "publisher-secret");
        }
        command
            .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
            .arg(dir)
            .arg("--ports_file_dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (scripts/test installs Debian's nats-server)")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its file store stays).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        for _ in 0..100 {
            self.child = Nats::spawn(&self.dir, &self.port.to_string());
            std::thread::sleep(Duration::from_millis(200));
            if self.child.try_wait().expect("wait").is_none() {
                return;
            }
            // The port may not be free yet: it exited; try again.
        }
        panic!("nats-server did not start again on port {}", self.port);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node of the cluster on `nats`, without a simulator unless `simulated`.
pub fn node_config(nats: &Nats, name: &str, simulated: bool) -> Config {
    let mut config = Config::for_tests(20, 20.0);
    if !simulated {
        config.services[0].simulator = None;
    }
    config.cluster = Some(ClusterSettings {
        nats_url: nats.url(),
        replicas: 1,
        node_name: name.to_owned(),
        checkpoint_every: Duration::from_secs(30),
    });
    config
}

/// Waits (bounded) until `/readyz` says 200.
pub async fn ready(node: &TestServer) {
    for _ in 0..400 {
        if get_json(node.addr, "/readyz").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node {} never became ready", node.addr);
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

async fn publish(node: &TestServer, body: &Value) -> Value {
    let (status, report) = post_json(node.addr, FEATURES, &[], &body.to_string()).await;
    assert_eq!(status, 200, "{report}");
    report
}

async fn stats(node: &TestServer) -> Value {
    get_json(node.addr, "/api/stats").await.1
}

/// Waits (bounded) until the node's broker has `count` sessions.
async fn sessions(node: &TestServer, count: u64) {
    for _ in 0..400 {
        if stats(node).await["services"]["vehicles"]["sessions"] == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node {} never had {count} sessions", node.addr);
}

/// Two ready nodes on `nats` (each config adjusted by `adjust`), and a custom-mode session on
/// each with `setup`, subscribed.
async fn two_watched_nodes(
    nats: &Nats,
    adjust: impl Fn(&mut Config),
    setup: &str,
) -> (
    TestServer,
    TestServer,
    crate::support::Socket,
    crate::support::Socket,
) {
    let config = |name| {
        let mut config = node_config(nats, name, false);
        adjust(&mut config);
        config
    };
    let a = TestServer::start(config("a"));
    let b = TestServer::start(config("b"));
    ready(&a).await;
    ready(&b).await;
    let on_a = custom_session(&a, setup).await;
    let on_b = custom_session(&b, setup).await;
    sessions(&a, 1).await;
    sessions(&b, 1).await;
    (a, b, on_a, on_b)
}

const WGS84: &str = r#"{"format":"json","spatialReference":{"wkid":4326}}"#;

/// A custom-mode session with `setup`, past its `format` echo.
async fn custom_session(node: &TestServer, setup: &str) -> crate::support::Socket {
    let mut socket = connect(&node.ws_url(CUSTOM)).await;
    send(&mut socket, setup).await;
    assert_eq!(next_json(&mut socket).await["format"], "json");
    socket
}

/// The next `count` features a custom-mode session receives, whatever frames carry them,
/// ordered by track id.
async fn features_of(socket: &mut crate::support::Socket, count: usize) -> Vec<Value> {
    let mut features = Vec::new();
    while features.len() < count {
        let frame = next_json(socket).await;
        features.extend(
            frame["features"]
                .as_array()
                .expect("a feature frame")
                .iter()
                .cloned(),
        );
    }
    features.sort_by_key(|f| f["attributes"]["TRACKID"].as_i64());
    features
}

fn tracks(frame: &Value) -> Vec<i64> {
    let mut tracks: Vec<i64> = frame["features"]
        .as_array()
        .unwrap_or_else(|| panic!("a feature frame: {frame}"))
        .iter()
        .map(|f| f["attributes"]["TRACKID"].as_i64().unwrap())
        .collect();
    tracks.sort();
    tracks
}

/// Test 1: what node A accepts reaches a session on node B, filtered, in B's session's view,
/// with the same bytes an identical session on A gets.
#[actix_web::test]
async fn an_observation_accepted_on_one_node_reaches_sessions_on_the_other_in_their_view() {
    let nats = Nats::start();
    let setup = r#"{"format":"json","spatialReference":{"wkid":102100},"filter":{"where":"TRACKID < 3","outFields":"TRACKID,speed"}}"#;
    let (a, b, mut on_a, mut on_b) = two_watched_nodes(&nats, |_| {}, setup).await;
    let report = publish(
        &a,
        &json!([
            observation(1, 1_000, -117.1),
            observation(2, 1_000, -117.2),
            observation(5, 1_000, -117.5)
        ]),
    )
    .await;
    assert_eq!(report["accepted"], 3, "{report}");
    // Each node frames what it has read so far: the features, not the frames, are the same.
    let from_a = features_of(&mut on_a, 2).await;
    let from_b = features_of(&mut on_b, 2).await;
    let ids: Vec<i64> = from_b
        .iter()
        .map(|f| f["attributes"]["TRACKID"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2], "filtered on B");
    assert_eq!(
        from_a, from_b,
        "the same features, byte for byte, on both nodes"
    );
    let feature = &from_b[0];
    let x = feature["geometry"]["x"].as_f64().unwrap();
    assert!(x < -13_000_000.0, "Web Mercator metres on B: {feature}");
    let fields: BTreeSet<&String> = feature["attributes"].as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        ["OBJECTID", "TRACKID", "speed"]
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect(),
        "B's outFields"
    );
    // Posted to B, read on A: both directions.
    publish(&b, &json!([observation(1, 2_000, -117.3)])).await;
    assert_eq!(tracks(&next_json(&mut on_a).await), [1]);
    assert_eq!(tracks(&next_json(&mut on_b).await), [1]);
}

/// Tests 2 and 3: a session that connects late to B gets every track's latest value before
/// live frames; a node started after the data is not ready (503) until it has read the whole
/// state, and then serves complete snapshots and the feature layer.
#[actix_web::test]
async fn a_node_that_starts_late_reads_the_whole_state_before_it_is_ready() {
    let mut nats = Nats::start();
    // Before NATS answers, a node is not ready, and says why.
    nats.kill();
    let early = TestServer::start(node_config(&nats, "early", false));
    let (status, body) = get_json(early.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["nats"], "disconnected", "{body}");
    nats.restart();
    ready(&early).await;
    let a = TestServer::start(node_config(&nats, "a", false));
    ready(&a).await;
    let tracks_total = 3_000;
    let all: Vec<Value> = (1..=tracks_total)
        .map(|track| observation(track, 1_000 + track, -117.0 - track as f64 / 10_000.0))
        .collect();
    let report = publish(&a, &json!(all)).await;
    assert_eq!(report["accepted"], tracks_total, "{report}");
    publish(&a, &json!([observation(7, 5_000, -118.0)])).await;
    let b = TestServer::start(node_config(&nats, "b", false));
    ready(&b).await;
    let mut late =
        custom_session(&b, r#"{"format":"json","spatialReference":{"wkid":4326}}"#).await;
    // The snapshot comes in pieces (512 slots each).
    let mut snapshot = Vec::new();
    while snapshot.len() < tracks_total as usize {
        let piece = next_json(&mut late).await;
        snapshot.extend(
            piece["features"]
                .as_array()
                .expect("a featureResult")
                .clone(),
        );
    }
    let mut seen: Vec<i64> = snapshot
        .iter()
        .map(|f| f["attributes"]["TRACKID"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=tracks_total).collect::<Vec<_>>(),
        "every track, once"
    );
    let seven = snapshot
        .iter()
        .find(|f| f["attributes"]["TRACKID"] == 7)
        .unwrap();
    assert_eq!(
        seven["attributes"]["observed"], 5_000,
        "the latest of track 7"
    );
    let (_, count) = get_json(
        b.addr,
        "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=1%3D1&returnCountOnly=true&f=json",
    )
    .await;
    assert_eq!(
        count["count"], tracks_total,
        "the feature layer on B: {count}"
    );
    sessions(&b, 1).await;
    publish(&a, &json!([observation(9_000, 6_000, -118.0)])).await;
    assert_eq!(tracks(&next_json(&mut late).await), [9_000], "then live");
    drop(early);
}

/// Test 4: observations of one track sent to both nodes out of order and twice never move the
/// track backwards on either node, and no session gets one twice.
#[actix_web::test]
async fn out_of_order_and_duplicated_observations_across_nodes_never_go_backwards() {
    let nats = Nats::start();
    let (a, b, mut on_a, mut on_b) = two_watched_nodes(&nats, |_| {}, WGS84).await;
    // Concurrently: every time of 1..=40 for tracks 1..=3, each posted to both nodes, in a
    // shuffled order.
    let mut sends = Vec::new();
    for time in 1..=40i64 {
        for track in 1..=3 {
            sends.push((track, time * 1_000));
        }
    }
    use rand::seq::SliceRandom;
    sends.shuffle(&mut rand::rng());
    let (a_addr, b_addr) = (a.addr, b.addr);
    let posts = sends.iter().map(|&(track, time)| async move {
        let body = json!([observation(track, time, -117.0 - time as f64 / 1e6)]).to_string();
        let (first, second) = tokio::join!(
            post_json(a_addr, FEATURES, &[], &body),
            post_json(b_addr, FEATURES, &[], &body)
        );
        (first, second)
    });
    let mut accepted = 0;
    use futures_util::StreamExt;
    let mut posts = futures_util::stream::iter(posts).buffer_unordered(8);
    while let Some(((s1, r1), (s2, r2))) = posts.next().await {
        assert_eq!((s1, s2), (200, 200), "{r1} {r2}");
        accepted += r1["accepted"].as_i64().unwrap() + r2["accepted"].as_i64().unwrap();
    }
    assert!(accepted >= 3, "at least each track's first observation");
    // The newest of every track, last, on both nodes.
    publish(&a, &json!([observation(99, 100_000, -117.0)])).await;
    for socket in [&mut on_a, &mut on_b] {
        let mut latest: BTreeMap<i64, i64> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        loop {
            let frame = next_json(socket).await;
            let mut done = false;
            for feature in frame["features"].as_array().unwrap() {
                let track = feature["attributes"]["TRACKID"].as_i64().unwrap();
                let time = feature["attributes"]["observed"].as_i64().unwrap();
                done |= track == 99;
                assert!(
                    seen.insert((track, time)),
                    "({track}, {time}) delivered twice"
                );
                if let Some(previous) = latest.insert(track, time) {
                    assert!(
                        time > previous,
                        "track {track} went back from {previous} to {time}"
                    );
                }
            }
            if done {
                break;
            }
        }
        for track in 1..=3 {
            assert_eq!(
                latest.get(&track),
                Some(&40_000),
                "track {track} ends at its newest"
            );
        }
    }
    for node in [&a, &b] {
        let (_, page) = get_json(
            node.addr,
            "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=TRACKID%3C4&outFields=TRACKID,observed&f=json",
        )
        .await;
        for feature in page["features"].as_array().unwrap() {
            assert_eq!(feature["attributes"]["observed"], 40_000, "{feature}");
        }
    }
}

/// Test 6: a track expires on every node, with the delete message on each.
#[actix_web::test]
async fn tracks_expire_on_every_node_with_the_delete_message() {
    let nats = Nats::start();
    let max_age =
        |config: &mut Config| config.services[0].max_feature_age = Some(Duration::from_secs(1));
    let (a, b, mut on_a, mut on_b) = two_watched_nodes(&nats, max_age, WGS84).await;
    publish(&a, &json!([observation(41, 1_000, -117.1)])).await;
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(tracks(&next_json(socket).await), [41]);
        assert_eq!(
            next_json(socket).await,
            json!({"type": "delete", "trackIds": [41]})
        );
    }
    for node in [&a, &b] {
        let services = &stats(node).await["services"]["vehicles"];
        assert_eq!(services["tracksLive"], 0);
        assert_eq!(services["tracksExpired"], 1);
    }
    // Gone from the backbone too: a node started now does not bring it back.
    let mut late = node_config(&nats, "c", false);
    max_age(&mut late);
    let c = TestServer::start(late);
    ready(&c).await;
    assert_eq!(stats(&c).await["services"]["vehicles"]["tracksLive"], 0);
}

/// An operator's delete taken by one node goes through the log: every node removes the track
/// at the same place in the log's order and tells its viewers; a node started later does not
/// bring it back; a second delete finds nothing.
#[actix_web::test]
async fn an_operators_delete_on_one_node_removes_the_track_on_every_node() {
    let nats = Nats::start();
    let (a, b, mut on_a, mut on_b) = two_watched_nodes(&nats, |_| {}, WGS84).await;
    publish(
        &a,
        &json!([
            observation(41, 1_000, -117.1),
            observation(42, 1_000, -117.2)
        ]),
    )
    .await;
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(tracks(&next_json(socket).await), [41, 42]);
    }
    let path = "/api/services/vehicles/tracks/41";
    let (status, _, body) = crate::support::http(b.addr, "DELETE", path, &[]).await;
    assert_eq!(status, 200, "{body}");
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(
            next_json(socket).await,
            json!({"type": "delete", "trackIds": [41]})
        );
    }
    for node in [&a, &b] {
        assert_eq!(stats(node).await["services"]["vehicles"]["tracksLive"], 1);
    }
    let (status, _, body) = crate::support::http(a.addr, "DELETE", path, &[]).await;
    assert_eq!(status, 404, "gone on every node: {body}");
    // Observations after the delete bring the track back, on every node alike.
    publish(&a, &json!([observation(41, 2_000, -117.3)])).await;
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(tracks(&next_json(socket).await), [41]);
    }
    let (status, _, body) = crate::support::http(a.addr, "DELETE", path, &[]).await;
    assert_eq!(status, 200, "{body}");
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(
            next_json(socket).await,
            json!({"type": "delete", "trackIds": [41]})
        );
    }
    let c = TestServer::start(node_config(&nats, "c", false));
    ready(&c).await;
    let mut on_c = custom_session(&c, WGS84).await;
    assert_eq!(
        tracks(&next_json(&mut on_c).await),
        [42],
        "a node started later reads the delete from the log"
    );
}

/// Test 7: NATS restarts (file store): both nodes say they are not ready while it is away,
/// keep their sessions, then resume and resynchronise without a restart of their own.
#[actix_web::test]
async fn both_nodes_resume_after_nats_restarts() {
    let mut nats = Nats::start();
    let a = TestServer::start(node_config(&nats, "a", false));
    let b = TestServer::start(node_config(&nats, "b", false));
    ready(&a).await;
    ready(&b).await;
    publish(&a, &json!([observation(1, 1_000, -117.1)])).await;
    let mut on_b =
        custom_session(&b, r#"{"format":"json","spatialReference":{"wkid":4326}}"#).await;
    assert_eq!(tracks(&next_json(&mut on_b).await), [1], "the snapshot");
    nats.kill();
    for node in [&a, &b] {
        let mut down = false;
        for _ in 0..400 {
            if get_json(node.addr, "/readyz").await.0 == 503 {
                down = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(down, "node {} still says ready without NATS", node.addr);
    }
    let (status, body) = post_json(
        a.addr,
        FEATURES,
        &[],
        &json!([observation(2, 2_000, -117.2)]).to_string(),
    )
    .await;
    assert_eq!(status, 503, "nothing can be stored: {body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("NATS"),
        "{body}"
    );
    // The node still serves what it holds.
    let (_, page) = get_json(b.addr, "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=1%3D1&returnCountOnly=true&f=json").await;
    assert_eq!(page["count"], 1);
    nats.restart();
    ready(&a).await;
    ready(&b).await;
    publish(&a, &json!([observation(3, 3_000, -117.3)])).await;
    assert_eq!(
        tracks(&next_json(&mut on_b).await),
        [3],
        "the same session, live again"
    );
    let late = custom_session(&b, r#"{"format":"json","spatialReference":{"wkid":4326}}"#).await;
    let mut late = late;
    assert_eq!(
        tracks(&next_json(&mut late).await),
        [1, 3],
        "the state outlived NATS's restart"
    );
    let cluster = &stats(&b).await["cluster"];
    assert!(cluster["disconnects"].as_u64().unwrap() >= 1, "{cluster}");
    assert!(cluster["resyncs"].as_u64().unwrap() >= 2, "{cluster}");
    // The operator sees it in /metrics too.
    let (_, _, metrics) = crate::support::http(b.addr, "GET", "/metrics", &[]).await;
    assert!(
        metrics.contains("featurestream_nats_connected 1"),
        "{metrics}"
    );
    assert!(metrics.contains("featurestream_ready 1"), "{metrics}");
    let disconnects = metrics
        .lines()
        .find(|line| line.starts_with("featurestream_nats_disconnects_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_ne!(disconnects, "featurestream_nats_disconnects_total 0");
}

/// Test 5: the simulator runs on one node at a time; when its node dies, another takes it
/// over within the documented bound (docs/cluster.md: 2 x LEASE_TTL).
#[actix_web::test]
async fn the_simulator_runs_on_one_node_and_moves_when_that_node_dies() {
    let nats = Nats::start();
    let a = TestServer::start(node_config(&nats, "a", true));
    let b = TestServer::start(node_config(&nats, "b", true));
    ready(&a).await;
    ready(&b).await;
    let here = |stats: &Value| stats["services"]["vehicles"]["simulatorHere"] == true;
    // Sampled while both live: never both, and one within the bound.
    let mut holders_seen = BTreeSet::new();
    for _ in 0..60 {
        let (on_a, on_b) = (here(&stats(&a).await), here(&stats(&b).await));
        assert!(!(on_a && on_b), "two simulators at once");
        if on_a {
            holders_seen.insert("a");
        }
        if on_b {
            holders_seen.insert("b");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(holders_seen.len(), 1, "one holder, kept: {holders_seen:?}");
    let (holder, survivor) = if holders_seen.contains("a") {
        (a, b)
    } else {
        (b, a)
    };
    let mut on_survivor = custom_session(
        &survivor,
        r#"{"format":"json","spatialReference":{"wkid":4326}}"#,
    )
    .await;
    next_json(&mut on_survivor).await; // the snapshot
    holder.stopper().stop_now();
    drop(holder);
    let bound = featurestream::cluster::LEASE_TTL * 2 + Duration::from_secs(2);
    let mut taken = false;
    for _ in 0..(bound.as_millis() / 50) {
        if here(&stats(&survivor).await) {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        taken,
        "the survivor did not take the simulator within {bound:?}"
    );
    // And its simulator's observations stream on.
    let frame = next_json(&mut on_survivor).await;
    assert!(!tracks(&frame).is_empty());
}

/// Test 8: a service fed from a NATS subject: one node takes each message, sessions on both
/// nodes get it, bad messages are counted and answered.
#[actix_web::test]
async fn observations_published_to_a_subject_reach_sessions_on_every_node() {
    let nats = Nats::start();
    let subject = |config: &mut Config| {
        config.services[0].ingest_subject = Some("sensors.vehicles".into());
    };
    let (a, b, mut on_a, mut on_b) = two_watched_nodes(&nats, subject, WGS84).await;
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to NATS");
    // A request gets the report (once both nodes subscribe: retried, bounded).
    let good = json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [-117.1, 34.0]},
        "properties": {"TRACKID": 8, "name": "s8", "route": "R", "status": null, "speed": 1.0,
        "heading": 2.0, "active": true, "observed": 1_000}});
    let mut report = None;
    for _ in 0..100 {
        match tokio::time::timeout(
            Duration::from_millis(500),
            client.request("sensors.vehicles", good.to_string().into()),
        )
        .await
        {
            Ok(Ok(reply)) => {
                report = Some(serde_json::from_slice::<Value>(&reply.payload).unwrap());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let report = report.expect("a node answered the request");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(tracks(&next_json(&mut on_a).await), [8]);
    assert_eq!(tracks(&next_json(&mut on_b).await), [8]);
    // Bad ones: a bad feature (named in the reply), and a message that is not features.
    let bad = json!([observation(9, 2_000, -117.0), {"attributes": {"TRACKID": 10, "speed": "fast"}, "geometry": {"x": 0, "y": 0}}]);
    let reply = client
        .request("sensors.vehicles", bad.to_string().into())
        .await
        .expect("reply");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["errors"][0]["index"], 1, "{reply}");
    client
        .publish("sensors.vehicles", "not json".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    assert_eq!(tracks(&next_json(&mut on_b).await), [9]);
    let mut refused = 0;
    let mut rejected = 0;
    for _ in 0..200 {
        refused = 0;
        rejected = 0;
        for node in [&a, &b] {
            let services = &stats(node).await["services"]["vehicles"];
            refused += services["ingestRequestsRefused"].as_u64().unwrap();
            rejected += services["observationsRejected"]["wrongType"]
                .as_u64()
                .unwrap()
                + services["observationsRejected"]["nullNotAllowed"]
                    .as_u64()
                    .unwrap();
        }
        if refused == 1 && rejected == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        (refused, rejected),
        (1, 1),
        "counted on the node that took them"
    );
    let _ = WAIT;
}

/// Test 9: a server-initiated message posted to A reaches a browser session on B, a broadcast
/// reaches both nodes' sessions, and an SSE filter update posted to A changes a session on B.
#[actix_web::test]
async fn messages_and_sse_filter_updates_reach_sessions_on_another_node() {
    let nats = Nats::start();
    let a = TestServer::start(node_config(&nats, "a", false));
    let b = TestServer::start(node_config(&nats, "b", false));
    ready(&a).await;
    ready(&b).await;
    let (mut on_b, headers) = crate::support::connect_with(&b.ws_url(CUSTOM), &[]).await;
    let browser = crate::support::header(&headers, "set-cookie")
        .expect("a session cookie")
        .split(['=', ';'])
        .nth(1)
        .expect("its id")
        .to_owned();
    send(
        &mut on_b,
        r#"{"format":"json","spatialReference":{"wkid":4326}}"#,
    )
    .await;
    assert_eq!(next_json(&mut on_b).await["format"], "json");
    let mut on_a =
        custom_session(&a, r#"{"format":"json","spatialReference":{"wkid":4326}}"#).await;
    sessions(&a, 1).await;
    sessions(&b, 1).await;
    // A knows B is alive (nodes announce themselves every second): it waits for B's answer.
    let mut peers = Value::Null;
    for _ in 0..200 {
        peers = stats(&a).await["cluster"]["peers"].clone();
        if peers == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(peers, 1, "A never heard of B");
    let (status, body) = post_json(
        a.addr,
        &format!("/api/sessions/{browser}/messages"),
        &[],
        r#"{"message":{"hello":"b"}}"#,
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"delivered": 1})));
    assert_eq!(
        next_json(&mut on_b).await,
        json!({"type": "message", "message": {"hello": "b"}})
    );
    let (status, _) = post_json(
        a.addr,
        "/api/sessions/nobody/messages",
        &[],
        r#"{"message":1}"#,
    )
    .await;
    assert_eq!(status, 404, "no node holds it");
    let (status, body) = post_json(
        a.addr,
        "/api/messages",
        &[],
        r#"{"message":"all","service":"vehicles"}"#,
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"delivered": 2})));
    for socket in [&mut on_a, &mut on_b] {
        assert_eq!(
            next_json(socket).await,
            json!({"type": "message", "message": "all"})
        );
    }
    // SSE on B, its filter changed through A.
    publish(
        &a,
        &json!([observation(1, 1_000, -117.1), observation(2, 1_000, -117.2)]),
    )
    .await;
    let (status, mut events) =
        crate::sse::EventStream::open(&b, "/api/services/vehicles/events?where=TRACKID%3D1").await;
    assert_eq!(status, 200);
    let handle = crate::sse::handle(&mut events).await;
    let snapshot = events.next("features").await;
    assert_eq!(snapshot.as_array().unwrap().len(), 1, "{snapshot}");
    let (status, reply) = post_json(
        a.addr,
        &format!("/api/services/vehicles/events/{handle}/filter"),
        &[],
        r#"{"filter":{"where":"TRACKID = 2"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["error"], Value::Null, "{reply}");
    assert_eq!(reply["filter"]["where"], "TRACKID = 2", "{reply}");
    let snapshot = events.next("features").await;
    assert_eq!(
        snapshot[0]["attributes"]["TRACKID"], 2,
        "B's session follows the new filter"
    );
    let (status, _) = post_json(
        a.addr,
        "/api/services/vehicles/events/0badc0de-0000/filter",
        &[],
        r#"{"filter":{"where":"1=1"}}"#,
    )
    .await;
    assert_eq!(status, 404, "a node that does not exist holds no session");
}

/// Free loopback ports (bound then released: a server started right after takes them).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("addr").port())
        .collect()
}

/// Three `nats-server`s in one JetStream cluster.
struct NatsCluster {
    servers: Vec<Child>,
    dir: PathBuf,
    client_ports: Vec<u16>,
}

impl NatsCluster {
    fn start() -> NatsCluster {
        let dir = std::env::temp_dir().join(format!(
            "featurestream-nats-cluster-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let ports = free_ports(6);
        let (client_ports, route_ports) = ports.split_at(3);
        let routes = route_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = (0..3)
            .map(|index| {
                let store = dir.join(format!("s{index}"));
                std::fs::create_dir_all(&store).expect("a store directory");
                Command::new("nats-server")
                    .args(["-a", "127.0.0.1", "-p", &client_ports[index].to_string()])
                    .args([
                        "-n",
                        &format!("s{index}"),
                        "--cluster_name",
                        "featurestream",
                    ])
                    .args([
                        "--cluster",
                        &format!("nats://127.0.0.1:{}", route_ports[index]),
                    ])
                    .args(["--routes", &routes, "-js", "-sd"])
                    .arg(&store)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("nats-server starts")
            })
            .collect();
        NatsCluster {
            servers,
            dir,
            client_ports: client_ports.to_vec(),
        }
    }

    fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill(&mut self, index: usize) {
        let _ = self.servers[index].kill();
        let _ = self.servers[index].wait();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.servers.len() {
            self.kill(index);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-server NATS cluster keeping three copies of the state: one server dies while
/// observations stream in; every observation a node reported accepted is in the state
/// afterwards, on both nodes and on a node started later.
#[actix_web::test]
async fn a_nats_cluster_losing_a_server_loses_nothing_accepted() {
    let mut nats = NatsCluster::start();
    let urls = nats.urls();
    let config = |name: &str| {
        let mut config = Config::for_tests(1, 1.0);
        config.services[0].simulator = None;
        config.cluster = Some(ClusterSettings {
            nats_url: urls.clone(),
            replicas: 3,
            node_name: name.to_owned(),
            checkpoint_every: Duration::from_secs(30),
        });
        config
    };
    let a = TestServer::start(config("a"));
    let b = TestServer::start(config("b"));
    // JetStream elects its leaders first: bounded, generously.
    for node in [&a, &b] {
        let mut up = false;
        for _ in 0..600 {
            if get_json(node.addr, "/readyz").await.0 == 200 {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            up,
            "node {} never became ready on the NATS cluster",
            node.addr
        );
    }
    let mut accepted: BTreeMap<i64, i64> = BTreeMap::new();
    let mut refused = 0;
    for round in 1..=40i64 {
        if round == 10 {
            nats.kill(0);
        }
        let body: Vec<Value> = (1..=20)
            .map(|track| observation(track, round * 1_000, -117.0 - round as f64 / 1_000.0))
            .collect();
        let node = if round % 2 == 0 { &a } else { &b };
        // A post in flight while the stream's leader is elected waits for the resend of its
        // message (up to the JetStream timeout, then the publisher's 15 s resend window).
        let (status, report) = post_json_within(
            node.addr,
            FEATURES,
            &[],
            &json!(body).to_string(),
            Duration::from_secs(60),
        )
        .await;
        if status != 200 {
            assert_eq!(status, 503, "{report}");
            refused += 20;
            continue;
        }
        let errors: BTreeSet<u64> = report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["index"].as_u64().unwrap())
            .collect();
        assert!(
            report["errors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|error| error["code"] == "unstored"),
            "{report}"
        );
        refused += errors.len();
        for index in 0..20u64 {
            if !errors.contains(&index) {
                accepted.insert(index as i64 + 1, round * 1_000);
            }
        }
    }
    assert!(!accepted.is_empty(), "nothing was accepted");
    let c = TestServer::start(config("c"));
    for node in [&a, &b, &c] {
        let mut matched = false;
        let mut page = Value::Null;
        for _ in 0..600 {
            if get_json(node.addr, "/readyz").await.0 == 200 {
                page = get_json(
                    node.addr,
                    "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=1%3D1&outFields=TRACKID,observed&f=json",
                )
                .await
                .1;
                let state: BTreeMap<i64, i64> = page["features"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        (
                            f["attributes"]["TRACKID"].as_i64().unwrap(),
                            f["attributes"]["observed"].as_i64().unwrap(),
                        )
                    })
                    .collect();
                if state == accepted {
                    matched = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            matched,
            "node {}: the state is not what was accepted ({refused} refused): {accepted:?} vs {page}",
            node.addr
        );
    }
}

/// Debian's nginx, configured with `deploy/nginx.conf` (only its ports changed), in front of
/// `nodes`; stopped on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(nodes: &[&TestServer]) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "featurestream-nginx-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("a prefix directory");
        let port = free_ports(1)[0];
        let documented = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .expect("deploy/nginx.conf");
        let upstream: String = nodes
            .iter()
            .map(|node| format!("    server {};\n", node.addr))
            .collect();
        let site = documented
            .replace(
                "    server 127.0.0.1:8001;\n    server 127.0.0.1:8002;\n",
                &upstream,
            )
            .replace("listen 8000;", &format!("listen 127.0.0.1:{port};"));
        assert_ne!(
            site, documented,
            "the documented upstream and port were replaced"
        );
        std::fs::write(dir.join("featurestream.conf"), site).expect("write the site");
        let prefix = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  \
                 proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n  \
                 uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n  \
                 include {prefix}/featurestream.conf;\n}}\n"
            ),
        )
        .expect("write nginx.conf");
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let binary = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or("nginx");
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts (scripts/test installs Debian's nginx)");
        let mut nginx = Nginx { child, dir, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
        nginx.stop();
        panic!("nginx did not listen: {log}");
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// SIGTERM to the master, which stops its workers (SIGKILL would leave them running);
    /// SIGKILL only if it has not exited within 5 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two nodes behind nginx with the documented configuration: WebSocket sessions spread over
/// both, each gets what is published through nginx; the metadata names nginx's address; an
/// SSE stream and its filter updates work whichever node each request lands on.
#[actix_web::test]
async fn two_nodes_behind_nginx_serve_websocket_sse_and_ingest() {
    let nats = Nats::start();
    // The nodes believe nginx's X-Forwarded-For (FEATURESTREAM_TRUSTED_PROXIES=127.0.0.1). A
    // forwarded request is never taken for a caller on this machine: publishing through the
    // proxy needs a publisher token, so this publisher (on this machine) posts to a node.
    let behind_nginx = |name| {
        let mut config = node_config(&nats, name, false);
        config.admission.trusted_proxies = vec![std::net::Ipv4Addr::LOCALHOST.into()];
        config
    };
    let a = TestServer::start(behind_nginx("a"));
    let b = TestServer::start(behind_nginx("b"));
    ready(&a).await;
    ready(&b).await;
    let nginx = Nginx::start(&[&a, &b]);
    let front = nginx.addr();
    let (status, metadata) =
        get_json(front, "/arcgis/rest/services/vehicles/StreamServer?f=json").await;
    assert_eq!(status, 200, "{metadata}");
    let socket_url = metadata["streamUrls"][0]["urls"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        socket_url.starts_with(&format!("ws://{front}/")),
        "the clients' URL is nginx's: {socket_url}"
    );
    let setup = r#"{"format":"json","spatialReference":{"wkid":4326}}"#;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let mut socket = connect(&format!("ws://{front}{CUSTOM}")).await;
        send(&mut socket, setup).await;
        assert_eq!(next_json(&mut socket).await["format"], "json");
        sockets.push(socket);
    }
    sessions(&a, 2).await;
    sessions(&b, 2).await;
    let (status, report) = post_json(
        front,
        FEATURES,
        &[],
        &json!([observation(1, 1_000, -117.1)]).to_string(),
    )
    .await;
    assert_eq!(status, 403, "forwarded, without a token: {report}");
    publish(&b, &json!([observation(1, 1_000, -117.1)])).await;
    for socket in &mut sockets {
        assert_eq!(tracks(&next_json(socket).await), [1]);
    }
    // SSE through nginx; the filter update may land on either node.
    let mut events =
        SseThroughProxy::open(front, "/api/services/vehicles/events?where=TRACKID%3D2").await;
    let hello = events.next("session").await;
    let handle = hello["session"].as_str().unwrap().to_owned();
    for round in 0..4 {
        let clause = if round % 2 == 0 {
            "TRACKID = 1"
        } else {
            "TRACKID = 2"
        };
        let (status, reply) = post_json(
            front,
            &format!("/api/services/vehicles/events/{handle}/filter"),
            &[],
            &json!({"filter": {"where": clause}}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["filter"]["where"], clause, "{reply}");
    }
    publish(&a, &json!([observation(2, 2_000, -117.2)])).await;
    // Past the snapshots of the filters it went through (track 1), bounded.
    let mut last = Value::Null;
    for _ in 0..8 {
        last = events.next("features").await;
        if last[0]["attributes"]["TRACKID"] == 2 {
            break;
        }
        assert_eq!(last[0]["attributes"]["TRACKID"], 1, "{last}");
    }
    assert_eq!(
        last[0]["attributes"]["TRACKID"], 2,
        "the last filter holds: {last}"
    );
}

/// An SSE stream read through a proxy (HTTP/1.1, chunked).
struct SseThroughProxy {
    stream: tokio::net::TcpStream,
    buffer: String,
}

impl SseThroughProxy {
    async fn open(addr: std::net::SocketAddr, path: &str) -> SseThroughProxy {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        SseThroughProxy {
            stream,
            buffer: String::new(),
        }
    }

    /// The data of the next event named `name` (other events skipped).
    async fn next(&mut self, name: &str) -> Value {
        use tokio::io::AsyncReadExt;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let mut kind = "";
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        kind = value;
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if kind == name {
                    return serde_json::from_str(&data).expect("JSON data");
                }
            }
            let mut chunk = vec![0u8; 65536];
            let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("an event in time")
                .expect("read");
            assert!(read > 0, "the stream ended");
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    }
}

/// Issue 23, High 10 and 2: anyone who may publish on the node's subjects could freeze a
/// track (a year-9999 observation) or send any text to every session. A log message that is
/// not observations, or an observation whose time is far ahead of its store, is unreadable
/// (counted, skipped); a control message that is not
/// a server message reaches no session, a real one arrives as the server sends it. A flood on
/// an ingest subject no longer makes the node re-read its state.
#[actix_web::test]
async fn forged_state_and_control_messages_reach_no_session() {
    let nats = Nats::start();
    let a = TestServer::start(node_config(&nats, "a", false));
    ready(&a).await;
    let now = featurestream::broker::now_ms();
    publish(
        &a,
        &json!([observation(1, now, -117.1), observation(2, now, -117.2)]),
    )
    .await;
    let mut session = custom_session(&a, WGS84).await;
    assert_eq!(features_of(&mut session, 2).await.len(), 2, "the snapshot");
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    let resyncs_before = stats(&a).await["cluster"]["resyncs"].as_u64().unwrap();
    let forged = |track: i64, observed: i64| {
        json!({"features": [observation(track, observed, -118.0)]}).to_string()
    };
    // Not observations; track 2 at year 9999 (a start time no node would have accepted).
    for payload in ["hello".to_owned(), forged(2, 253_402_300_799_000)] {
        client
            .publish("featurestream.vehicles.log", payload.into())
            .await
            .expect("published");
    }
    // Anything to every session, then a server message as a node sends it.
    for payload in [
        "hello".to_owned(),
        json!({"origin": "x", "audience": "everyone", "frame": "{\"type\":\"featureResult\",\"features\":[]}"}).to_string(),
        json!({"origin": "x", "audience": "everyone", "frame": "{\"type\":\"message\",\"message\":\"real\"}"}).to_string(),
    ] {
        client
            .publish("featurestream.control.messages", payload.into())
            .await
            .expect("published");
    }
    client.flush().await.expect("flushed");
    let message = next_json(&mut session).await;
    assert_eq!(
        message,
        json!({"type": "message", "message": "real"}),
        "only the server message arrives"
    );
    let mut unreadable = 0;
    for _ in 0..400 {
        unreadable = stats(&a).await["cluster"]["unreadable"].as_u64().unwrap();
        if unreadable >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(unreadable, 2, "both forgeries skipped");
    // Neither track is frozen: their next real observations stream.
    publish(
        &a,
        &json!([
            observation(1, now + 10, -117.3),
            observation(2, now + 10, -117.4)
        ]),
    )
    .await;
    let live = features_of(&mut session, 2).await;
    let xs: Vec<f64> = live
        .iter()
        .map(|feature| feature["geometry"]["x"].as_f64().unwrap())
        .collect();
    assert_eq!(xs, [-117.3, -117.4], "{live:?}");
    assert_eq!(
        stats(&a).await["cluster"]["resyncs"].as_u64().unwrap(),
        resyncs_before,
        "nothing was re-read"
    );
}

/// Issue 23, High 10: deploy/nats-authorization.conf, verbatim: a node with the node user
/// works (ready, ingest, live frames, subject ingest); a publisher may publish observations
/// on the ingest subject and nothing else (its server message never reaches a session).
#[actix_web::test]
async fn the_documented_nats_users_let_nodes_work_and_publishers_only_ingest() {
    let nats = Nats::start_with(Some("deploy/nats-authorization.conf"));
    let mut config = node_config(&nats, "a", false);
    config.cluster.as_mut().unwrap().nats_url =
        format!("nats://node:node-secret@127.0.0.1:{}", nats.port);
    config.services[0].ingest_subject = Some("vehicles.ingest".into());
    let a = TestServer::start(config);
    ready(&a).await;
    let now = featurestream::broker::now_ms();
    publish(&a, &json!([observation(1, now, -117.1)])).await;
    let mut session = custom_session(&a, WGS84).await;
    assert_eq!(features_of(&mut session, 1).await.len(), 1, "the snapshot");
    let publisher = async_nats::ConnectOptions::with_user_and_password(
        "publisher".into(),
        "publisher-secret".into(),
    )
    .connect(nats.url())
    .await
    .expect("the publisher connects");
    // Not allowed: the server drops it (a permissions violation).
    let message = json!({"origin": "x", "audience": "everyone",
                         "frame": "{\"type\":\"message\",\"message\":\"forged\"}"});
    let _ = publisher
        .publish("featurestream.control.messages", message.to_string().into())
        .await;
    // Allowed: an observation on the ingest subject.
    publisher
        .publish(
            "vehicles.ingest",
            json!([observation(2, now + 1, -117.2)]).to_string().into(),
        )
        .await
        .expect("published");
    publisher.flush().await.expect("flushed");
    let frame = next_json(&mut session).await;
    assert_eq!(
        frame["type"], "featureResult",
        "only the observation arrives: {frame}"
    );
    assert_eq!(frame["features"][0]["attributes"]["TRACKID"], 2, "{frame}");
}

/// Issue 23, High 2: a flood on one ingest subject (as fast as a client can publish, past
/// what a node parses) made every slow-consumer report re-read every service: /readyz 503
/// most of the time and viewers of other services starved. The node now counts what the
/// subscription dropped and re-reads nothing: it stays ready, and a viewer of another service
/// gets every observation published to it meanwhile.
#[actix_web::test]
async fn a_flood_on_an_ingest_subject_re_reads_nothing_and_other_services_stream_on() {
    let nats = Nats::start();
    let mut config = node_config(&nats, "a", false);
    config.services[0].ingest_subject = Some("flood.vehicles".into());
    let mut other = config.services[0].clone();
    other.name = "other".into();
    other.ingest_subject = None;
    config.services.push(other);
    let a = TestServer::start(config);
    ready(&a).await;
    let mut viewer = connect(&a.ws_url("/arcgis/ws/services/other/custom")).await;
    send(&mut viewer, WGS84).await;
    assert_eq!(next_json(&mut viewer).await["format"], "json");
    let resyncs_before = stats(&a).await["cluster"]["resyncs"].as_u64().unwrap();
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    let now = featurestream::broker::now_ms();
    let flood = tokio::spawn(async move {
        for round in 0..300_000i64 {
            let line = json!([observation(round % 5_000, now + round, -117.0)]).to_string();
            if client.publish("flood.vehicles", line.into()).await.is_err() {
                break;
            }
        }
        let _ = client.flush().await;
    });
    // Meanwhile, the other service's viewer gets what is published to it.
    let mut received = 0;
    for batch in 0..5i64 {
        let (status, report) = post_json(
            a.addr,
            "/api/services/other/features",
            &[],
            &json!([observation(batch, now + batch, -117.5)]).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{report}");
        received += features_of(&mut viewer, 1).await.len();
    }
    assert_eq!(received, 5);
    flood.await.expect("the flood ran");
    let cluster = stats(&a).await["cluster"].clone();
    assert_eq!(
        cluster["resyncs"].as_u64().unwrap(),
        resyncs_before,
        "nothing re-read: {cluster}"
    );
    assert_eq!(get_json(a.addr, "/readyz").await.0, 200, "{cluster}");
    eprintln!(
        "subscriptions that fell behind during the flood: {}",
        cluster["slowConsumers"]
    );
}

/// A node checkpointing every second.
fn checkpointing(nats: &Nats, name: &str) -> Config {
    let mut config = node_config(nats, name, false);
    config.cluster.as_mut().unwrap().checkpoint_every = Duration::from_secs(1);
    config
}

/// The whole latest state as the feature layer serves it, ordered by track.
async fn whole_state(node: &TestServer) -> Vec<Value> {
    let (status, page) = get_json(
        node.addr,
        "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=1%3D1&outFields=*&orderByFields=TRACKID&resultRecordCount=6000&f=json",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["features"].as_array().expect("features").clone()
}

/// Waits (bounded) until `node` has written `count` checkpoints in all.
async fn checkpoints(node: &TestServer, count: u64) {
    for _ in 0..400 {
        if stats(node).await["cluster"]["checkpoints"]
            .as_u64()
            .unwrap()
            >= count
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node {} never wrote {count} checkpoints", node.addr);
}

/// Issue 25: the log does not grow without bound. The node holding the checkpoint lease
/// writes the state now and then and drops the log before the previous checkpoint; a node
/// started afterwards reads the newest checkpoint and the log after it and holds exactly the
/// same state, object ids included.
#[actix_web::test]
async fn checkpoints_drop_the_log_and_a_late_node_reads_the_same_state() {
    let nats = Nats::start();
    let a = TestServer::start(checkpointing(&nats, "a"));
    ready(&a).await;
    let rounds = 8i64;
    for round in 0..rounds {
        // Fifty new tracks a round, and track 1 again, newer each time.
        let mut batch: Vec<Value> = (0..50)
            .map(|i| observation(100 + round * 50 + i, 1_000 + round, -117.0 - i as f64 / 1e3))
            .collect();
        batch.push(observation(1, 10_000 + round, -117.5 - round as f64 / 1e3));
        let report = publish(&a, &json!(batch)).await;
        assert_eq!(report["accepted"], 51, "{report}");
        let written = stats(&a).await["cluster"]["checkpoints"].as_u64().unwrap();
        checkpoints(&a, written + 1).await;
    }
    // The log before the checkpoint preceding the newest is gone.
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream("featurestream_vehicles_log")
        .await
        .expect("the stream");
    let info = stream
        .info_with_subjects("featurestream.vehicles.log")
        .await
        .expect("its subjects");
    let log_messages = info
        .map(|subject| subject.map(|(_, count)| count).unwrap_or(0))
        .fold(0, |sum, count| async move { sum + count })
        .await;
    assert!(
        log_messages < rounds as usize - 2,
        "{log_messages} log messages of {rounds} kept"
    );
    let b = TestServer::start(checkpointing(&nats, "b"));
    ready(&b).await;
    let on_a = whole_state(&a).await;
    assert_eq!(on_a.len(), 1 + 50 * rounds as usize);
    assert_eq!(whole_state(&b).await, on_a, "the same state, ids and all");
    let one = on_a
        .iter()
        .find(|feature| feature["attributes"]["TRACKID"] == 1)
        .expect("track 1");
    assert_eq!(one["attributes"]["observed"], 10_000 + rounds - 1);
}

use futures_util::StreamExt as _;

/// Issue 25: `FEATURESTREAM_MAX_TRACKS` holds across the cluster: new tracks posted to two
/// nodes at once are judged in the log's one order, so exactly the limit is accepted in all
/// and both nodes hold the same tracks.
#[actix_web::test]
async fn the_track_limit_holds_across_nodes() {
    let nats = Nats::start();
    let limited = |config: &mut Config| config.ingest.max_tracks = 100;
    let (a, b, _on_a, _on_b) = two_watched_nodes(&nats, limited, WGS84).await;
    let body = |first: i64| {
        json!(
            (first..first + 80)
                .map(|track| observation(track, 1_000, -117.0))
                .collect::<Vec<_>>()
        )
        .to_string()
    };
    let (body_a, body_b) = (body(1_000), body(2_000));
    let ((status_a, report_a), (status_b, report_b)) = tokio::join!(
        post_json(a.addr, FEATURES, &[], &body_a),
        post_json(b.addr, FEATURES, &[], &body_b)
    );
    assert_eq!((status_a, status_b), (200, 200), "{report_a} {report_b}");
    let accepted = report_a["accepted"].as_i64().unwrap() + report_b["accepted"].as_i64().unwrap();
    assert_eq!(accepted, 100, "{report_a} {report_b}");
    let tracks_of = |state: Vec<Value>| -> Vec<i64> {
        state
            .iter()
            .map(|feature| feature["attributes"]["TRACKID"].as_i64().unwrap())
            .collect()
    };
    // Each node answered once its own post was applied; the other's may follow a moment later.
    let mut states = (Vec::new(), Vec::new());
    for _ in 0..400 {
        states = (
            tracks_of(whole_state(&a).await),
            tracks_of(whole_state(&b).await),
        );
        if states.0.len() == 100 && states.0 == states.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(states.0.len(), 100);
    assert_eq!(states.1, states.0, "the same tracks on both nodes");
}

/// Issue 25: at-least-once subject ingest. What is published on the subject while no node
/// runs is kept by JetStream and taken by the next node to start; a message is gone from the
/// stream once its observations are stored (acknowledged after), an unreadable one is dropped
/// and counted, and the observations reach sessions.
#[actix_web::test]
async fn at_least_once_ingest_keeps_what_no_node_took_yet() {
    let nats = Nats::start();
    let durable = |name: &str| {
        let mut config = node_config(&nats, name, false);
        config.services[0].ingest_subject = Some(featurestream::service::IngestSubject {
            subject: "durable.vehicles".into(),
            delivery: featurestream::service::Delivery::AtLeastOnce,
        });
        config
    };
    let client = async_nats::connect(nats.url()).await.expect("NATS");
    let jetstream = async_nats::jetstream::new(client);
    // The first node makes the stream, then goes away.
    let first = TestServer::start(durable("first"));
    ready(&first).await;
    // The stream and its durable consumer, both made by the first node.
    let mut made = false;
    for _ in 0..400 {
        let consumer: Result<async_nats::jetstream::consumer::PullConsumer, _> = jetstream
            .get_consumer_from_stream(
                "featurestream_vehicles_ingest",
                "featurestream_vehicles_ingest",
            )
            .await;
        if consumer.is_ok() {
            made = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(made, "the ingest stream and its consumer were made");
    first.stopper().stop_now();
    drop(first);
    // Stopping is asynchronous: the node is gone once the consumer has no pull request of
    // its waiting (a message handed to a node still stopping would wait out the 30 s
    // acknowledgement time before going to the next).
    let mut gone = false;
    for _ in 0..400 {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
            .get_consumer_from_stream(
                "featurestream_vehicles_ingest",
                "featurestream_vehicles_ingest",
            )
            .await
            .expect("the durable consumer");
        if consumer.info().await.expect("consumer info").num_waiting == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "the first node's pull requests never went away");
    // Published while no node runs: each acknowledged by JetStream, kept.
    for track in 1..=3i64 {
        let ack = jetstream
            .publish(
                "durable.vehicles",
                json!([observation(track, 1_000 + track, -117.0)])
                    .to_string()
                    .into(),
            )
            .await
            .expect("published")
            .await
            .expect("kept by JetStream");
        assert!(!ack.duplicate);
    }
    jetstream
        .publish("durable.vehicles", "not json".into())
        .await
        .expect("published")
        .await
        .expect("kept");
    let later = TestServer::start(durable("later"));
    ready(&later).await;
    let mut state = Vec::new();
    for _ in 0..400 {
        state = whole_state(&later).await;
        if state.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let held: Vec<i64> = state
        .iter()
        .map(|feature| feature["attributes"]["TRACKID"].as_i64().unwrap())
        .collect();
    assert_eq!(held, [1, 2, 3], "every message kept while no node ran");
    // Acknowledged once stored, the unreadable one dropped: the stream is empty.
    let mut left = u64::MAX;
    for _ in 0..400 {
        let mut stream = jetstream
            .get_stream("featurestream_vehicles_ingest")
            .await
            .expect("the stream");
        left = stream.info().await.expect("info").state.messages;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(left, 0, "every message settled");
    assert_eq!(
        stats(&later).await["services"]["vehicles"]["ingestRequestsRefused"],
        1,
        "the unreadable one counted"
    );
    // And live: a session gets what is published now.
    let mut session = custom_session(&later, WGS84).await;
    assert_eq!(features_of(&mut session, 3).await.len(), 3, "the snapshot");
    jetstream
        .publish(
            "durable.vehicles",
            json!([observation(4, 2_000, -117.2)]).to_string().into(),
        )
        .await
        .expect("published")
        .await
        .expect("kept");
    assert_eq!(tracks(&next_json(&mut session).await), [4]);
}

/// A TCP relay to a NATS server that can hold every byte in both directions: a node behind it
/// stays connected but reads and sends nothing while held (stalled, CPU-starved, paused).
struct Relay {
    port: u16,
    hold: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: u16) -> Relay {
        Relay::start_dropping(upstream, None).await
    }

    /// A relay that also drops every message the client publishes to a subject starting with
    /// `dropped` (a request the server then never answers).
    async fn start_dropping(upstream: u16, dropped: Option<&'static str>) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("its address").port();
        let (hold, held) = tokio::sync::watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Relay::pass(
                    client_read,
                    server_write,
                    held.clone(),
                    dropped,
                ));
                tokio::spawn(Relay::pass(server_read, client_write, held.clone(), None));
            }
        });
        Relay { port, hold, accept }
    }

    /// Copies one direction, waiting while held (before each read and each write), without
    /// the client's publications to subjects starting with `dropped`.
    async fn pass(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut held: tokio::sync::watch::Receiver<bool>,
        dropped: Option<&'static str>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0; 64 * 1024];
        let mut unsent = Vec::new();
        loop {
            if held.wait_for(|held| !held).await.is_err() {
                return;
            }
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            unsent.extend_from_slice(&buffer[..read]);
            let out = match dropped {
                Some(prefix) => without_publications_to(&mut unsent, prefix),
                None => std::mem::take(&mut unsent),
            };
            if held.wait_for(|held| !held).await.is_err() || to.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn hold(&self, held: bool) {
        self.hold.send_replace(held);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The whole client-to-server NATS commands at the start of `unsent` (taken from it), but for
/// publications (`PUB`, `HPUB`) to subjects starting with `prefix`; an unfinished command
/// stays in `unsent`.
fn without_publications_to(unsent: &mut Vec<u8>, prefix: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(line_len) = unsent[at..].windows(2).position(|pair| pair == b"\r\n") {
        let line = String::from_utf8_lossy(&unsent[at..at + line_len]).into_owned();
        let words: Vec<&str> = line.split_whitespace().collect();
        let publication = matches!(
            words.first().map(|op| op.to_ascii_uppercase()).as_deref(),
            Some("PUB" | "HPUB")
        );
        let mut end = at + line_len + 2;
        if publication {
            let size: usize = words
                .last()
                .and_then(|size| size.parse().ok())
                .expect("a size");
            if unsent.len() < end + size + 2 {
                break;
            }
            end += size + 2;
        }
        if !(publication && words[1].starts_with(prefix)) {
            out.extend_from_slice(&unsent[at..end]);
        }
        at = end;
    }
    unsent.drain(..at);
    out
}

/// Issue 25: a live node that falls further behind the log than the checkpoints keep (it stays
/// connected but reads nothing while checkpoints drop the log it has not read) notices the
/// hole before applying anything past it, reads the newest checkpoint again, and holds the
/// same state as the node that wrote it, every track it missed included.
#[actix_web::test]
async fn a_live_node_overtaken_by_compaction_reads_again_and_misses_nothing() {
    let nats = Nats::start();
    let a = TestServer::start(checkpointing(&nats, "a"));
    ready(&a).await;
    publish(&a, &json!([observation(1, 1, -117.0)])).await;
    // `a` holds the checkpoint lease: it writes the first.
    checkpoints(&a, 1).await;
    let relay = Relay::start(nats.port).await;
    let mut config = checkpointing(&nats, "b");
    config.cluster.as_mut().unwrap().nats_url = relay.url();
    let b = TestServer::start(config);
    ready(&b).await;
    assert_eq!(whole_state(&b).await, whole_state(&a).await);
    let before = stats(&b).await["cluster"].clone();
    relay.hold(true);
    // More log messages than a consumer asks for ahead (an ordered consumer's pull asks for
    // 500 and the next at half of that), one post each; then two checkpoints, the second
    // dropping the log up to the first: positions `b` never received.
    let posts = 1_500;
    for post in 0..posts {
        let report = publish(&a, &json!([observation(1_000 + post, 2, -117.1)])).await;
        assert_eq!(report["accepted"], 1, "{report}");
    }
    let written = stats(&a).await["cluster"]["checkpoints"].as_u64().unwrap();
    checkpoints(&a, written + 1).await;
    publish(&a, &json!([observation(1, 3, -117.2)])).await;
    checkpoints(&a, written + 2).await;
    relay.hold(false);
    let on_a = whole_state(&a).await;
    assert_eq!(on_a.len(), 1 + posts as usize);
    let mut on_b = Vec::new();
    for _ in 0..1200 {
        on_b = whole_state(&b).await;
        if on_b == on_a {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(on_b.len(), on_a.len(), "every track on b");
    assert_eq!(on_b, on_a, "the same state, ids and all");
    let after = stats(&b).await["cluster"].clone();
    assert_eq!(
        after["disconnects"], before["disconnects"],
        "b stayed connected: {after}"
    );
    assert!(
        after["resyncs"].as_u64() > before["resyncs"].as_u64(),
        "b read the state again: {after}"
    );
}

/// Issue 25: a node's periodic look at the log (is its consumer keeping up?) runs beside its
/// reading. While JetStream answers none of the looks (a stream just created, a stream leader
/// being elected: seen with a fresh three-server cluster), the node still reads the log and
/// answers its publishers, each post once its own replica has read it back; a look in the way
/// would hold every post for the request's 10 s timeout.
#[actix_web::test]
async fn unanswered_looks_at_the_log_hold_up_no_reading() {
    let nats = Nats::start();
    let relay = Relay::start_dropping(
        nats.port,
        Some("$JS.API.STREAM.MSG.GET.featurestream_vehicles_log"),
    )
    .await;
    let mut config = node_config(&nats, "a", false);
    config.cluster.as_mut().unwrap().nats_url = relay.url();
    let a = TestServer::start(config);
    ready(&a).await;
    let mut session = custom_session(&a, WGS84).await;
    let posts = 20;
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        for post in 0..posts {
            let report = publish(&a, &json!([observation(post, 1, -117.0)])).await;
            assert_eq!(report["accepted"], 1, "{report}");
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "{posts} posts were not answered in 60 s: reading waits for the looks"
    );
    let streamed: Vec<i64> = features_of(&mut session, posts as usize)
        .await
        .iter()
        .map(|feature| feature["attributes"]["TRACKID"].as_i64().unwrap())
        .collect();
    assert_eq!(
        streamed,
        (0..posts).collect::<Vec<_>>(),
        "every post streamed"
    );
}

/// The server binary as a node of the cluster on `nats`, checkpointing every second; answers
/// once `/readyz` says 200.
async fn node_binary(nats: &Nats, name: &str, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_featurestream"))
        .args(["--port", &port.to_string(), "--simulator", "off"])
        .args(["--nats-url", &nats.url(), "--node-name", name])
        .args(["--nats-checkpoint-secs", "1"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..400 {
        // Not listening yet: connecting is refused (and `get_json` would panic).
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && tokio::time::timeout(WAIT, get_json(addr, "/readyz"))
                .await
                .is_ok_and(|(status, _)| status == 200)
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node {name} never became ready");
}

/// Issue 25: the node holding the checkpoint lease, a real process, is killed with SIGKILL while
/// posts stream in to it and to another node. Every observation either node acknowledged is in
/// the state of the survivor and of a node started afterwards (each track at the newest
/// acknowledged).
#[actix_web::test]
async fn a_node_killed_with_sigkill_loses_nothing_it_acknowledged() {
    let nats = Nats::start();
    let port = free_ports(1)[0];
    let mut killed = node_binary(&nats, "a", port).await;
    let killed_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, report) = post_json(
        killed_addr,
        FEATURES,
        &[],
        &json!([observation(1, 1, -117.0)]).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    // It holds the checkpoint lease: it writes the first checkpoint.
    for attempt in 0.. {
        let (_, stats) = get_json(killed_addr, "/api/stats").await;
        if stats["cluster"]["checkpoints"].as_u64() > Some(0) {
            break;
        }
        assert!(attempt < 400, "a never wrote a checkpoint: {stats}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let survivor = TestServer::start(checkpointing(&nats, "b"));
    ready(&survivor).await;
    let survivor_addr = survivor.addr;
    // 80 posts of 20 tracks, each a newer time, alternating nodes, four at a time; `a` is
    // killed once the twentieth is answered.
    let newest = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<i64, i64>::new()));
    let (kill, mut killing) = tokio::sync::watch::channel(false);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acknowledged_by_killed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let unanswered_by_killed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let posts = (1..=80i64).map(|post| {
        let (newest, answered, kill) = (newest.clone(), answered.clone(), kill.clone());
        let acknowledged_by_killed = acknowledged_by_killed.clone();
        let unanswered_by_killed = unanswered_by_killed.clone();
        async move {
            let to = if post % 2 == 0 {
                killed_addr
            } else {
                survivor_addr
            };
            let body: Vec<Value> = (0..20)
                .map(|track| observation(10 + track, 100 + post, -117.0 - post as f64 / 1e4))
                .collect();
            let body = json!(body).to_string();
            // A post to the killed node fails (the helper panics in its own task): unanswered.
            let sent = tokio::spawn(async move {
                tokio::time::timeout(WAIT, post_json(to, FEATURES, &[], &body)).await
            })
            .await;
            if let Ok(Ok((200, report))) = sent
                && report["accepted"] == 20
            {
                if to == killed_addr {
                    acknowledged_by_killed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let mut newest = newest.lock().unwrap();
                for track in 0..20 {
                    let time = newest.entry(10 + track).or_insert(0);
                    *time = (*time).max(100 + post);
                }
            } else if to == killed_addr {
                unanswered_by_killed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 20 {
                kill.send_replace(true);
            }
        }
    });
    let streaming = futures_util::stream::iter(posts)
        .buffer_unordered(4)
        .collect::<Vec<()>>();
    let killing = async {
        let _ = killing.wait_for(|kill| *kill).await;
        killed.start_kill().expect("SIGKILL");
        let _ = killed.wait().await;
    };
    futures_util::future::join(streaming, killing).await;
    let newest = newest.lock().unwrap().clone();
    assert_eq!(newest.len(), 20, "the survivor accepted posts: {newest:?}");
    assert!(
        acknowledged_by_killed.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "a acknowledged posts before it was killed"
    );
    assert!(
        unanswered_by_killed.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "posts to a went unanswered once it was killed"
    );
    let later = TestServer::start(checkpointing(&nats, "c"));
    ready(&later).await;
    for node in [&survivor, &later] {
        // What the killed node had appended may reach a replica a moment after its answer.
        let mut held = BTreeMap::new();
        for _ in 0..400 {
            held = whole_state(node)
                .await
                .iter()
                .filter(|feature| feature["attributes"]["TRACKID"].as_i64().unwrap() >= 10)
                .map(|feature| {
                    (
                        feature["attributes"]["TRACKID"].as_i64().unwrap(),
                        feature["attributes"]["observed"].as_i64().unwrap(),
                    )
                })
                .collect::<BTreeMap<i64, i64>>();
            if newest
                .iter()
                .all(|(track, time)| held.get(track) >= Some(time))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for (track, time) in &newest {
            assert!(
                held.get(track).is_some_and(|held| held >= time),
                "track {track}: accepted {time}, held {:?}",
                held.get(track)
            );
        }
    }
}
