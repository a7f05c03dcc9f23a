//! Operations limits over real sockets: the connection cap (503 + Retry-After, or 1013),
//! the per-IP attempt rate (429), the Origin allow-list (403), the filter-message rate, the
//! heartbeat, and slow consumers that never read.

use std::collections::BTreeMap;
use std::time::Duration;

use featurestream::config::{Config, OriginPolicy, OverCap};

use crate::support::{
    TestServer, connect, expect_close, get_json, next_json, next_reply, raw_read_close,
    raw_upgrade, send, try_connect,
};

const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";

#[actix_web::test]
async fn past_the_cap_new_sessions_get_503_with_retry_after_and_existing_ones_are_untouched() {
    let mut config = Config::for_tests(5, 20.0);
    config.admission.max_connections = 2;
    let server = TestServer::start(config);
    let mut first = connect(&server.ws_url(SUBSCRIBE)).await;
    let second = connect(&server.ws_url(SUBSCRIBE)).await;
    let (status, head, _) = crate::support::raw_upgrade_head(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 503);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    for _ in 0..10 {
        next_json(&mut first).await;
    }
    drop(second);
    // The freed place is taken again once the server has seen the close.
    let (mut accepted, mut refused_while_waiting) = (false, 0);
    for _ in 0..50 {
        if try_connect(&server.ws_url(SUBSCRIBE)).await.is_ok() {
            accepted = true;
            break;
        }
        refused_while_waiting += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        accepted,
        "a place under the cap is freed when a session ends"
    );
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    assert_eq!(
        stats["connections"]["refused"]["overCapacity"].as_u64(),
        Some(1 + refused_while_waiting),
        "every refusal is counted once"
    );
}

#[actix_web::test]
async fn close_mode_accepts_then_closes_with_1013() {
    let mut config = Config::for_tests(5, 20.0);
    config.admission.max_connections = 1;
    config.admission.over_cap = OverCap::Close;
    let server = TestServer::start(config);
    let _first = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut second = connect(&server.ws_url(SUBSCRIBE)).await;
    assert_eq!(
        expect_close(&mut second).await,
        (1013, "try again later".to_owned())
    );
}

#[actix_web::test]
async fn too_many_attempts_from_one_address_get_429() {
    let mut config = Config::for_tests(5, 20.0);
    config.admission.connect_rate = Some(1.0);
    config.admission.rate_limit_loopback = true;
    let server = TestServer::start(config);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(match try_connect(&server.ws_url(SUBSCRIBE)).await {
            Ok(_) => 101,
            Err((status, _)) => status,
        });
    }
    assert_eq!(statuses, [101, 101, 429, 429]);
    let (status, head, _) = crate::support::raw_upgrade_head(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 429);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
}

#[actix_web::test]
async fn loopback_is_not_rate_limited_by_default() {
    let mut config = Config::for_tests(5, 20.0);
    config.admission.connect_rate = Some(1.0);
    let server = TestServer::start(config);
    for _ in 0..6 {
        connect(&server.ws_url(SUBSCRIBE)).await;
    }
}

#[actix_web::test]
async fn origins_outside_the_allow_list_get_403() {
    let server = TestServer::simulated(5);
    let (status, _) = raw_upgrade(
        server.addr,
        SUBSCRIBE,
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        &format!("http://{}", server.addr),
    ] {
        let (status, _) = raw_upgrade(server.addr, SUBSCRIBE, &[("Origin", origin)]).await;
        assert_eq!(status, 101, "{origin}");
    }
    let mut config = Config::for_tests(5, 20.0);
    config.admission.origins = OriginPolicy::List(vec!["https://maps.example.com".into()]);
    let listed = TestServer::start(config);
    assert_eq!(
        raw_upgrade(
            listed.addr,
            SUBSCRIBE,
            &[("Origin", "https://maps.example.com")]
        )
        .await
        .0,
        101
    );
    assert_eq!(
        raw_upgrade(
            listed.addr,
            SUBSCRIBE,
            &[("Origin", "http://localhost:3000")]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        raw_upgrade(listed.addr, "/", &[("Origin", "https://other.example")])
            .await
            .0,
        403
    );
}

#[actix_web::test]
async fn filter_floods_get_error_replies_then_1008() {
    let mut config = Config::for_tests(5, 20.0);
    config.session.filter_rate = Some(1.0);
    let server = TestServer::start(config);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut errors = Vec::new();
    for _ in 0..4 {
        send(&mut socket, r#"{"filter":{"where":"speed > 1"}}"#).await;
        let (reply, _) = next_reply(&mut socket).await;
        errors.push(reply["error"].clone());
    }
    assert_eq!(errors[0], serde_json::Value::Null);
    assert_eq!(errors[1], serde_json::Value::Null);
    assert_eq!(
        errors[3][0],
        "Invalid filter: too many filter messages; at most 1 per second."
    );
    for _ in 0..20 {
        send(&mut socket, r#"{"filter":{}}"#).await;
    }
    assert_eq!(
        expect_close(&mut socket).await,
        (1008, "too many filter messages".to_owned())
    );
}

#[actix_web::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let mut config = Config::for_tests(5, 1.0);
    config.session.heartbeat_interval = Duration::from_secs(1);
    let server = TestServer::start(config);
    let (status, mut stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    // This client reads (so it sees the close) but never answers the pings.
    assert_eq!(raw_read_close(&mut stream).await, 1001);
}

/// Non-readers are conflated, then closed as slow consumers, while a reader that keeps up is
/// never conflated. "Keeps up" must not depend on the machine's speed: the non-readers take
/// every track (200 observations a tick, so their buffers fill in seconds), the reader filters
/// five tracks (5 a tick), so its 512 KiB queue holds about 20 s of its stream: only a reader
/// stalled for longer than any wait in this suite could be conflated.
#[actix_web::test]
async fn clients_that_never_read_are_closed_while_a_reader_is_not_conflated() {
    const TRACKS: i64 = 200;
    let mut config = Config::for_tests(TRACKS as usize, 20.0);
    config.session.queue_bytes = 512 * 1024;
    config.session.slow_consumer_after = Duration::from_secs(1);
    let server = TestServer::start(config);
    let mut reader = connect(&server.ws_url(&format!(
        "{SUBSCRIBE}&where={}",
        crate::support::percent_encode("TRACKID <= 5")
    )))
    .await;
    let mut stalled = Vec::new();
    for _ in 0..TRACKS {
        let (status, stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
        assert_eq!(status, 101);
        stalled.push(stream);
    }
    assert_eq!(
        open_connections(&server).await,
        202,
        "the reader, 200 non-readers, this request"
    );
    let mut object_ids: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut closed = false;
    // Bounded: 12,000 observations are two minutes of the reader's stream.
    for received in 1..=12_000 {
        let feature = next_json(&mut reader).await;
        let attributes = &feature["attributes"];
        let object_id = attributes["OBJECTID"].as_i64().expect("OBJECTID");
        // Snapshots resend the latest state under ids of their own range: judge the live
        // observations' sequence only.
        if object_id < featurestream::latest::RESEND_IDS {
            object_ids
                .entry(attributes["TRACKID"].as_i64().expect("TRACKID"))
                .or_default()
                .push(object_id);
        }
        if received % 100 == 0 {
            let (_, stats) = get_json(server.addr, "/api/stats").await;
            if stats["services"]["vehicles"]["sessions"] == 1 {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "the 200 non-reading sessions were closed as slow consumers"
    );
    // For the operator's note (run with --nocapture): the whole test process's RSS.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|line| line.starts_with("VmRSS"))
        .unwrap_or("VmRSS: unknown");
    eprintln!("200 non-reading clients closed; process {rss}");
    assert_eq!(
        object_ids.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "the reader gets exactly the tracks its filter selects"
    );
    // Every tick gives each track a new OBJECTID, TRACKS further on: a skipped tick shows as
    // a larger step. The broker itself merges a tick into the next when it is still busy
    // with the previous (every session then skips it, counted in `batchesMerged`); beyond
    // those, a skipped tick would be this reader conflated.
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    let merged = stats["services"]["vehicles"]["batchesMerged"]
        .as_i64()
        .expect("batchesMerged");
    for (track, ids) in &object_ids {
        assert!(
            ids.windows(2)
                .all(|pair| (pair[1] - pair[0]) % TRACKS == 0 && pair[1] > pair[0]),
            "track {track}: observations in order"
        );
        let skipped = (ids[ids.len() - 1] - ids[0]) / TRACKS + 1 - ids.len() as i64;
        assert!(
            skipped <= merged,
            "track {track}: the reading client missed {skipped} ticks, the broker merged {merged}"
        );
    }
    // Their connections are dropped too once the close frame could not be written for the
    // linger period, though the clients (still open here) never read or close: the server
    // side's 200 connections go away. Polled, bounded.
    let mut released = false;
    for _ in 0..300 {
        if open_connections(&server).await == 2 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        released,
        "the server dropped the non-readers' connections ({} open)",
        open_connections(&server).await
    );
    drop(stalled);
}

/// TCP connections the server holds open, counting the one asking.
async fn open_connections(server: &TestServer) -> u64 {
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    stats["openConnections"].as_u64().expect("openConnections")
}

/// A burst of connections (a ramp, every viewer reconnecting after a restart) waits in the
/// listen queue instead of having its SYNs dropped: `server::listen` asks the kernel for the
/// configured backlog, where `std::net::TcpListener::bind` asks for 128.
#[test]
fn the_listen_queue_holds_a_burst_of_connections_nobody_has_accepted_yet() {
    let config = Config::for_tests(5, 20.0);
    assert_eq!(config.backlog, 4096, "the default backlog");
    let listener = featurestream::server::listen(([127, 0, 0, 1], 0).into(), config.backlog)
        .expect("listen on an ephemeral port");
    let addr = listener.local_addr().expect("local address");
    let mut queued = Vec::new();
    for _ in 0..600 {
        match std::net::TcpStream::connect_timeout(&addr, crate::support::WAIT) {
            Ok(stream) => queued.push(stream),
            Err(err) => panic!("connection {} was not queued: {err}", queued.len() + 1),
        }
    }
    assert_eq!(queued.len(), 600);
}

/// A client that opens a connection and never finishes its request head gets 408 once the
/// configured time is up, and its connection is closed.
#[actix_web::test]
async fn a_request_head_that_never_ends_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = Config::for_tests(5, 20.0);
    assert_eq!(
        config.request_timeout,
        Duration::from_secs(30),
        "the default"
    );
    config.request_timeout = Duration::from_secs(1);
    let server = TestServer::start(config);
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(format!("GET {SUBSCRIBE} HTTP/1.1\r\nHost: 127.0.0.1\r\n").as_bytes())
        .await
        .expect("send half a request head");
    let mut answer = Vec::new();
    tokio::time::timeout(crate::support::WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// The default gives a slow client (a saturated machine, a burst of reconnects) 30 s for its
/// request head: one finished after 6 s, past actix's own default of 5 s, is still upgraded.
#[actix_web::test]
async fn a_request_head_finished_after_6_s_is_still_upgraded_by_default() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::simulated(5);
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(format!("GET {SUBSCRIBE} HTTP/1.1\r\nHost: 127.0.0.1\r\n").as_bytes())
        .await
        .expect("send half a request head");
    tokio::time::sleep(Duration::from_secs(6)).await;
    stream
        .write_all(
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("send the rest");
    let mut answer = [0u8; 12];
    tokio::time::timeout(crate::support::WAIT, stream.read_exact(&mut answer))
        .await
        .expect("the server answers")
        .expect("read the status line");
    assert_eq!(
        &answer,
        b"HTTP/1.1 101",
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// `Upgrade: websocket` on a route that is not a WebSocket endpoint is answered as plain
/// HTTP (400) at once: before, the handler waited for a body that only a 101 would feed, and
/// the socket (and on the SSE endpoint a session slot) was held forever.
#[actix_web::test]
async fn upgrade_headers_on_plain_endpoints_get_400_and_hold_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = Config::for_tests(5, 20.0);
    config.admission.max_connections = 3;
    let server = TestServer::start(config);
    for path in [
        "/api/messages",
        "/api/services/vehicles/events",
        "/healthz",
        "/arcgis/rest/services/vehicles/StreamServer?f=json",
    ] {
        for _ in 0..20 {
            let mut stream = tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("connect");
            let method = if path == "/api/messages" {
                "POST"
            } else {
                "GET"
            };
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            stream.write_all(request.as_bytes()).await.expect("send");
            let mut answer = Vec::new();
            tokio::time::timeout(crate::support::WAIT, stream.read_to_end(&mut answer))
                .await
                .expect("answered and closed at once")
                .expect("read");
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
            assert!(
                answer.contains("WebSocket upgrades are accepted on WebSocket endpoints only"),
                "{answer}"
            );
        }
    }
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    assert_eq!(stats["activeConnections"], 0, "no session slot is held");
    // The server side of those 80 connections is gone: it holds only the one asking.
    let mut released = false;
    for _ in 0..100 {
        if open_connections(&server).await == 1 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released, "{} open", open_connections(&server).await);
    // Real viewers still get in, up to the cap.
    for _ in 0..3 {
        connect(&server.ws_url(SUBSCRIBE)).await;
    }
}

/// A body announced and not sent is answered 408 after the body timeout, not held forever.
#[actix_web::test]
async fn a_request_body_that_never_arrives_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::simulated(5);
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"mess",
        )
        .await
        .expect("send part of the body");
    let mut answer = Vec::new();
    let wait = featurestream::http::body::BODY_TIMEOUT + crate::support::WAIT;
    tokio::time::timeout(wait, stream.read_to_end(&mut answer))
        .await
        .expect("answered within the body timeout")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
}

/// Bound to loopback, only local host names are served: a DNS-rebinding page (its own name
/// resolved to 127.0.0.1, so Host and Origin agree) gets 403 on every endpoint; untrusted
/// forwarding headers change nothing.
#[actix_web::test]
async fn dns_rebinding_and_untrusted_forwarding_headers_are_refused() {
    let server = TestServer::simulated(5);
    let rebind = [
        ("Host", "rebind.attacker.example"),
        ("Origin", "http://rebind.attacker.example"),
    ];
    let (status, head, _) = crate::support::raw_upgrade_head(server.addr, SUBSCRIBE, &rebind).await;
    assert_eq!(status, 403, "{head}");
    for path in [
        "/",
        "/api/stats",
        "/arcgis/rest/services/vehicles/StreamServer?f=json",
    ] {
        let (status, _, body) = crate::support::http(
            server.addr,
            "GET",
            path,
            &[("Host", "rebind.attacker.example:8000")],
        )
        .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("is not served here"), "{body}");
    }
    for host in ["localhost:8000", "127.0.0.1", "[::1]:8000"] {
        let (status, _, _) =
            crate::support::http(server.addr, "GET", "/healthz", &[("Host", host)]).await;
        assert_eq!(status, 200, "{host}");
    }
    // An Origin matching a forwarded host is not same-host unless the proxy is trusted.
    let forged = [
        ("X-Forwarded-Host", "evil.example"),
        ("Origin", "https://evil.example"),
    ];
    let (status, _) = raw_upgrade(server.addr, SUBSCRIBE, &forged).await;
    assert_eq!(status, 403);
}

/// Idle connections (partial request heads) from one address are capped: past the limit a
/// new one is answered 429 and closed before anything is read, and a place frees when one
/// closes (before: 19,992 heads from one address filled the open-file limit).
#[actix_web::test]
async fn connections_from_one_address_past_its_limit_get_429() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = Config::for_tests(5, 20.0);
    config.admission.max_connections_per_ip = Some(5);
    // Loopback is exempt by default; count it here (the test client is on loopback).
    config.admission.rate_limit_loopback = true;
    config.admission.connect_rate = None;
    let server = TestServer::start(config);
    // The server's count, asked from another loopback address (127.0.0.2), which has places
    // of its own: the question never takes one of 127.0.0.1's.
    let open_connections = || async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(([127, 0, 0, 2], 0).into())
            .expect("bind 127.0.0.2");
        let mut stream = socket.connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("ask");
        let mut answer = Vec::new();
        tokio::time::timeout(crate::support::WAIT, stream.read_to_end(&mut answer))
            .await
            .expect("answered")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (_, body) = answer.split_once("\r\n\r\n").expect("a response");
        let stats: serde_json::Value = serde_json::from_str(body).expect("JSON");
        stats["openConnections"].as_u64().expect("openConnections")
    };
    let wait_for = |expected: u64| {
        let open_connections = &open_connections;
        async move {
            for _ in 0..200 {
                if open_connections().await == expected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the server never held {expected} connections");
        }
    };
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("half a request head");
        idle.push(stream);
    }
    // Five idle ones from 127.0.0.1, and the question from 127.0.0.2.
    wait_for(6).await;
    // Health checks always get through (hardening.rs); anything else is refused.
    let (status, _, refused) = crate::support::http(server.addr, "GET", "/api/stats", &[]).await;
    assert_eq!(status, 429, "{refused}");
    assert!(
        refused.contains("Too many connections from this address"),
        "{refused}"
    );
    drop(idle.pop());
    wait_for(5).await;
    let (status, _, _) = crate::support::http(server.addr, "GET", "/api/stats", &[]).await;
    assert_eq!(status, 200, "a place frees when a connection closes");
}
