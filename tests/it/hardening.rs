//! The second attack pass (issue 23), against the real server over real sockets: what one
//! request or one client can make the server do, and that it stays bounded.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use featurestream::config::Config;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::feature_layer::tracks;
use crate::support::{TestServer, WAIT, connect, get_json, http, next_json, post_json, send};

const LAYER: &str = "/arcgis/rest/services/vehicles/FeatureServer/0";

fn unsimulated() -> Config {
    let mut config = Config::for_tests(1, 1.0);
    config.services[0].simulator = None;
    config
}

fn observation(track: i64, speed: f64) -> Value {
    json!({
        "attributes": {"TRACKID": track, "name": format!("bus {track}"), "route": "R1",
                       "speed": speed, "heading": 90, "active": true, "observed": 1_000 + track},
        "geometry": {"x": -117.0 - track as f64 / 1000.0, "y": 34.05}
    })
}

async fn publish(addr: SocketAddr, features: Vec<Value>) -> Value {
    let (status, answer) = post_json(
        addr,
        "/api/services/vehicles/features",
        &[],
        &json!(features).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Live tracks, as the feature layer counts them.
async fn live_tracks(addr: SocketAddr) -> Value {
    let path = format!("{LAYER}/query?where=1%3D1&returnCountOnly=true&f=json");
    get_json(addr, &path).await.1["count"].clone()
}

/// An HTTP/1.1 request from the loopback address `source` (127.0.0.x: another client).
async fn http_from(
    source: [u8; 4],
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the client's address");
    let mut stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect")
        .expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// Critical 1: a sort on 100,000 keys held a service's broker for 20 s. Sort keys are capped
/// (the error names the parameter), a field named twice is sorted on once, and a viewer
/// connected meanwhile keeps receiving.
#[actix_web::test]
async fn a_query_with_a_hundred_thousand_sort_keys_is_refused_and_the_stream_goes_on() {
    let server = TestServer::start(Config::for_tests(50, 20.0));
    let mut viewer = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
    send(
        &mut viewer,
        r#"{"format":"json","spatialReference":{"wkid":4326}}"#,
    )
    .await;
    let _echo = next_json(&mut viewer).await;
    let keys = vec!["speed"; 100_000].join(",");
    let (status, _, body) = http_from(
        [127, 0, 0, 1],
        server.addr,
        "POST",
        &format!("{LAYER}/query"),
        &format!("where=1%3D1&f=json&orderByFields={keys}"),
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["error"]["code"], 400, "{answer}");
    assert!(
        answer["error"]["details"]
            .to_string()
            .contains("orderByFields: at most 16 sort keys"),
        "{answer}"
    );
    let (status, twice) = get_json(
        server.addr,
        &format!("{LAYER}/query?where=1%3D1&orderByFields=speed%20DESC,speed,speed%20ASC&outFields=TRACKID,speed"),
    )
    .await;
    assert_eq!(status, 200);
    let speeds: Vec<f64> = twice["features"]
        .as_array()
        .unwrap_or_else(|| panic!("{twice}"))
        .iter()
        .map(|feature| feature["attributes"]["speed"].as_f64().unwrap())
        .collect();
    assert!(
        speeds.windows(2).all(|pair| pair[0] >= pair[1]),
        "sorted by the first key only: {speeds:?}"
    );
    for _ in 0..3 {
        let frame = next_json(&mut viewer).await;
        assert_eq!(frame["type"], "featureResult", "{frame}");
    }
}

/// Medium 6: another client's 100 paged queries used to evict this client's order (its next
/// page then repeated and missed tracks). Orders are kept per client; a client evicts only
/// its own, and a later page of an evicted order is refused, never answered from a new one.
#[actix_web::test]
async fn one_clients_paged_queries_never_disturb_another_clients_paging() {
    let mut config = unsimulated();
    config.ingest.max_record_count = 4;
    let server = TestServer::start(config);
    publish(
        server.addr,
        (1..=10)
            .map(|track| observation(track, track as f64))
            .collect(),
    )
    .await;
    let page = |offset: usize| {
        format!(
            "{LAYER}/query?where=1%3D1&orderByFields=speed&outFields=TRACKID,speed&resultOffset={offset}&resultRecordCount=4&f=json"
        )
    };
    let (status, _, first) = http_from([127, 0, 0, 2], server.addr, "GET", &page(0), "").await;
    assert_eq!(status, 200);
    let first: Value = serde_json::from_str(&first).unwrap();
    let mut seen = tracks(&first);
    assert_eq!(seen, [1, 2, 3, 4]);
    // Another client pages through 100 distinct queries.
    for speed in 0..100 {
        let (status, _, body) = http_from(
            [127, 0, 0, 3],
            server.addr,
            "GET",
            &format!("{LAYER}/query?where=TRACKID%20%3C%3E%20{}&resultOffset=0&resultRecordCount=1&f=json", 1000 + speed),
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // Speeds reverse: a new order would now start with track 10.
    publish(
        server.addr,
        (1..=10)
            .map(|track| {
                let mut moved = observation(track, 100.0 - track as f64);
                moved["attributes"]["observed"] = json!(5_000 + track);
                moved
            })
            .collect(),
    )
    .await;
    for offset in [4, 8] {
        let (status, _, body) =
            http_from([127, 0, 0, 2], server.addr, "GET", &page(offset), "").await;
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_str(&body).unwrap();
        seen.extend(tracks(&answer));
    }
    assert_eq!(
        seen.iter().copied().collect::<BTreeSet<i64>>(),
        (1..=10).collect(),
        "every track once, in the order of the first page: {seen:?}"
    );
    assert_eq!(seen.len(), 10, "{seen:?}");
    // The other client's oldest orders were evicted by its own newer ones: its later page is
    // refused with a clear error.
    let (status, _, body) = http_from(
        [127, 0, 0, 3],
        server.addr,
        "GET",
        &format!(
            "{LAYER}/query?where=TRACKID%20%3C%3E%201000&resultOffset=1&resultRecordCount=1&f=json"
        ),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"]["code"], 400, "{answer}");
    assert!(
        answer["error"]["details"]
            .to_string()
            .contains("resultOffset"),
        "{answer}"
    );
}

/// Critical 1 (rate) and Low 16: queries are limited per client (429, Retry-After, an
/// ArcGIS error body), and health checks always get through, even at the limits.
#[actix_web::test]
async fn queries_are_rate_limited_per_client_and_health_checks_always_pass() {
    let mut config = unsimulated();
    config.admission.query_rate = Some(2.0);
    config.admission.rate_limit_loopback = true;
    let server = TestServer::start(config);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, head, body) = http_from(
            [127, 0, 0, 4],
            server.addr,
            "GET",
            &format!("{LAYER}/query?where=1%3D1&returnCountOnly=true&f=json"),
            "",
        )
        .await;
        if status == 429 {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: 1"),
                "{head}"
            );
            let answer: Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(answer["error"]["code"], 429, "{answer}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..4], [200; 4], "the burst: {statuses:?}");
    assert!(statuses[4..].contains(&429), "{statuses:?}");
    let (status, _, _) = http_from(
        [127, 0, 0, 5],
        server.addr,
        "GET",
        &format!("{LAYER}/query?where=1%3D1&f=json"),
        "",
    )
    .await;
    assert_eq!(status, 200, "another client is not limited by the first");
    for _ in 0..50 {
        let (status, _, _) = http(server.addr, "GET", "/healthz", &[]).await;
        assert_eq!(status, 200);
    }
}

/// Low 16: an address at its connection cap (loopback limited too) still gets its health and
/// readiness checks answered; anything else from it is refused 429.
#[actix_web::test]
async fn an_address_at_its_connection_cap_still_passes_health_checks() {
    let mut config = unsimulated();
    config.admission.rate_limit_loopback = true;
    config.admission.max_connections_per_ip = Some(2);
    let server = TestServer::start(config);
    let source = [127, 0, 0, 6];
    let mut held = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let mut stream = socket.connect(server.addr).await.unwrap();
        // Half a request head: the connection stays open and counted.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // The server has taken both (they hold their places) before the checks begin.
    let mut open = 0;
    for _ in 0..200 {
        let (_, _, stats) = http_from([127, 0, 0, 7], server.addr, "GET", "/api/stats", "").await;
        let stats: Value = serde_json::from_str(&stats).unwrap();
        open = stats["openConnections"].as_u64().unwrap();
        if open >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(open >= 3, "the held connections are open: {open}");
    for _ in 0..3 {
        let (status, _, body) = http_from(source, server.addr, "GET", "/healthz", "").await;
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = http_from(source, server.addr, "GET", "/readyz", "").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = http_from(source, server.addr, "GET", "/api/stats", "").await;
    assert_eq!(status, 429, "{body}");
    drop(held);
}

/// A service with a text track id, a string field with no length and polyline geometry.
fn sensors() -> Config {
    use featurestream::feature::{Field, FieldType, GeometryType, Schema};
    use featurestream::geometry::Wkid;
    let mut config = unsimulated();
    let schema = Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("TRACKID", FieldType::String),
            Field::new("note", FieldType::String).nullable(),
            Field::new("observed", FieldType::Date),
        ],
        "OBJECTID",
        "TRACKID",
        GeometryType::Polyline,
        Wkid::Wgs84,
    )
    .unwrap();
    let mut service = config.services[0].clone();
    service.name = "sensors".into();
    service.schema = schema;
    config.services.push(service);
    config
}

fn reading(track: &str, note: &str, observed: i64, vertices: usize) -> Value {
    let path: Vec<[f64; 2]> = (0..vertices)
        .map(|vertex| [-117.0 + vertex as f64 * 1e-6, 34.0])
        .collect();
    json!({"attributes": {"TRACKID": track, "note": note, "observed": observed},
           "geometry": {"paths": [path]}})
}

fn codes(report: &Value) -> Vec<(u64, String)> {
    report["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors: {report}"))
        .iter()
        .map(|error| {
            (
                error["index"].as_u64().unwrap(),
                error["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Medium 7, 8 and High 9: one observation is bounded (a string field without a length, the
/// vertices of a geometry, a text track id) and its time may not lie far in the future (a
/// year-9999 time froze its track forever); each refusal has its own code, and the rest of
/// the document is taken.
#[actix_web::test]
async fn an_observation_is_bounded_in_size_vertices_track_id_and_time() {
    let server = TestServer::start(sensors());
    let now = featurestream::broker::now_ms();
    let (status, report) = post_json(
        server.addr,
        "/api/services/sensors/features",
        &[],
        &json!([
            reading("a", "fine", now, 3),
            reading("b", &"x".repeat(4097), now, 3),
            reading("c", "fine", now, 10_001),
            reading(&"d".repeat(257), "fine", now, 3),
            reading("e", "fine", 253_402_300_799_000, 3),
            reading("f", &"x".repeat(4096), now + 60_000, 10_000),
        ])
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(
        codes(&report),
        [
            (1, "tooLong".to_owned()),
            (2, "tooManyVertices".to_owned()),
            (3, "trackIdTooLong".to_owned()),
            (4, "timeInFuture".to_owned()),
        ],
        "{report}"
    );
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    let rejected = &stats["services"]["sensors"]["observationsRejected"];
    assert_eq!(rejected["timeInFuture"], 1, "{stats}");
    assert_eq!(rejected["tooManyVertices"], 1, "{stats}");
    assert_eq!(rejected["trackIdTooLong"], 1, "{stats}");
}

/// Medium 8: an operator deletes a track (a frozen one, a vehicle out of service): it leaves
/// the state and every viewer that had it gets its delete message; a later observation
/// starts it again.
#[actix_web::test]
async fn an_admin_deletes_a_track_and_viewers_are_told() {
    let server = TestServer::start(unsimulated());
    publish(server.addr, vec![observation(1, 1.0), observation(2, 2.0)]).await;
    let mut viewer = connect(&server.ws_url("/arcgis/ws/services/vehicles/custom")).await;
    send(
        &mut viewer,
        r#"{"format":"json","spatialReference":{"wkid":4326}}"#,
    )
    .await;
    let _echo = next_json(&mut viewer).await;
    let snapshot = next_json(&mut viewer).await;
    assert_eq!(tracks(&snapshot).len(), 2, "{snapshot}");
    let path = "/api/services/vehicles/tracks/2";
    let (status, _, body) = http(server.addr, "DELETE", path, &[]).await;
    assert_eq!(status, 200, "{body}");
    let delete = next_json(&mut viewer).await;
    assert_eq!(delete, json!({"type": "delete", "trackIds": [2]}));
    let (status, _, body) = http(server.addr, "DELETE", path, &[]).await;
    assert_eq!(status, 404, "gone already: {body}");
    let (status, _, body) = http(
        server.addr,
        "DELETE",
        "/api/services/vehicles/tracks/x",
        &[],
    )
    .await;
    assert_eq!(status, 404, "not an integer track id: {body}");
    assert_eq!(live_tracks(server.addr).await, 1);
}

/// Low 13 and 15: the report says what became of every feature (one replaced while waiting
/// by a newer observation of its track is stale, not accepted), and a double track id keys
/// `0` and `-0.0` as one track.
#[actix_web::test]
async fn reports_tell_each_features_fate_and_numeric_track_ids_are_normalised() {
    let server = TestServer::start(unsimulated());
    let mut newer = observation(5, 9.0);
    newer["attributes"]["observed"] = json!(9_000);
    let report = publish(server.addr, vec![observation(5, 1.0), newer]).await;
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["staleIndexes"], json!([0]), "{report}");

    use featurestream::feature::{Field, FieldType, GeometryType, Schema};
    use featurestream::geometry::Wkid;
    let mut config = unsimulated();
    config.services[0].schema = Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("TRACKID", FieldType::Double),
        ],
        "OBJECTID",
        "TRACKID",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .unwrap();
    let doubles = TestServer::start(config);
    for id in ["0", "-0.0", "0.0"] {
        let (status, report) = post_json(
            doubles.addr,
            "/api/services/vehicles/features",
            &[],
            &format!(r#"[{{"attributes":{{"TRACKID":{id}}},"geometry":{{"x":1,"y":2}}}}]"#),
        )
        .await;
        assert_eq!(status, 200, "{report}");
    }
    assert_eq!(
        live_tracks(doubles.addr).await,
        1,
        "0, -0.0 and 0.0 are one track"
    );
}

/// Low 12: an NDJSON line that arrives a byte now and then held its request open forever
/// (each chunk came within the timeout). A line must now arrive whole within the body
/// timeout: the server answers 408 and closes.
#[actix_web::test]
async fn an_ndjson_line_dripped_a_byte_at_a_time_is_cut_off() {
    let server = TestServer::start(unsimulated());
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/services/vehicles/features HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let line = json!(observation(1, 1.0)).to_string();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // A byte every 400 ms: the whole line would take minutes; bounded at 60 s.
    for byte in line.bytes().cycle().take(150) {
        if stream
            .write_all(format!("1\r\n{}\r\n", byte as char).as_bytes())
            .await
            .is_err()
        {
            break;
        }
        match tokio::time::timeout(
            std::time::Duration::from_millis(400),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => {
                answer.extend_from_slice(&buffer[..read]);
                if answer.windows(4).any(|window| window == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "answered: {answer:?}");
}

/// Low 14: a field name from a services file reached the debug page's legend as markup. Field
/// names follow ArcGIS's rules (a letter or `_`, then letters, digits, `_`): anything else
/// refuses to start, naming the field (and the page builds its legend from text nodes).
#[test]
fn a_services_file_field_name_that_is_not_a_name_is_refused_at_start() {
    let directory =
        std::env::temp_dir().join(format!("featurestream-bad-names-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("services.json");
    std::fs::write(
        &path,
        r#"{"services": [{"name": "sensors", "trackIdField": "SENSOR",
             "fields": [{"name": "OBJECTID", "type": "esriFieldTypeOID"}, {"name": "SENSOR", "type": "esriFieldTypeInteger"},
                        {"name": "<img src=x onerror=alert(1)>", "type": "esriFieldTypeDouble", "nullable": true}]}]}"#,
    )
    .unwrap();
    let args =
        ["featurestream", "--services", path.to_str().unwrap()].map(std::ffi::OsString::from);
    let Err(error) = featurestream::config::Config::from_sources(args, Vec::new()) else {
        panic!("a field named like markup is refused");
    };
    let text = error.to_string();
    assert!(
        text.contains("field name \"<img src=x onerror=alert(1)>\" is not valid"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}
