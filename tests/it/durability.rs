//! Accepted means durable (docs/architecture.md "Durability"): with a state directory, what a
//! publisher was told was accepted survives SIGKILL, object ids are never reissued, a torn
//! tail is cut and a damaged store set aside, and a directory that cannot be written (full,
//! read-only, removed) gets a clear answer while streaming goes on. The crash test kills the
//! real binary; the disk faults use small tmpfs mounts (the tests run as root, as CI does).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, WAIT, connect, get_json, http, next_json, send};

const FEATURES: &str = "/api/services/vehicles/features";
const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";
const BROADCAST: &str = "/arcgis/ws/services/vehicles/StreamServer/broadcast?ack=true";
const QUERY: &str = "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=1%3D1&outFields=TRACKID,observed,OBJECTID&returnGeometry=false&f=json";

/// Where the ids of resent copies start (`latest::RESEND_IDS`).
const RESEND_IDS: i64 = 1 << 50;

fn observation(track: i64, observed: i64) -> Value {
    json!({
        "attributes": {
            "OBJECTID": 999, "TRACKID": track, "name": format!("bus {track}"), "route": "R1",
            "status": "moving", "speed": 10.5, "heading": 90, "active": true, "observed": observed
        },
        "geometry": { "x": -117.0 + track as f64 / 1000.0, "y": 34.05 }
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fs-durability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs at {} needs root (CAP_SYS_ADMIN), as scripts/test runs in CI",
            at.display()
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Status, headers (lower-case names) and JSON body of an answer; `None`: no answer.
type Answer = Option<(u16, Vec<(String, String)>, Value)>;

/// A POST that reports a connection that fails (the server was killed) as `None`.
async fn try_post(addr: std::net::SocketAddr, body: &str) -> Answer {
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let request = format!(
        "POST {FEATURES} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Some((
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

/// Each live track's (observed, OBJECTID) by the feature layer.
async fn by_query(addr: std::net::SocketAddr) -> BTreeMap<i64, (i64, i64)> {
    let (status, answer) = get_json(addr, QUERY).await;
    assert_eq!(status, 200, "{answer}");
    assert_ne!(answer["exceededTransferLimit"], true, "one page holds them");
    answer["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|feature| {
            let attributes = &feature["attributes"];
            (
                attributes["TRACKID"].as_i64().unwrap(),
                (
                    attributes["observed"].as_i64().unwrap(),
                    attributes["OBJECTID"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Which observation each object id streamed stood for; one id standing for two different
/// observations is an id reissued.
#[derive(Default)]
struct Ids(HashMap<i64, (i64, i64)>);

impl Ids {
    fn saw(&mut self, id: i64, track: i64, observed: i64) {
        let first = *self.0.entry(id).or_insert((track, observed));
        assert_eq!(
            first,
            (track, observed),
            "object id {id} reissued: it stood for track {} at {}, now for track {track} at {observed}",
            first.0,
            first.1
        );
    }

    fn saw_feature(&mut self, message: &Value) -> Option<(i64, i64, i64)> {
        let attributes = message.get("attributes")?;
        let (id, track, observed) = (
            attributes["OBJECTID"].as_i64()?,
            attributes["TRACKID"].as_i64()?,
            attributes["observed"].as_i64()?,
        );
        self.saw(id, track, observed);
        Some((id, track, observed))
    }
}

/// The release or test build of the server on `port` with `dir` as its state directory;
/// answers once `/readyz` says 200.
async fn start_binary(port: u16, dir: &Path) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_featurestream"))
        .args(["--port", &port.to_string()])
        .env("FEATURESTREAM_SIMULATOR", "off")
        .env("FEATURESTREAM_STATE_DIR", dir)
        .env("FEATURESTREAM_INGEST_COALESCE_MS", "10")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..300 {
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
        {
            let _ = stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never became ready");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the publishers were told was accepted: each track's newest acknowledged observation.
type Acked = Arc<Mutex<BTreeMap<i64, i64>>>;

fn note_acked(acked: &Acked, observations: &[(i64, i64)]) {
    let mut acked = acked.lock().unwrap();
    for &(track, observed) in observations {
        let newest = acked.entry(track).or_insert(observed);
        *newest = (*newest).max(observed);
    }
}

/// An HTTP publisher of `tracks` until the server goes away (bounded).
async fn publish_over_http(
    addr: std::net::SocketAddr,
    tracks: std::ops::Range<i64>,
    clock: Arc<std::sync::atomic::AtomicI64>,
    acked: Acked,
) {
    for _ in 0..100_000 {
        let observed = clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let batch: Vec<(i64, i64)> = tracks.clone().map(|track| (track, observed)).collect();
        let body = Value::Array(batch.iter().map(|&(t, o)| observation(t, o)).collect());
        let Some((status, _, answer)) = try_post(addr, &body.to_string()).await else {
            return;
        };
        if status == 200 && answer["accepted"] == batch.len() {
            note_acked(&acked, &batch);
        }
    }
}

/// A broadcast WebSocket publisher asking for acknowledgements, until the server goes away.
async fn publish_over_broadcast(
    addr: std::net::SocketAddr,
    tracks: std::ops::Range<i64>,
    clock: Arc<std::sync::atomic::AtomicI64>,
    acked: Acked,
) {
    let Ok((mut socket, _)) =
        tokio_tungstenite::connect_async(format!("ws://{addr}{BROADCAST}")).await
    else {
        return;
    };
    for _ in 0..100_000 {
        let observed = clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let batch: Vec<(i64, i64)> = tracks.clone().map(|track| (track, observed)).collect();
        let body = Value::Array(batch.iter().map(|&(t, o)| observation(t, o)).collect());
        if socket.send(Message::text(body.to_string())).await.is_err() {
            return;
        }
        let reply = loop {
            match tokio::time::timeout(WAIT, socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => break serde_json::from_str::<Value>(&text),
                Ok(Some(Ok(_))) => continue,
                _ => return,
            }
        };
        if let Ok(reply) = reply
            && reply["type"] == "ack"
            && reply["accepted"] == batch.len()
        {
            note_acked(&acked, &batch);
        }
    }
}

/// A viewer noting the object id of everything streamed to it, until the server goes away.
async fn watch(addr: std::net::SocketAddr, ids: Arc<Mutex<Ids>>) {
    let Ok((mut socket, _)) =
        tokio_tungstenite::connect_async(format!("ws://{addr}{SUBSCRIBE}")).await
    else {
        return;
    };
    for _ in 0..10_000_000 {
        match tokio::time::timeout(WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Ok(message) = serde_json::from_str::<Value>(&text) {
                    ids.lock().unwrap().saw_feature(&message);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

/// At least 20 SIGKILLs at random moments while two HTTP publishers and a broadcast publisher
/// ingest and a viewer watches: after every restart each acknowledged observation is there
/// (by `/query` and by a new session's snapshot), no track went backwards, and no object id
/// (of an observation or of a resent copy) ever stood for two observations.
#[actix_web::test]
async fn every_acknowledged_observation_survives_sigkill_and_no_object_id_is_reissued() {
    const KILLS: usize = 20;
    let dir = scratch("sigkill");
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let acked: Acked = Arc::default();
    let ids = Arc::new(Mutex::new(Ids::default()));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(now_ms - 3_600_000));
    let mut previous: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut acknowledged_total = 0;
    for round in 0..=KILLS {
        let port = free_port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = start_binary(port, &dir).await;
        // Nothing ingests now: the state is what the last run made durable.
        let state = by_query(addr).await;
        let acked_now = acked.lock().unwrap().clone();
        for (track, newest) in &acked_now {
            let found = state.get(track).map(|(observed, _)| *observed);
            assert!(
                found.is_some_and(|observed| observed >= *newest),
                "round {round}: track {track} was acknowledged at {newest}, the state has {found:?}"
            );
        }
        for (track, (observed, _)) in &previous {
            let now = state[track].0;
            assert!(
                now >= *observed,
                "round {round}: track {track} went back from {observed} to {now}"
            );
        }
        {
            let mut ids = ids.lock().unwrap();
            for (track, (observed, id)) in &state {
                ids.saw(*id, *track, *observed);
            }
        }
        // A new session's snapshot holds the same (resent under ids of their own).
        let mut socket = connect(&format!("ws://{addr}{SUBSCRIBE}")).await;
        let mut snapshot = BTreeMap::new();
        for _ in 0..state.len() {
            let message = next_json(&mut socket).await;
            let (id, track, observed) = ids
                .lock()
                .unwrap()
                .saw_feature(&message)
                .unwrap_or_else(|| panic!("a snapshot feature: {message}"));
            assert!(id >= RESEND_IDS, "a resent copy has an id of its own: {id}");
            snapshot.insert(track, observed);
        }
        let expected: BTreeMap<i64, i64> = state.iter().map(|(t, (o, _))| (*t, *o)).collect();
        assert_eq!(
            snapshot, expected,
            "round {round}: the snapshot is the state"
        );
        drop(socket);
        previous = state;
        if round == KILLS {
            child.kill().await.unwrap();
            break;
        }
        let watcher = actix_web::rt::spawn(watch(addr, ids.clone()));
        let publishers = [
            actix_web::rt::spawn(publish_over_http(addr, 1..11, clock.clone(), acked.clone())),
            actix_web::rt::spawn(publish_over_http(
                addr,
                11..21,
                clock.clone(),
                acked.clone(),
            )),
            actix_web::rt::spawn(publish_over_broadcast(
                addr,
                21..31,
                clock.clone(),
                acked.clone(),
            )),
        ];
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..700))).await;
        child.start_kill().unwrap();
        let _ = child.wait().await;
        for publisher in publishers {
            tokio::time::timeout(WAIT * 2, publisher)
                .await
                .expect("a publisher ends once the server is gone")
                .unwrap();
        }
        tokio::time::timeout(WAIT * 2, watcher)
            .await
            .expect("the viewer ends once the server is gone")
            .unwrap();
        acknowledged_total = acked.lock().unwrap().values().count();
    }
    assert_eq!(
        acknowledged_total, 30,
        "every publisher had observations acknowledged"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full disk: the write that fails is not acknowledged, ingest is then refused with 507 and
/// Retry-After naming the cause (HTTP and broadcast), `/readyz`, `/api/stats` and `/metrics`
/// say so, streaming goes on; once there is space again ingest is accepted, and a restart has
/// everything accepted before and after.
#[actix_web::test]
async fn a_full_disk_refuses_ingest_with_507_while_streaming_goes_on_until_space_is_back() {
    let dir = std::env::temp_dir().join(format!("fs-durability-full-{}", std::process::id()));
    let mount = Tmpfs::mount(&dir, "size=1m");
    let config = || {
        let mut config = featurestream::config::Config::for_tests(1, 1.0);
        config.services[0].simulator = None;
        config.state.dir = Some(dir.clone());
        config
    };
    let server = TestServer::start(config());
    let mut viewer = connect(&server.ws_url(SUBSCRIBE)).await;
    let accepted =
        |answer: &Answer| matches!(answer, Some((200, _, body)) if body["accepted"] == 1);
    let first = try_post(server.addr, &json!([observation(1, 1_000)]).to_string()).await;
    assert!(accepted(&first), "{first:?}");
    assert_eq!(next_json(&mut viewer).await["attributes"]["TRACKID"], 1);
    // Fill the disk.
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 4096];
    for _ in 0..1024 {
        if file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            break;
        }
    }
    // What fits in the journal's last page is still taken; the first write that fails is
    // answered per observation (not stored), and from then on nothing is accepted.
    let (mut refused, mut failed) = (None, false);
    for attempt in 0..1000 {
        let answer = try_post(
            server.addr,
            &json!([observation(2, 2_000 + attempt)]).to_string(),
        )
        .await
        .expect("answered");
        if accepted(&Some(answer.clone())) {
            assert!(!failed, "nothing is accepted after a failed write");
            continue;
        }
        if answer.0 != 200 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.2["errors"][0]["code"], "unstored", "{}", answer.2);
        failed = true;
    }
    let (status, headers, body) = refused.expect("ingest is refused while the disk is full");
    assert_eq!(status, 507, "{body}");
    assert_eq!(crate::support::header(&headers, "retry-after"), Some("5"));
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("No space left on device") && message.contains(dir.to_str().unwrap()),
        "the answer names the cause and the place: {body}"
    );
    let mut publisher = connect(&server.ws_url(BROADCAST)).await;
    send(&mut publisher, &json!([observation(3, 3_000)]).to_string()).await;
    let reply = next_json(&mut publisher).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{reply}"
    );
    let (status, ready) = get_json(server.addr, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "cannot make the latest state durable");
    assert!(ready["stateStoreErrors"]["vehicles"].is_string(), "{ready}");
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    let store = &stats["services"]["vehicles"]["stateStore"];
    assert!(store["failures"].as_u64().unwrap() >= 1, "{stats}");
    assert!(store["error"].is_string(), "{stats}");
    let (_, _, metrics) = http(server.addr, "GET", "/metrics", &[]).await;
    assert!(
        metrics.contains("featurestream_state_unavailable{service=\"vehicles\"} 1"),
        "{metrics}"
    );
    // Streaming goes on: a new viewer gets the state, the first viewer is still served.
    let mut late = connect(&server.ws_url(SUBSCRIBE)).await;
    assert_eq!(next_json(&mut late).await["attributes"]["TRACKID"], 1);
    send(&mut viewer, r#"{"filter":{"where":"TRACKID = 1"}}"#).await;
    // (after what was streamed before the disk filled)
    let mut replied = false;
    for _ in 0..2000 {
        if next_json(&mut viewer).await.get("filter").is_some() {
            replied = true;
            break;
        }
    }
    assert!(replied, "the viewer is served");
    // Space is back: accepted again (the journal retries every second).
    drop(file);
    std::fs::remove_file(&filler).unwrap();
    let mut back = false;
    for attempt in 0..100 {
        let answer = try_post(
            server.addr,
            &json!([observation(4, 4_000 + attempt)]).to_string(),
        )
        .await;
        if accepted(&answer) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "ingest is accepted again once there is space");
    assert_eq!(get_json(server.addr, "/readyz").await.0, 200);
    drop((viewer, late, publisher));
    drop(server);
    // Give the stopped server's journal writer its moment to see the channel close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = TestServer::start(config());
    let state = by_query(server.addr).await;
    assert!(
        state.contains_key(&1) && state.contains_key(&4),
        "{state:?}"
    );
    drop(server);
    drop(mount);
}

/// A state directory that cannot be written, or created, at start: the binary exits with an
/// error naming the path.
#[actix_web::test]
async fn a_read_only_state_directory_is_a_start_up_error_naming_the_path() {
    let dir = std::env::temp_dir().join(format!("fs-durability-ro-{}", std::process::id()));
    let mount = Tmpfs::mount(&dir, "size=1m,ro");
    for state_dir in [dir.clone(), dir.join("missing")] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_featurestream"))
            .args(["--port", &free_port().to_string()])
            .env("FEATURESTREAM_SIMULATOR", "off")
            .env("FEATURESTREAM_STATE_DIR", &state_dir)
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(WAIT * 3, output)
            .await
            .expect("it exits")
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{log}");
        assert!(
            log.contains(state_dir.to_str().unwrap()) && log.contains("Read-only file system"),
            "the error names the path and the cause: {log}"
        );
    }
    drop(mount);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vehicles.journal.")
        })
        .collect();
    segments.sort();
    segments
}

/// A crash mid-write leaves a torn record at the journal's end: it is cut off, what came
/// before it is kept. A record that fails its checksum with more after it is damage: the
/// store is set aside whole and numbering resumes above it.
#[actix_web::test]
async fn a_torn_tail_is_cut_off_and_a_damaged_segment_sets_the_store_aside() {
    let dir = scratch("torn");
    let config = || {
        let mut config = featurestream::config::Config::for_tests(1, 1.0);
        config.services[0].simulator = None;
        config.state.dir = Some(dir.clone());
        config
    };
    let server = TestServer::start(config());
    for track in 1..=5 {
        let answer = try_post(server.addr, &json!([observation(track, 1_000)]).to_string()).await;
        assert!(matches!(answer, Some((200, _, ref body)) if body["accepted"] == 1));
    }
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = segments(&dir).pop().expect("a journal segment");
    let length = std::fs::metadata(&last).unwrap().len();
    // A record header claiming 100 bytes, followed by only 10 of them.
    let mut torn = 100u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xAB; 14]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&torn)
        .unwrap();
    let server = TestServer::start(config());
    assert_eq!(
        by_query(server.addr)
            .await
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "what came before the torn record is kept"
    );
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        length,
        "the torn record is cut off"
    );
    let mut viewer = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut highest = 0;
    for _ in 0..5 {
        next_json(&mut viewer).await;
    }
    for track in 6..=8 {
        let answer = try_post(server.addr, &json!([observation(track, 1_000)]).to_string()).await;
        assert!(matches!(answer, Some((200, _, ref body)) if body["accepted"] == 1));
        let id = next_json(&mut viewer).await["attributes"]["OBJECTID"]
            .as_i64()
            .unwrap();
        highest = highest.max(id);
    }
    drop(viewer);
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Damage a record in the middle of the journal: its checksum fails, more follows.
    let all = segments(&dir);
    let damaged = all
        .iter()
        .rev()
        .find(|path| std::fs::metadata(path).unwrap().len() > 200)
        .expect("a segment with records")
        .clone();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let at = 8 + 100;
    bytes[at] ^= 0xFF;
    std::fs::write(&damaged, &bytes).unwrap();
    let server = TestServer::start(config());
    assert!(
        by_query(server.addr).await.is_empty(),
        "a damaged store is never half-loaded"
    );
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert!(aside >= 1, "the damaged files are kept aside");
    let mut viewer = connect(&server.ws_url(SUBSCRIBE)).await;
    let answer = try_post(server.addr, &json!([observation(9, 1_000)]).to_string()).await;
    assert!(matches!(answer, Some((200, _, ref body)) if body["accepted"] == 1));
    let id = next_json(&mut viewer).await["attributes"]["OBJECTID"]
        .as_i64()
        .unwrap();
    assert!(
        id > highest,
        "numbering resumes above the damaged store ({id} after {highest})"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The state directory removed while running: the write that finds it gone is not
/// acknowledged, the directory is made again with the whole state in it, and ingest goes on;
/// a restart has everything.
#[actix_web::test]
async fn a_state_directory_removed_while_running_is_made_again_with_the_whole_state() {
    let dir = scratch("removed");
    let config = || {
        let mut config = featurestream::config::Config::for_tests(1, 1.0);
        config.services[0].simulator = None;
        config.state.dir = Some(dir.clone());
        config
    };
    let server = TestServer::start(config());
    for track in 1..=3 {
        let answer = try_post(server.addr, &json!([observation(track, 1_000)]).to_string()).await;
        assert!(matches!(answer, Some((200, _, ref body)) if body["accepted"] == 1));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let mut accepted = false;
    for attempt in 0..100 {
        let answer = try_post(
            server.addr,
            &json!([observation(4, 1_000 + attempt)]).to_string(),
        )
        .await;
        if matches!(answer, Some((200, _, ref body)) if body["accepted"] == 1) {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "ingest goes on once the directory is made again");
    assert!(
        dir.join("vehicles.checkpoint").is_file(),
        "the whole state is written again"
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = TestServer::start(config());
    assert_eq!(
        by_query(server.addr)
            .await
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The journal is compacted into a checkpoint as it grows: many observations of few tracks
/// leave a directory the size of a few checkpoints and the journal limit, never of everything
/// ever received, and a restart after SIGKILL-like stop has every track's latest.
#[actix_web::test]
async fn the_journal_is_compacted_and_the_directory_stays_bounded() {
    let dir = scratch("compaction");
    let config = || {
        let mut config = featurestream::config::Config::for_tests(1, 1.0);
        config.services[0].simulator = None;
        config.state.dir = Some(dir.clone());
        config.state.max_journal_bytes = 1 << 16;
        config
    };
    let server = TestServer::start(config());
    let mut written = 0;
    for round in 0..200 {
        let batch: Vec<Value> = (1..=20)
            .map(|track| observation(track, 1_000 + round))
            .collect();
        let body = Value::Array(batch).to_string();
        written += body.len();
        let answer = try_post(server.addr, &body).await;
        assert!(matches!(answer, Some((200, _, ref body)) if body["accepted"] == 20));
    }
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    let store = &stats["services"]["vehicles"]["stateStore"];
    assert!(store["checkpoints"].as_u64().unwrap() >= 2, "{store}");
    let on_disk: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.metadata().unwrap().len())
        .sum();
    assert!(
        on_disk < 4 * (1 << 16),
        "{on_disk} bytes on disk after {written} bytes ingested"
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = TestServer::start(config());
    let state = by_query(server.addr).await;
    assert_eq!(state.len(), 20);
    assert!(
        state.values().all(|(observed, _)| *observed == 1_000 + 199),
        "{state:?}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
