//! The second attack pass (issue 23), against the real server over real sockets: what one
//! request or one client can make the server do, and that it stays bounded.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use featurestream::config::Config;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

fn page_tracks(answer: &Value) -> Vec<i64> {
    answer["features"]
        .as_array()
        .unwrap_or_else(|| panic!("features: {answer}"))
        .iter()
        .map(|feature| feature["attributes"]["TRACKID"].as_i64().unwrap())
        .collect()
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
    let mut seen = page_tracks(&first);
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
        seen.extend(page_tracks(&answer));
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
