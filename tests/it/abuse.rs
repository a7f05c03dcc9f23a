//! One client must not take the server down: every byte queued to a session counts against
//! its limit (replies and control frames included), every kind of inbound message is
//! rate-limited, and only a pong proves a client is alive. Over real sockets, against the
//! real server, with clients that provoke replies and never read them.

use std::time::Duration;

use featurestream::config::Config;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{
    TestServer, get_json, masked_frame, percent_encode, raw_read_close, raw_upgrade,
};

const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";

/// Writes `frame` until the server has closed the session (its stats count a close with
/// `code`) or the connection is gone; returns the frames written. Bounded by `max_frames`.
async fn flood_until_closed(
    server: &TestServer,
    stream: &mut tokio::net::TcpStream,
    frame: &[u8],
    code: u16,
    max_frames: usize,
) -> usize {
    for sent in 1..=max_frames {
        let written = tokio::time::timeout(crate::support::WAIT, stream.write_all(frame)).await;
        if !matches!(written, Ok(Ok(()))) {
            return sent;
        }
        if sent % 500 == 0 {
            let (_, stats) = get_json(server.addr, "/api/stats").await;
            if stats["closes"][code.to_string()].as_u64() == Some(1) {
                return sent;
            }
        }
    }
    panic!("the session was not closed after {max_frames} frames");
}

async fn closes(server: &TestServer) -> Value {
    get_json(server.addr, "/api/stats").await.1["closes"].clone()
}

/// Pongs to a client that pings and never reads: counted against the queue, so the session
/// ends as a slow consumer instead of growing the server's memory (before: 1.8 GB in 6 s).
#[actix_web::test]
async fn pongs_to_a_client_that_never_reads_are_bounded() {
    let mut config = Config::for_tests(5, 1.0);
    config.session.queue_bytes = 64 * 1024;
    config.session.message_rate = None;
    let server = TestServer::start(config);
    let (status, mut stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    let ping = masked_frame(0x9, &[b'p'; 125]);
    flood_until_closed(&server, &mut stream, &ping, 1008, 400_000).await;
    assert_eq!(closes(&server).await, json!({"1008": 1}));
}

/// A large filter that selects nothing, and 7-byte non-JSON frames each answered with an
/// error reply carrying that filter: the amplification is bounded by the queue (before:
/// 4.7 MB in took 4.1 GB).
#[actix_web::test]
async fn error_replies_a_client_provokes_and_never_reads_are_bounded() {
    let mut config = Config::for_tests(5, 1.0);
    config.session.queue_bytes = 64 * 1024;
    config.session.message_rate = None;
    let server = TestServer::start(config);
    let clause = crate::support::clause_selecting_nothing(500);
    let path = format!("{SUBSCRIBE}&where={}", percent_encode(&clause));
    let (status, mut stream) = raw_upgrade(server.addr, &path, &[]).await;
    assert_eq!(status, 101);
    let junk = masked_frame(0x1, b"garbage");
    let sent = flood_until_closed(&server, &mut stream, &junk, 1008, 100_000).await;
    assert_eq!(closes(&server).await, json!({"1008": 1}));
    eprintln!("closed after {sent} junk frames");
}

/// Every kind of inbound message counts against the session's message rate: past it, 1008.
#[actix_web::test]
async fn a_flood_of_any_kind_of_message_is_closed_with_1008() {
    let mut config = Config::for_tests(5, 1.0);
    // One a second, bursts of two: refilling cannot matter however slowly the server reads.
    config.session.message_rate = Some(1.0);
    let server = TestServer::start(config);
    for frame in [
        masked_frame(0x9, b"ping"),
        masked_frame(0xA, b"pong"),
        masked_frame(0x1, b"ping"),
        masked_frame(0x1, b"not json"),
    ] {
        let (status, mut stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
        assert_eq!(status, 101);
        // Five times the burst, in one write (nothing left unread when the server closes).
        stream.write_all(&frame.repeat(10)).await.expect("send");
        assert_eq!(raw_read_close(&mut stream).await, 1008);
    }
    assert_eq!(closes(&server).await, json!({"1008": 4}));
}

/// Only a pong restarts the heartbeat: a client that keeps sending other frames but never
/// answers a ping is closed (1001) after two intervals.
#[actix_web::test]
async fn frames_that_are_not_pongs_do_not_keep_a_silent_client_alive() {
    let mut config = Config::for_tests(5, 1.0);
    config.session.heartbeat_interval = Duration::from_secs(1);
    let server = TestServer::start(config);
    let (status, stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    let (mut reader, mut writer) = stream.into_split();
    let chatter = actix_web::rt::spawn(async move {
        let text = masked_frame(0x1, b"ping");
        // Bounded: 20 s of text frames, 5 a second, or until the server closes.
        for _ in 0..100 {
            if writer.write_all(&text).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(raw_read_close(&mut reader).await, 1001);
    chatter.abort();
}

/// A service evaluates at most its budget of conditions per feature over its distinct where
/// clauses: a new distinct clause past it is refused with a filter reply (the old filter stays),
/// a clause already in use costs nothing more, and the budget frees when sessions leave. The
/// same holds for clauses on the subscribe URL (400 before the upgrade).
#[actix_web::test]
async fn distinct_where_clauses_past_the_service_budget_are_refused_with_a_reply() {
    use crate::support::{connect, next_reply, send, try_connect};
    let mut config = Config::for_tests(5, 20.0);
    config.session.max_service_where_nodes = 5;
    let server = TestServer::start(config);
    let three = "speed > 1 OR speed > 2";
    let mut first = connect(&server.ws_url(SUBSCRIBE)).await;
    send(&mut first, &json!({"filter": {"where": three}}).to_string()).await;
    assert_eq!(next_reply(&mut first).await.0["error"], Value::Null);
    let mut second = connect(&server.ws_url(SUBSCRIBE)).await;
    send(
        &mut second,
        r#"{"filter":{"where":"speed > 5 OR speed < 1"}}"#,
    )
    .await;
    let (reply, _) = next_reply(&mut second).await;
    assert_eq!(reply["filter"], json!({}), "the old filter stays");
    assert!(
        reply["error"][0].as_str().is_some_and(|error| error
            .contains("as many distinct where clauses as it can (5 conditions in all)")),
        "{reply}"
    );
    // The same clause, however written, shares the cost.
    let same = "NOT NOT (speed > 1 OR speed > 2)";
    send(&mut second, &json!({"filter": {"where": same}}).to_string()).await;
    assert_eq!(next_reply(&mut second).await.0["error"], Value::Null);
    let url = format!(
        "{SUBSCRIBE}&where={}",
        percent_encode("speed > 7 OR speed < 0")
    );
    let (status, body) = try_connect(&server.ws_url(&url))
        .await
        .expect_err("refused");
    assert_eq!(status, 400, "{body}");
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    assert_eq!(stats["services"]["vehicles"]["whereConditions"], 3);
    drop((first, second));
    let mut freed = false;
    for _ in 0..100 {
        if try_connect(&server.ws_url(&url)).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the budget frees when the sessions leave");
}

/// The broker's lag and the batches it merged while busy are in `/metrics`.
#[actix_web::test]
async fn the_broker_lag_is_in_metrics() {
    let server = TestServer::simulated(5);
    let (status, _, text) = crate::support::http(server.addr, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200);
    for name in [
        "featurestream_broker_lag_seconds{service=\"vehicles\"}",
        "featurestream_batches_merged_total{service=\"vehicles\"}",
        "featurestream_where_conditions{service=\"vehicles\"}",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
}
