//! Server-sent events (seed 002): the same query parameters, token check and filter semantics
//! as `/subscribe`; filter updates over HTTP, for the holder of the session's random handle
//! only, answered with the same reply and rate-limited the same way; the end of a session said
//! as an SSE `close` event.

use std::time::Duration;

use featurestream::auth::{Auth, parse_static_tokens};
use featurestream::config::Config;
use featurestream::service::Service;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, WAIT, get_json, http};

pub struct EventStream {
    stream: tokio::net::TcpStream,
    buffer: String,
}

impl EventStream {
    pub async fn open(server: &TestServer, path_and_query: &str) -> (u16, EventStream) {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        // HTTP/1.0: the body is the rest of the connection, no chunked framing to undo.
        let request = format!(
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut events = EventStream {
            stream,
            buffer: String::new(),
        };
        while !events.buffer.contains("\r\n\r\n") {
            events.fill().await;
        }
        let status = events
            .buffer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status");
        let body_start = events.buffer.find("\r\n\r\n").expect("head") + 4;
        events.buffer.drain(..body_start);
        (status, events)
    }

    /// Everything up to the end of the stream (the server closes the connection), without
    /// the chunked transfer framing (SSE lines end in `\n` alone, chunk sizes in `\r\n`).
    async fn rest(mut self) -> String {
        let mut rest = std::mem::take(&mut self.buffer).into_bytes();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the stream ends in time")
            .expect("read");
        // A WebSocket close frame (0x88 ..) is not UTF-8: an event stream always is.
        String::from_utf8(rest)
            .expect("an event stream is UTF-8 text")
            .split("\r\n")
            .filter(|piece| !piece.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .collect()
    }

    async fn fill(&mut self) {
        let mut chunk = vec![0u8; 65536];
        let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("no data in time")
            .expect("read");
        assert!(read > 0, "stream ended");
        self.buffer
            .push_str(&String::from_utf8_lossy(&chunk[..read]));
    }

    /// The next event of this name, as (name, JSON data); other events are skipped.
    pub async fn next(&mut self, name: &str) -> Value {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let event = block
                    .lines()
                    .find_map(|line| line.strip_prefix("event: "))
                    .unwrap_or("");
                let data = block.lines().find_map(|line| line.strip_prefix("data: "));
                if event == name
                    && let Some(data) = data
                {
                    return serde_json::from_str(data).expect("JSON data");
                }
            }
            self.fill().await;
        }
    }
}

async fn post_filter(server: &TestServer, session: &str, body: &str) -> (u16, Value) {
    crate::support::post_json(
        server.addr,
        &format!("/api/services/vehicles/events/{session}/filter"),
        &[],
        body,
    )
    .await
}

/// The `session` event's handle.
pub async fn handle(events: &mut EventStream) -> String {
    let hello = events.next("session").await;
    hello["session"].as_str().expect("a handle").to_owned()
}

#[actix_web::test]
async fn sse_streams_filtered_features_and_takes_filter_updates() {
    let server = TestServer::simulated(30);
    let (status, mut events) = EventStream::open(
        &server,
        "/api/services/vehicles/events?where=speed%20%3E%2050&outSR=4326",
    )
    .await;
    assert_eq!(status, 200);
    let hello = events.next("session").await;
    assert_eq!(hello["filter"], json!({"where": "speed > 50"}));
    let session = hello["session"]
        .as_str()
        .expect("session handle")
        .to_owned();
    assert_eq!(
        hello["filterUrl"],
        format!("/api/services/vehicles/events/{session}/filter")
    );
    for _ in 0..3 {
        let features = events.next("features").await;
        for feature in features.as_array().expect("an array of features") {
            assert!(feature["attributes"]["speed"].as_f64().expect("speed") > 50.0);
        }
    }
    let (status, reply) =
        post_filter(&server, &session, r#"{"filter":{"where":"speed < 30"}}"#).await;
    assert_eq!(
        (status, reply.clone()),
        (
            200,
            json!({"filter": {"where": "speed < 30"}, "error": null})
        )
    );
    assert_eq!(events.next("filter").await, reply);
    for _ in 0..3 {
        for feature in events.next("features").await.as_array().expect("features") {
            assert!(feature["attributes"]["speed"].as_f64().expect("speed") < 30.0);
        }
    }
    let (status, reply) =
        post_filter(&server, &session, r#"{"filter":{"where":"nope = 1"}}"#).await;
    assert_eq!(status, 200);
    assert_eq!(reply["filter"], json!({"where": "speed < 30"}));
    assert_eq!(
        reply["error"][0],
        "The field \"nope\" does not exist in this Stream Service's schema."
    );
    let (status, missing) = post_filter(&server, "999999", r#"{"filter":null}"#).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], 404);
    let (status, _, body) = http(
        server.addr,
        "GET",
        "/api/services/vehicles/events?outSR=2193",
        &[],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = http(server.addr, "GET", "/api/services/nope/events", &[]).await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn only_the_holder_of_a_random_handle_with_the_stream_token_changes_its_filter() {
    let mut config = Config::for_tests(5, 20.0);
    let mut trails = Service::vehicles(Default::default());
    trails.name = "trails".into();
    trails.simulator = None;
    config.services.push(trails);
    let tokens = parse_static_tokens("subscriber-1=vehicles,elsewhere-1=trails").expect("tokens");
    config.auth = Auth::new(tokens, None, None).expect("auth");
    let server = TestServer::start(config);
    let open = "/api/services/vehicles/events?outSR=4326&token=subscriber-1";
    let (status, _, _) = http(server.addr, "GET", "/api/services/vehicles/events", &[]).await;
    assert_eq!(status, 401, "the stream itself needs the token");
    let (_, mut first) = EventStream::open(&server, open).await;
    let (_, mut second) = EventStream::open(&server, open).await;
    let (first, second) = (handle(&mut first).await, handle(&mut second).await);
    for handle in [&first, &second] {
        assert!(
            handle.len() == 32 && handle.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "128 random bits: {handle}"
        );
    }
    assert_ne!(first, second);
    let body = r#"{"filter":{"where":"speed > 1"}}"#;
    let post = |service: &'static str, handle: String, token: Option<&'static str>| {
        let addr = server.addr;
        async move {
            let query = token.map_or(String::new(), |token| format!("?token={token}"));
            crate::support::post_json(
                addr,
                &format!("/api/services/{service}/events/{handle}/filter{query}"),
                &[],
                body,
            )
            .await
        }
    };
    let (status, refusal) = post("vehicles", first.clone(), None).await;
    assert_eq!((status, &refusal["error"]["code"]), (401, &json!(401)));
    let (status, _) = post("vehicles", first.clone(), Some("elsewhere-1")).await;
    assert_eq!(status, 403, "a token for another service");
    let (status, _) = post("vehicles", first.clone(), Some("wrong")).await;
    assert_eq!(status, 403, "an invalid token");
    let (status, refusal) = post("trails", first.clone(), Some("elsewhere-1")).await;
    assert_eq!(
        (status, refusal["error"]["message"].as_str()),
        (404, Some("SSE session not found")),
        "a handle is bound to the service it streams"
    );
    for guess in ["1", "2", "3", &first[..31]] {
        let (status, _) = post("vehicles", guess.to_owned(), Some("subscriber-1")).await;
        assert_eq!(status, 404, "{guess}");
    }
    let (status, reply) = post("vehicles", first.clone(), Some("subscriber-1")).await;
    assert_eq!(
        (status, reply),
        (
            200,
            json!({"filter": {"where": "speed > 1"}, "error": null})
        )
    );
}

#[actix_web::test]
async fn sse_filter_updates_are_rate_limited_and_counted_and_a_flood_ends_the_stream() {
    let mut config = Config::for_tests(5, 20.0);
    config.session.filter_rate = Some(1.0);
    let server = TestServer::start(config);
    let (_, mut events) =
        EventStream::open(&server, "/api/services/vehicles/events?outSR=4326").await;
    let session = handle(&mut events).await;
    let (_, before) = get_json(server.addr, "/api/stats").await;
    let (status, reply) =
        post_filter(&server, &session, r#"{"filter":{"where":"nope = 1"}}"#).await;
    assert_eq!((status, reply["filter"].clone()), (200, json!({})));
    let (_, after) = get_json(server.addr, "/api/stats").await;
    assert_eq!(
        after["filterErrors"].as_u64(),
        before["filterErrors"].as_u64().map(|count| count + 1),
        "a refused filter is counted as on a WebSocket"
    );
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    // Bounded: the flood ends the session after a second's burst and ten more refusals.
    for _ in 0..40 {
        let (status, reply) = post_filter(&server, &session, r#"{"filter":{}}"#).await;
        statuses.push(status);
        if status == 404 {
            break;
        }
        last = reply;
    }
    assert_eq!(statuses[0], 200, "within the burst");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        last["error"][0],
        "Invalid filter: too many filter messages; at most 1 per second."
    );
    assert_eq!(statuses.last(), Some(&404), "the flood ended the session");
    assert_eq!(
        events.next("close").await,
        json!({"code": 1008, "reason": "too many filter messages"})
    );
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    assert_eq!(stats["closes"]["1008"], 1);
}

#[actix_web::test]
async fn on_shutdown_an_sse_stream_gets_a_close_event_and_ends_without_websocket_bytes() {
    let server = TestServer::simulated(5);
    let (_, mut events) =
        EventStream::open(&server, "/api/services/vehicles/events?outSR=4326").await;
    events.next("features").await;
    let stopper = server.stopper();
    let shutdown = actix_web::rt::spawn(async move { stopper.shutdown().await });
    let text = events.rest().await;
    assert!(
        text.ends_with(
            "event: close\ndata: {\"code\":1001,\"reason\":\"server shutting down\"}\n\n"
        ),
        "the last event says why, in SSE terms: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    assert!(
        !text.contains('\u{88}') && !text.contains("\u{3}\u{e9}"),
        "no WebSocket close frame"
    );
    shutdown.await.expect("shutdown completes");
}

#[actix_web::test]
async fn an_sse_client_that_never_reads_gets_a_slow_consumer_close_event() {
    let mut config = Config::for_tests(200, 20.0);
    config.session.queue_bytes = 64 * 1024;
    config.session.slow_consumer_after = Duration::from_millis(500);
    let server = TestServer::start(config);
    let (_, events) = EventStream::open(&server, "/api/services/vehicles/events?outSR=4326").await;
    // The client does not read until the server has given up on it.
    let mut closed = false;
    for _ in 0..300 {
        let (_, stats) = get_json(server.addr, "/api/stats").await;
        if stats["closes"]["1008"] == 1 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed,
        "the non-reading SSE client was closed as a slow consumer"
    );
    let text = events.rest().await;
    assert!(
        text.ends_with("event: close\ndata: {\"code\":1008,\"reason\":\"slow consumer\"}\n\n"),
        "{:?}",
        &text[text.len().saturating_sub(200)..]
    );
}

/// Filter POSTs whose replies fill a stream nobody reads: the replies count against the
/// session's queue, so the session ends as a slow consumer instead of growing memory.
#[actix_web::test]
async fn filter_replies_to_an_sse_stream_nobody_reads_are_bounded() {
    let mut config = Config::for_tests(5, 1.0);
    config.session.queue_bytes = 64 * 1024;
    config.session.filter_rate = None;
    config.session.message_rate = None;
    let server = TestServer::start(config);
    let clause = crate::support::clause_selecting_nothing(500);
    let (_, mut events) =
        EventStream::open(&server, "/api/services/vehicles/events?outSR=4326").await;
    let session = handle(&mut events).await;
    let (status, _) = post_filter(
        &server,
        &session,
        &json!({"filter": {"where": clause}}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let mut ended = false;
    // Bounded: each refused filter's reply carries the ~11 KB clause in force.
    for _ in 0..5000 {
        let (status, _) =
            post_filter(&server, &session, r#"{"filter":{"where":"nope = 1"}}"#).await;
        if status == 404 {
            ended = true;
            break;
        }
    }
    assert!(ended, "the session ended");
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    assert_eq!(stats["closes"], json!({"1008": 1}));
    drop(events);
}
