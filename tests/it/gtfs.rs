//! GTFS-Realtime feeds as a service's source: a local HTTP server in the test serves feeds the
//! test builds (encoded with the official proto's messages), polled by the real server:
//! vehicles move, one leaves the feed and expires, `ETag` makes a poll cost nothing, the API
//! key header is sent, and a corrupt feed, an HTTP error or a hung server keep the last
//! state, are counted, and are recovered from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use featurestream::config::Config;
use featurestream::feeds::gtfs_realtime::{
    FeedEntity, FeedHeader, FeedMessage, Position, TripDescriptor, VehicleDescriptor,
    VehiclePosition,
};
use featurestream::service::{Feed, GtfsRealtimeFeed};
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, get_json};

/// What the feed server answers.
#[derive(Clone)]
enum Answer {
    /// A feed of these vehicles (id, longitude), timestamped now; `ETag` from its content.
    Vehicles(Vec<(&'static str, f32)>),
    /// Bytes that are not a feed.
    Corrupt,
    /// These bytes, as a feed.
    Raw(Vec<u8>),
    /// This HTTP status.
    Status(u16),
    /// No answer at all.
    Hang,
}

struct FeedServer {
    url: String,
    answer: Arc<Mutex<Answer>>,
    /// API keys seen, and the number of 304s sent.
    seen: Arc<Mutex<(Vec<String>, u64)>>,
}

fn feed_of(vehicles: &[(&'static str, f32)], now_s: u64) -> FeedMessage {
    let mut entity: Vec<FeedEntity> = vehicles
        .iter()
        .map(|(id, lon)| FeedEntity {
            id: Some(format!("entity-{id}")),
            is_deleted: None,
            vehicle: Some(VehiclePosition {
                trip: Some(TripDescriptor {
                    trip_id: Some(format!("trip-{id}")),
                    start_date: Some("20261207".into()),
                    route_id: Some("R7".into()),
                    direction_id: Some(0),
                }),
                position: Some(Position {
                    latitude: Some(34.06),
                    longitude: Some(*lon),
                    bearing: Some(180.0),
                    speed: Some(8.5),
                }),
                current_stop_sequence: Some(3),
                current_status: Some(2),
                timestamp: Some(now_s),
                stop_id: Some("S1".into()),
                vehicle: Some(VehicleDescriptor {
                    id: Some((*id).into()),
                    label: Some(format!("Bus {id}")),
                    license_plate: None,
                }),
                occupancy_status: Some(1),
            }),
        })
        .collect();
    // An entity without a position: counted and skipped.
    entity.push(FeedEntity {
        id: Some("no-position".into()),
        is_deleted: None,
        vehicle: Some(VehiclePosition::default()),
    });
    FeedMessage {
        header: Some(FeedHeader {
            gtfs_realtime_version: Some("2.0".into()),
            incrementality: Some(0),
            timestamp: Some(now_s),
        }),
        entity,
    }
}

impl FeedServer {
    async fn start(answer: Answer) -> FeedServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/gtfs-rt/vehicles.pb?key=k",
            listener.local_addr().unwrap()
        );
        let answer = Arc::new(Mutex::new(answer));
        let seen = Arc::new(Mutex::new((Vec::new(), 0)));
        let (state, counts) = (answer.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, counts) = (state.clone(), counts.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                            .map(str::to_owned)
                    };
                    if let Some(key) = header("x-api-key") {
                        counts.lock().unwrap().0.push(key);
                    }
                    let answer = state.lock().unwrap().clone();
                    let response = match answer {
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        Answer::Status(code) => format!(
                            "HTTP/1.1 {code} Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .into_bytes(),
                        Answer::Raw(body) => {
                            let mut out = format!("HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).into_bytes();
                            out.extend_from_slice(&body);
                            out
                        }
                        Answer::Corrupt => {
                            let body = b"<html>not a feed</html>\xff\xff\xff";
                            let mut out = format!("HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).into_bytes();
                            out.extend_from_slice(body);
                            out
                        }
                        Answer::Vehicles(vehicles) => {
                            // The ETag names the vehicles and the second: the same second
                            // asked twice is not modified.
                            let now_s = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs();
                            let etag = format!("\"{}-{now_s}\"", vehicles.len());
                            if header("if-none-match").as_deref() == Some(etag.as_str()) {
                                counts.lock().unwrap().1 += 1;
                                b"HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n".to_vec()
                            } else {
                                let body = feed_of(&vehicles, now_s).encode_to_vec();
                                let mut out = format!("HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\netag: {etag}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).into_bytes();
                                out.extend_from_slice(&body);
                                out
                            }
                        }
                    };
                    let _ = stream.write_all(&response).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FeedServer { url, answer, seen }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

fn gtfs_config(url: &str, max_age: Option<Duration>) -> Config {
    let mut config = Config::for_tests(1, 1.0);
    let service = &mut config.services[0];
    service.simulator = None;
    service.schema = featurestream::service::gtfs_realtime_schema();
    service.max_feature_age = max_age;
    service.feed = Some(Feed::GtfsRealtime(GtfsRealtimeFeed {
        url: url.to_owned(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
        headers: vec![("x-api-key".into(), "k-123".into())],
    }));
    config
}

/// Live vehicles: id to longitude.
async fn vehicles(server: &TestServer) -> BTreeMap<String, f64> {
    let page = get_json(server.addr, "/ogc/collections/vehicles/items?limit=1000")
        .await
        .1;
    page["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| {
            (
                feature["id"].as_str().unwrap().to_owned(),
                feature["geometry"]["coordinates"][0].as_f64().unwrap(),
            )
        })
        .collect()
}

async fn wait_vehicles(server: &TestServer, expected: &[(&str, f32)]) -> BTreeMap<String, f64> {
    let want: BTreeMap<String, f64> = expected
        .iter()
        .map(|(id, lon)| ((*id).to_owned(), f64::from(*lon)))
        .collect();
    let mut held = BTreeMap::new();
    for _ in 0..600 {
        held = vehicles(server).await;
        let matches = held.len() == want.len()
            && want
                .iter()
                .all(|(id, lon)| held.get(id).is_some_and(|held| (held - lon).abs() < 1e-4));
        if matches {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held
}

async fn events(server: &TestServer) -> Value {
    get_json(server.addr, "/api/stats").await.1["services"]["vehicles"]["feed"]["events"].clone()
}

async fn wait_event(server: &TestServer, outcome: &str) -> Value {
    let mut seen = Value::Null;
    for _ in 0..600 {
        seen = events(server).await;
        if seen[outcome].as_u64().unwrap_or(0) > 0 {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {outcome} counted: {seen}");
}

#[actix_web::test]
async fn vehicles_move_one_leaves_the_feed_and_expires() {
    let feed = FeedServer::start(Answer::Vehicles(vec![
        ("A", -117.10),
        ("B", -117.20),
        ("C", -117.30),
    ]))
    .await;
    let server = TestServer::start(gtfs_config(&feed.url, Some(Duration::from_secs(2))));
    let first = wait_vehicles(&server, &[("A", -117.10), ("B", -117.20), ("C", -117.30)]).await;
    assert_eq!(first.len(), 3, "{first:?}");
    let one = get_json(server.addr, "/ogc/collections/vehicles/items/A")
        .await
        .1;
    let properties = &one["properties"];
    assert_eq!(properties["trip_id"], "trip-A", "{one}");
    assert_eq!(properties["route_id"], "R7");
    assert_eq!(properties["current_status"], "IN_TRANSIT_TO");
    assert_eq!(properties["occupancy_status"], "MANY_SEATS_AVAILABLE");
    assert_eq!(properties["label"], "Bus A");
    assert_eq!(properties["speed"], 8.5);
    assert!(properties["timestamp"].is_string(), "{one}");
    // A moves, B leaves the feed (and expires two seconds later), C stays.
    feed.set(Answer::Vehicles(vec![("A", -117.15), ("C", -117.30)]));
    let later = wait_vehicles(&server, &[("A", -117.15), ("C", -117.30)]).await;
    assert_eq!(later.keys().collect::<Vec<_>>(), ["A", "C"], "{later:?}");
    let counted = wait_event(&server, "notModified").await;
    assert!(counted["noPosition"].as_u64() >= Some(1), "{counted}");
    assert!(counted["poll"].as_u64() >= Some(2), "{counted}");
    let keys = feed.seen.lock().unwrap().0.clone();
    assert!(
        !keys.is_empty() && keys.iter().all(|key| key == "k-123"),
        "{keys:?}"
    );
    assert!(feed.seen.lock().unwrap().1 >= 1, "a 304 was sent");
}

#[actix_web::test]
async fn a_failing_feed_keeps_the_state_is_counted_and_recovers() {
    let feed = FeedServer::start(Answer::Vehicles(vec![("A", -117.10), ("B", -117.20)])).await;
    let server = TestServer::start(gtfs_config(&feed.url, None));
    wait_vehicles(&server, &[("A", -117.10), ("B", -117.20)]).await;
    for (answer, outcome) in [
        (Answer::Corrupt, "badProtobuf"),
        (Answer::Status(503), "httpError"),
        (Answer::Hang, "timeout"),
    ] {
        feed.set(answer);
        wait_event(&server, outcome).await;
        let ready = get_json(server.addr, "/readyz").await;
        assert_eq!(ready.0, 200, "the node still serves: {}", ready.1);
        assert_eq!(
            vehicles(&server).await.keys().collect::<Vec<_>>(),
            ["A", "B"],
            "the last state is kept through {outcome}"
        );
        // Good again: polled again (with backoff) and taken.
        feed.set(Answer::Vehicles(vec![("A", -117.11), ("B", -117.21)]));
        wait_vehicles(&server, &[("A", -117.11), ("B", -117.21)]).await;
        feed.set(Answer::Vehicles(vec![("A", -117.10), ("B", -117.20)]));
        wait_vehicles(&server, &[("A", -117.10), ("B", -117.20)]).await;
    }
    let metrics = crate::support::http(server.addr, "GET", "/metrics", &[])
        .await
        .2;
    assert!(
        metrics.contains(
            r#"featurestream_feed_events_total{service="vehicles",feed="gtfsRealtime",outcome="badProtobuf"}"#
        ),
        "{metrics}"
    );
    // The key in the URL's query is not shown.
    let body = get_json(server.addr, "/readyz").await.1;
    assert!(
        !body.to_string().contains("key=k"),
        "the feed's query stays private: {body}"
    );
}

#[actix_web::test]
async fn a_feed_written_by_googles_official_bindings_reads_field_for_field() {
    // Google's gtfs-realtime-bindings (Python, protobuf): an encoder nobody here wrote.
    let script = r#"
import sys
from google.transit import gtfs_realtime_pb2 as g
feed = g.FeedMessage()
feed.header.gtfs_realtime_version = "2.0"
feed.header.timestamp = int(sys.argv[1])
entity = feed.entity.add()
entity.id = "e1"
v = entity.vehicle
v.vehicle.id = "bus-9"
v.vehicle.label = "9"
v.vehicle.license_plate = "TX-99"
v.position.latitude = 34.0625
v.position.longitude = -117.1875
v.position.bearing = 45
v.position.speed = 7.5
v.trip.trip_id = "t9"
v.trip.route_id = "R9"
v.trip.direction_id = 1
v.trip.start_date = "20261207"
v.current_status = g.VehiclePosition.STOPPED_AT
v.occupancy_status = g.VehiclePosition.FULL
v.timestamp = int(sys.argv[1]) - 5
v.stop_id = "S4"
v.current_stop_sequence = 5
alert = feed.entity.add()
alert.id = "alert-1"
alert.alert.header_text.translation.add().text = "not a vehicle"
sys.stdout.buffer.write(feed.SerializeToString())
"#;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", script, &now_s.to_string()])
            .output()
            .expect("python3 with gtfs-realtime-bindings (scripts/test installs it)")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let feed = FeedServer::start(Answer::Raw(output.stdout)).await;
    let server = TestServer::start(gtfs_config(&feed.url, None));
    wait_vehicles(&server, &[("bus-9", -117.1875)]).await;
    let one = get_json(server.addr, "/ogc/collections/vehicles/items/bus-9")
        .await
        .1;
    assert_eq!(
        one["geometry"]["coordinates"],
        serde_json::json!([-117.1875, 34.0625])
    );
    let expected = serde_json::json!({
        "vehicle_id": "bus-9", "label": "9", "license_plate": "TX-99", "trip_id": "t9",
        "route_id": "R9", "direction_id": 1, "start_date": "20261207", "stop_id": "S4",
        "current_stop_sequence": 5, "current_status": "STOPPED_AT", "occupancy_status": "FULL",
        "bearing": 45, "speed": 7.5,
        "timestamp": featurestream::filter::format_rfc3339((now_s as i64 - 5) * 1000),
    });
    for (name, value) in expected.as_object().unwrap() {
        assert_eq!(&one["properties"][name], value, "{name}: {one}");
    }
}
