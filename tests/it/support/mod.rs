//! Shared test helpers: a real server on an ephemeral port, a real WebSocket client, plain
//! HTTP requests. Every wait has a timeout that fails the test with a message.

pub mod where_gen;

use std::net::SocketAddr;
use std::time::Duration;

use featurestream::config::Config;
use featurestream::server::{self, Stopper};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The real server, started with `server::start` on 127.0.0.1:0, stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stopper: Stopper,
}

impl TestServer {
    /// Starts a server; call inside `#[actix_web::test]`.
    pub fn start(config: Config) -> TestServer {
        let listener = server::listen(([127, 0, 0, 1], 0).into(), config.backlog)
            .expect("bind an ephemeral port");
        let running = server::start(config, listener).expect("server starts");
        actix_web::rt::spawn(running.server);
        TestServer {
            addr: running.addr,
            stopper: running.stopper,
        }
    }

    /// A small fast simulation: `features` vehicles at 20 Hz.
    pub fn simulated(features: usize) -> TestServer {
        TestServer::start(Config::for_tests(features, 20.0))
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A handle that stops the server.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Closes every session with 1001 and stops.
    pub async fn shutdown(&self) {
        self.stopper.shutdown().await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stopper.stop_now();
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket; panics with the HTTP status and body when the upgrade is refused.
pub async fn connect(url: &str) -> Socket {
    match try_connect(url).await {
        Ok(socket) => socket,
        Err((status, body)) => panic!("upgrade to {url} refused: {status} {body}"),
    }
}

/// Opens a WebSocket, or returns the refusal's status and body.
pub async fn try_connect(url: &str) -> Result<Socket, (u16, String)> {
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out");
    match attempt {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(err) => panic!("connect to {url} failed: {err}"),
    }
}

/// Sends a text frame.
pub async fn send(socket: &mut Socket, text: &str) {
    socket.send(Message::text(text)).await.expect("send");
}

/// The next frame that is not a ping/pong.
pub async fn next_message(socket: &mut Socket) -> Message {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("no frame within the wait")
            .expect("socket ended")
            .expect("socket error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next text frame, parsed as JSON.
pub async fn next_json(socket: &mut Socket) -> Value {
    match next_message(socket).await {
        Message::Text(text) => {
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next text frame, raw.
pub async fn next_text(socket: &mut Socket) -> String {
    match next_message(socket).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the server's close frame; returns its code and reason. Data frames before it
/// are skipped.
pub async fn expect_close(socket: &mut Socket) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("no close frame within the wait");
        match message {
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                return (code.into(), reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("socket error before the close frame: {err}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}

/// Reads frames until one carries a truthy `filter` (a filter reply); returns it and the
/// number of frames skipped.
pub async fn next_reply(socket: &mut Socket) -> (Value, usize) {
    let mut skipped = 0;
    loop {
        let value = next_json(socket).await;
        if value.get("filter").is_some_and(|filter| filter.is_object()) {
            return (value, skipped);
        }
        skipped += 1;
    }
}

/// A plain HTTP/1.1 request; returns status, headers (lower-case names) and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect")
        .expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response timed out")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// GET and parse JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", path, &[]).await;
    (
        status,
        serde_json::from_str(&body)
            .unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {body}")),
    )
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A WebSocket upgraded by hand over a plain TCP stream (for clients that misbehave: never
/// read, never answer pings). Returns the stream after the 101 response head.
pub async fn raw_upgrade(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, tokio::net::TcpStream) {
    let (status, _, stream) = raw_upgrade_head(addr, path, headers).await;
    (status, stream)
}

/// As `raw_upgrade`, also returning the response head (status line and headers).
pub async fn raw_upgrade_head(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, tokio::net::TcpStream) {
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect")
        .expect("connect");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("response head")
            .expect("read");
        assert!(read == 1, "connection closed during the upgrade");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status");
    (status, head, stream)
}

/// Reads raw frames until a close frame; returns its code. Data frames are skipped.
pub async fn raw_read_close<R: tokio::io::AsyncRead + Unpin>(stream: &mut R) -> u16 {
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut offset = 0;
        while buffer.len() >= offset + 2 {
            let opcode = buffer[offset] & 0x0F;
            let (header, length) = match buffer[offset + 1] & 0x7F {
                126 if buffer.len() >= offset + 4 => (
                    4,
                    u16::from_be_bytes([buffer[offset + 2], buffer[offset + 3]]) as usize,
                ),
                127 if buffer.len() >= offset + 10 => {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(&buffer[offset + 2..offset + 10]);
                    (10, u64::from_be_bytes(raw) as usize)
                }
                126 | 127 => break,
                short => (2, short as usize),
            };
            if buffer.len() < offset + header + length {
                break;
            }
            if opcode == 0x8 {
                return u16::from_be_bytes([buffer[offset + header], buffer[offset + header + 1]]);
            }
            offset += header + length;
        }
        buffer.drain(..offset);
        let mut chunk = vec![0u8; 65536];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("no close frame in time")
            .expect("read");
        assert!(read > 0, "connection ended without a close frame");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// A POST with a JSON body; returns status and parsed JSON body (Null when not JSON).
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    post_json_within(addr, path, headers, body, WAIT).await
}

/// `post_json` waiting up to `within` for the answer.
pub async fn post_json_within(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    within: Duration,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    tokio::time::timeout(within, stream.read_to_string(&mut raw))
        .await
        .expect("response")
        .expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Opens a WebSocket with extra request headers; returns it and the response headers.
pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> (Socket, Vec<(String, String)>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("a WebSocket URL");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("header name"),
            value.parse().expect("header value"),
        );
    }
    let (socket, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
        .expect("connect");
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    (socket, headers)
}

/// A client frame (masked, as RFC 6455 requires of clients), final, with this opcode.
pub fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_fragment(true, opcode, payload)
}

/// A client frame, final (`fin`) or not: opcode 0 continues a fragmented message.
pub fn masked_fragment(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        length @ 0..=125 => frame.push(0x80 | length as u8),
        length @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ mask[index % 4]),
    );
    frame
}

/// A valid where clause of `conditions` ORed comparisons that selects nothing (a large,
/// expensive filter, echoed in every reply).
pub fn clause_selecting_nothing(conditions: usize) -> String {
    (0..conditions)
        .map(|n| format!("speed < -{n}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}
