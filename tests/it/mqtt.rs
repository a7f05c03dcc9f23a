//! MQTT topics as a service's source, against Debian's `mosquitto` (started here on 127.0.0.1,
//! installed by `scripts/test`): every payload form, bad payloads counted, QoS 1 messages
//! redelivered after the node is killed, a reconnect after the broker restarts, and a cluster
//! of two nodes taking each message once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use featurestream::config::Config;
use featurestream::ingest::FlatFields;
use featurestream::service::{Feed, MqttFeed, MqttVersion};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};

use crate::support::{TestServer, get_json};

/// Debian's mosquitto on a port of its own, with persistence; stopped on drop.
pub struct Mosquitto {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
}

impl Mosquitto {
    /// A broker; with `user`, only that user and password may connect.
    pub fn start(user: Option<(&str, &str)>) -> Mosquitto {
        Mosquitto::start_with(user, false)
    }

    /// A broker taking TLS only, with a certificate for `localhost` signed by a CA made here
    /// (`ca.pem` in its directory, see [`Mosquitto::ca_file`]).
    pub fn start_tls() -> Mosquitto {
        Mosquitto::start_with(None, true)
    }

    /// The CA of a TLS broker.
    pub fn ca_file(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    fn start_with(user: Option<(&str, &str)>, tls: bool) -> Mosquitto {
        let dir = std::env::temp_dir().join(format!(
            "featurestream-mosquitto-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nmax_queued_messages 100000\nmax_inflight_messages 100\n",
            dir.display()
        );
        if tls {
            let openssl = |args: &[&str]| {
                let status = Command::new("openssl")
                    .current_dir(&dir)
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("openssl");
                assert!(status.success(), "openssl {args:?}");
            };
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=featurestream test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ]);
            std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ]);
            conf.push_str(&format!(
                "cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
                dir.display()
            ));
        }
        match user {
            None => conf.push_str("allow_anonymous true\n"),
            Some((name, password)) => {
                let file = dir.join("passwords");
                let made = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([name, password])
                    .status()
                    .expect("mosquitto_passwd (Debian's mosquitto; scripts/test installs it)");
                assert!(made.success());
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        // Started as root, mosquitto would switch to its own user, who cannot write here.
        if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
        {
            conf.push_str("user root\n");
        }
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut broker = Mosquitto {
            child: None,
            dir,
            port,
        };
        broker.restart();
        broker
    }

    /// Starts it (again), on the same port and store; returns once it takes connections.
    pub fn restart(&mut self) {
        // Debian puts it in /usr/sbin, off a normal user's PATH.
        let program = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(program)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (Debian's; scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("mosquitto did not start on port {}", self.port);
    }

    /// Stops it at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The feed of `broker` on `topics`.
pub fn mqtt_feed(broker: &Mosquitto, topics: &[&str], qos: u8) -> MqttFeed {
    MqttFeed {
        version: MqttVersion::V311,
        host: "127.0.0.1".into(),
        port: broker.port,
        tls: false,
        ca_file: None,
        username: None,
        password: None,
        topics: topics.iter().map(|topic| topic.to_string()).collect(),
        qos,
        client_id: format!("featurestream-test-{}", rand::random::<u32>()),
        flat: FlatFields::default(),
    }
}

fn feed_config(feed: MqttFeed) -> Config {
    let mut config = Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    config.services[0].feed = Some(Feed::Mqtt(feed));
    config
}

/// Publishes `messages` (topic, payload) with `qos`; returns once the broker has them all
/// (QoS 1: acknowledged; QoS 0: written).
pub async fn publish(port: u16, messages: Vec<(String, Vec<u8>)>, qos: QoS) {
    publish_as(port, None, messages, qos).await
}

/// [`publish`] as `user` (name, password).
pub async fn publish_as(
    port: u16,
    user: Option<(&str, &str)>,
    messages: Vec<(String, Vec<u8>)>,
    qos: QoS,
) {
    let mut options = MqttOptions::new(
        format!("publisher-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    options.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((name, password)) = user {
        options.set_credentials(name, password);
    }
    let (client, mut events) = AsyncClient::new(options, messages.len() + 10);
    let count = messages.len();
    for (topic, payload) in messages {
        client.publish(topic, qos, false, payload).await.unwrap();
    }
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done < count {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .expect("the broker took every message in time");
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => done += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => done += 1,
            Ok(_) => {}
            Err(err) => panic!("publishing to mosquitto: {err}"),
        }
    }
    let _ = client.disconnect().await;
    for _ in 0..10 {
        if tokio::time::timeout(Duration::from_millis(200), events.poll())
            .await
            .is_err()
        {
            break;
        }
    }
}

async fn stats(addr: std::net::SocketAddr) -> Value {
    get_json(addr, "/api/stats").await.1["services"]["vehicles"].clone()
}

/// The track ids live on `addr`.
async fn tracks(addr: std::net::SocketAddr) -> BTreeSet<i64> {
    let (status, page) = get_json(addr, "/ogc/collections/vehicles/items?limit=10000").await;
    assert_eq!(status, 200, "{page}");
    page["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| feature["id"].as_i64().unwrap())
        .collect()
}

async fn wait_for_tracks(addr: std::net::SocketAddr, expected: &BTreeSet<i64>) -> BTreeSet<i64> {
    let mut held = BTreeSet::new();
    for _ in 0..600 {
        held = tracks(addr).await;
        if &held == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held
}

/// `/readyz` once the feed failed to connect and says why.
async fn wait_error(addr: std::net::SocketAddr) -> Value {
    let mut body = Value::Null;
    for _ in 0..600 {
        body = get_json(addr, "/readyz").await.1;
        if body["feeds"]["vehicles"]["error"].is_string() {
            assert_eq!(
                body["feeds"]["vehicles"]["status"], "disconnected",
                "{body}"
            );
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed never failed: {body}");
}

async fn wait_connected(addr: std::net::SocketAddr, connected: bool) -> Value {
    let mut body = Value::Null;
    let want = if connected {
        "connected"
    } else {
        "disconnected"
    };
    for _ in 0..600 {
        body = get_json(addr, "/readyz").await.1;
        if body["feeds"]["vehicles"]["status"] == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed never became {want}: {body}");
}

fn esri(track: i64, observed: i64) -> Value {
    json!({
        "attributes": { "TRACKID": track, "name": format!("bus {track}"), "route": "R1",
                        "status": "moving", "speed": 10.5, "heading": 90, "active": true,
                        "observed": observed },
        "geometry": { "x": -117.1, "y": 34.05 }
    })
}

#[actix_web::test]
async fn every_payload_form_is_taken_and_bad_messages_are_counted_by_reason() {
    let broker = Mosquitto::start(Some(("fleet", "s3cret-password")));
    let mut feed = mqtt_feed(&broker, &["fleet/+/position", "fleet/bulk"], 1);
    feed.username = Some("fleet".into());
    feed.password = Some("s3cret-password".into());
    feed.flat = FlatFields {
        id: "device".into(),
        lat: "latitude".into(),
        lon: "longitude".into(),
        time: Some("ts".into()),
    };
    let server = TestServer::start(feed_config(feed));
    let ready = wait_connected(server.addr, true).await;
    assert_eq!(ready["feeds"]["vehicles"]["kind"], "mqtt", "{ready}");
    let mut socket =
        crate::support::connect(&server.ws_url("/api/services/vehicles/geojson")).await;
    let ndjson = format!("{}\n{}\n", esri(11, 1_000), esri(12, 1_000));
    let good: Vec<(String, Vec<u8>)> = vec![
        (
            "fleet/dev-7/position".into(),
            json!({"device": 7, "latitude": 34.05, "longitude": -117.2, "ts": "2026-12-07T00:00:00Z",
                   "speed": 12.5, "battery": 80, "name": "bus 7", "route": "R2", "status": null,
                   "heading": 45, "active": true})
            .to_string()
            .into_bytes(),
        ),
        (
            "fleet/bulk".into(),
            json!([esri(8, 1_000), esri(9, 1_000)]).to_string().into_bytes(),
        ),
        (
            "fleet/bulk".into(),
            json!({"type": "FeatureCollection", "features": [{"type": "Feature", "id": 1,
                "geometry": {"type": "Point", "coordinates": [-117.3, 34.1]},
                "properties": {"TRACKID": 10, "name": "bus 10", "route": "R1", "status": "moving",
                               "speed": 1.0, "heading": 0, "active": false, "observed": 1_000}}]})
            .to_string()
            .into_bytes(),
        ),
        ("fleet/bulk".into(), ndjson.into_bytes()),
    ];
    let bad: Vec<(String, Vec<u8>)> = vec![
        ("fleet/bulk".into(), b"not json at all".to_vec()),
        ("fleet/bulk".into(), vec![0xff, 0xfe, 0x00, 0x01]),
        ("fleet/bulk".into(), br#"{"hello": "world"}"#.to_vec()),
        (
            "fleet/dev-8/position".into(),
            br#"{"device": 8, "latitude": 34.0}"#.to_vec(),
        ),
    ];
    publish_as(
        broker.port,
        Some(("fleet", "s3cret-password")),
        good.into_iter().chain(bad).collect(),
        QoS::AtLeastOnce,
    )
    .await;
    let expected = BTreeSet::from([7, 8, 9, 10, 11, 12]);
    let held = wait_for_tracks(server.addr, &expected).await;
    assert_eq!(held, expected, "{}", stats(server.addr).await);
    // A session sees them as any source's.
    let mut streamed = BTreeSet::new();
    while streamed != expected {
        let message = crate::support::next_json(&mut socket).await;
        if message["type"] == "FeatureCollection" {
            streamed.extend(
                message["features"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|feature| feature["id"].as_i64().unwrap()),
            );
        }
    }
    let one = get_json(server.addr, "/ogc/collections/vehicles/items/7")
        .await
        .1;
    assert_eq!(one["properties"]["speed"], 12.5, "{one}");
    assert_eq!(
        one["properties"]["observed"], "2026-12-07T00:00:00Z",
        "the flat form's time key: {one}"
    );
    let mut events = Value::Null;
    for _ in 0..200 {
        events = stats(server.addr).await["feed"]["events"].clone();
        if events["notFeatures"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(events["message"], 8, "{events}");
    assert_eq!(events["notJson"], 2, "not JSON, and not UTF-8: {events}");
    assert_eq!(events["notFeatures"], 2, "{events}");
    let metrics = crate::support::http(server.addr, "GET", "/metrics", &[])
        .await
        .2;
    assert!(
        metrics.contains(r#"featurestream_feed_connected{service="vehicles",feed="mqtt"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"featurestream_feed_events_total{service="vehicles",feed="mqtt",outcome="notJson"} 2"#
        ),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_tls_broker_is_checked_against_the_feeds_ca() {
    let broker = Mosquitto::start_tls();
    let mut feed = mqtt_feed(&broker, &["fleet/#"], 1);
    feed.tls = true;
    feed.host = "localhost".into();
    feed.ca_file = Some(broker.ca_file());
    let server = TestServer::start(feed_config(feed.clone()));
    wait_connected(server.addr, true).await;
    // Against the system's roots the test CA is unknown: refused, and said so.
    let mut untrusted = feed;
    untrusted.ca_file = None;
    let other = TestServer::start(feed_config(untrusted));
    let mut body = Value::Null;
    for _ in 0..600 {
        body = get_json(other.addr, "/readyz").await.1;
        if body["feeds"]["vehicles"]["error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        body["feeds"]["vehicles"]["status"], "disconnected",
        "{body}"
    );
    assert!(
        body["feeds"]["vehicles"]["error"]
            .as_str()
            .is_some_and(|error| error.contains("TLS")
                || error.contains("certificate")
                || error.contains("root")),
        "{body}"
    );
}

#[actix_web::test]
async fn a_wrong_password_is_shown_not_retried_in_a_storm() {
    let broker = Mosquitto::start(Some(("fleet", "s3cret-password")));
    let mut feed = mqtt_feed(&broker, &["fleet/#"], 0);
    feed.username = Some("fleet".into());
    feed.password = Some("wrong".into());
    let server = TestServer::start(feed_config(feed));
    let body = wait_error(server.addr).await;
    let error = body["feeds"]["vehicles"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("refused"), "{body}");
    // The node itself is ready: it serves what it has.
    assert_eq!(get_json(server.addr, "/readyz").await.0, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconnects = stats(server.addr).await["feed"]["events"]["reconnect"]
        .as_u64()
        .unwrap_or(0);
    assert!(reconnects <= 2, "a refused login waits 30 s: {reconnects}");
}

#[actix_web::test]
async fn the_feed_reconnects_after_the_broker_restarts() {
    let mut broker = Mosquitto::start(None);
    let server = TestServer::start(feed_config(mqtt_feed(&broker, &["fleet/#"], 1)));
    wait_connected(server.addr, true).await;
    publish(
        broker.port,
        vec![("fleet/a".into(), esri(1, 1_000).to_string().into_bytes())],
        QoS::AtLeastOnce,
    )
    .await;
    assert_eq!(
        wait_for_tracks(server.addr, &BTreeSet::from([1])).await,
        BTreeSet::from([1])
    );
    broker.kill();
    let down = wait_connected(server.addr, false).await;
    assert!(down["feeds"]["vehicles"]["error"].is_string(), "{down}");
    broker.restart();
    wait_connected(server.addr, true).await;
    publish(
        broker.port,
        vec![("fleet/b".into(), esri(2, 1_000).to_string().into_bytes())],
        QoS::AtLeastOnce,
    )
    .await;
    assert_eq!(
        wait_for_tracks(server.addr, &BTreeSet::from([1, 2])).await,
        BTreeSet::from([1, 2])
    );
    assert!(stats(server.addr).await["feed"]["events"]["reconnect"].as_u64() >= Some(1));
}

/// The server binary with a services file of one MQTT (QoS 1) service and a state directory.
async fn start_node(
    port: u16,
    services: &std::path::Path,
    state: &std::path::Path,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_featurestream"))
        .args(["--port", &port.to_string()])
        .arg("--services")
        .arg(services)
        .env("FEATURESTREAM_STATE_DIR", state)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..400 {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
            && get_json(addr, "/readyz").await.0 == 200
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node never became ready");
}

#[actix_web::test]
async fn qos1_messages_are_redelivered_when_the_node_is_killed_so_none_is_lost() {
    let broker = Mosquitto::start(None);
    let dir = std::env::temp_dir().join(format!(
        "featurestream-mqtt-kill-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let services = dir.join("services.json");
    std::fs::write(
        &services,
        json!({"services": [{"name": "vehicles", "maxFeatureAgeSecs": 0,
            "mqtt": {"url": format!("mqtt://127.0.0.1:{}", broker.port), "topics": ["fleet/#"], "qos": 1}}]})
        .to_string(),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut node = start_node(port, &services, &dir.join("state")).await;
    wait_connected(addr, true).await;
    // 300 messages, each a track of its own; the node is killed while they arrive.
    let messages: Vec<(String, Vec<u8>)> = (1..=300)
        .map(|track| {
            (
                format!("fleet/{track}"),
                esri(track, 1_000).to_string().into_bytes(),
            )
        })
        .collect();
    let publisher = tokio::spawn(publish(broker.port, messages, QoS::AtLeastOnce));
    for _ in 0..400 {
        if tracks(addr).await.len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.start_kill().expect("kill -9");
    let _ = node.wait().await;
    publisher.await.expect("every message reached the broker");
    // Everything the broker took reaches the state: what the killed node had not
    // acknowledged comes again to the next session, and what it had is durable.
    let _node = start_node(port, &services, &dir.join("state")).await;
    let expected: BTreeSet<i64> = (1..=300).collect();
    let held = wait_for_tracks(addr, &expected).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        expected.difference(&held).collect::<Vec<_>>(),
        Vec::<&i64>::new(),
        "lost"
    );
}

#[actix_web::test]
async fn a_cluster_of_two_nodes_takes_each_message_once() {
    let nats = crate::cluster::Nats::start();
    let broker = Mosquitto::start(None);
    let feed = mqtt_feed(&broker, &["fleet/#"], 1);
    let node = |name: &str| {
        let mut config = crate::cluster::node_config(&nats, name, false);
        config.services[0].feed = Some(Feed::Mqtt(feed.clone()));
        TestServer::start(config)
    };
    let (a, b) = (node("a"), node("b"));
    crate::cluster::ready(&a).await;
    crate::cluster::ready(&b).await;
    // One of them holds the source lease and connects.
    let mut here = Vec::new();
    for _ in 0..600 {
        here.clear();
        for node in [&a, &b] {
            let feed = stats(node.addr).await["feed"].clone();
            if feed["here"] == true && feed["connected"] == true {
                here.push(node.addr);
            }
        }
        if here.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(here.len(), 1, "exactly one node runs the feed");
    let messages: Vec<(String, Vec<u8>)> = (1..=50)
        .map(|track| {
            (
                format!("fleet/{track}"),
                esri(track, 1_000).to_string().into_bytes(),
            )
        })
        .collect();
    publish(broker.port, messages, QoS::AtLeastOnce).await;
    let expected: BTreeSet<i64> = (1..=50).collect();
    for node in [&a, &b] {
        assert_eq!(wait_for_tracks(node.addr, &expected).await, expected);
    }
    let taken: u64 = {
        let mut total = 0;
        for node in [&a, &b] {
            total += stats(node.addr).await["feed"]["events"]["message"]
                .as_u64()
                .unwrap_or(0);
        }
        total
    };
    assert_eq!(taken, 50, "each message taken once across the cluster");
}

#[actix_web::test]
async fn mqtt5_sessions_keep_what_is_published_while_no_node_is_connected() {
    let broker = Mosquitto::start(None);
    let mut feed = mqtt_feed(&broker, &["fleet/#"], 1);
    feed.version = MqttVersion::V5;
    let first = TestServer::start(feed_config(feed.clone()));
    wait_connected(first.addr, true).await;
    publish(
        broker.port,
        vec![("fleet/1".into(), esri(1, 1_000).to_string().into_bytes())],
        QoS::AtLeastOnce,
    )
    .await;
    assert_eq!(
        wait_for_tracks(first.addr, &BTreeSet::from([1])).await,
        BTreeSet::from([1])
    );
    first.shutdown().await;
    drop(first);
    // No node is connected: the broker keeps the session's messages.
    publish(
        broker.port,
        (2..=20)
            .map(|track| {
                (
                    format!("fleet/{track}"),
                    esri(track, 1_000).to_string().into_bytes(),
                )
            })
            .collect(),
        QoS::AtLeastOnce,
    )
    .await;
    let second = TestServer::start(feed_config(feed));
    let expected: BTreeSet<i64> = (2..=20).collect();
    assert_eq!(wait_for_tracks(second.addr, &expected).await, expected);
}
