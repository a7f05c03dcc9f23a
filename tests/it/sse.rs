//! Server-sent events (seed 002): the same query parameters and filter semantics as
//! `/subscribe`, filter updates over HTTP answered with the same reply.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, WAIT, http};

struct EventStream {
    stream: tokio::net::TcpStream,
    buffer: String,
}

impl EventStream {
    async fn open(server: &TestServer, path_and_query: &str) -> (u16, EventStream) {
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
    async fn next(&mut self, name: &str) -> Value {
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

async fn post_filter(server: &TestServer, session: u64, body: &str) -> (u16, Value) {
    crate::support::post_json(
        server.addr,
        &format!("/api/services/vehicles/events/{session}/filter"),
        &[],
        body,
    )
    .await
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
    let session = hello["session"].as_u64().expect("session id");
    for _ in 0..3 {
        let features = events.next("features").await;
        for feature in features.as_array().expect("an array of features") {
            assert!(feature["attributes"]["speed"].as_f64().expect("speed") > 50.0);
        }
    }
    let (status, reply) =
        post_filter(&server, session, r#"{"filter":{"where":"speed < 30"}}"#).await;
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
    let (status, reply) = post_filter(&server, session, r#"{"filter":{"where":"nope = 1"}}"#).await;
    assert_eq!(status, 200);
    assert_eq!(reply["filter"], json!({"where": "speed < 30"}));
    assert_eq!(
        reply["error"][0],
        "The field \"nope\" does not exist in this Stream Service's schema."
    );
    let (status, missing) = post_filter(&server, 999_999, r#"{"filter":null}"#).await;
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
