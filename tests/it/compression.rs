//! WebSocket compression (permessage-deflate, RFC 7692) over real sockets: a raw client that
//! offers it (and inflates what it gets with a fresh context per message, as
//! `server_no_context_takeover` promises), one that does not, a deflate bomb, the setting
//! off, and Python's `websockets`, a client nobody here wrote.

use std::io::Write as _;
use std::time::Duration;

use featurestream::broker::subscription::Deflate;
use featurestream::config::Config;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, WAIT, get_json};

const CUSTOM: &str = "/arcgis/ws/services/vehicles/custom";
const HANDSHAKE: &str = r#"{"format":"json","spatialReference":{"wkid":4326}}"#;

/// A client on a raw socket: it reads frames as they come (RSV1 and all) and writes masked
/// frames, each compressed on its own when asked (the server asks
/// `client_no_context_takeover`).
struct RawClient {
    stream: TcpStream,
    buffer: Vec<u8>,
    response_head: String,
    deflate: Compress,
}

/// One frame as received.
struct Received {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl RawClient {
    async fn open(server: &TestServer, path: &str, extensions: Option<&str>) -> RawClient {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            server.addr
        );
        if let Some(extensions) = extensions {
            request.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut buffer = Vec::new();
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("a response")
                .expect("read");
            assert!(read > 0, "closed before the response");
            buffer.extend_from_slice(&chunk[..read]);
        };
        let response_head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        assert!(response_head.starts_with("HTTP/1.1 101"), "{response_head}");
        buffer.drain(..head_end);
        RawClient {
            stream,
            buffer,
            response_head,
            deflate: Compress::new(Compression::new(6), false),
        }
    }

    fn extension_header(&self) -> Option<String> {
        self.response_head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        })
    }

    async fn next(&mut self) -> Received {
        loop {
            if self.buffer.len() >= 2 {
                let short = (self.buffer[1] & 0x7F) as usize;
                let (header, length) = match short {
                    126 if self.buffer.len() >= 4 => (
                        4,
                        u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                    ),
                    127 if self.buffer.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.buffer[2..10].try_into().unwrap()) as usize,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    short => (2, short),
                };
                if header != usize::MAX && self.buffer.len() >= header + length {
                    let first = self.buffer[0];
                    let payload = self.buffer[header..header + length].to_vec();
                    self.buffer.drain(..header + length);
                    return Received {
                        rsv1: first & 0x40 != 0,
                        opcode: first & 0x0F,
                        payload,
                    };
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time")
                .expect("read");
            assert!(read > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// The next data message as JSON, inflated on its own if it came compressed.
    async fn next_json(&mut self) -> (bool, Value) {
        let frame = self.next().await;
        assert_eq!(frame.opcode, 1, "a text frame");
        let text = if frame.rsv1 {
            inflate_alone(&frame.payload)
        } else {
            frame.payload
        };
        (frame.rsv1, serde_json::from_slice(&text).expect("JSON"))
    }

    async fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mut frame = vec![first];
        match payload.len() {
            0..=125 => frame.push(0x80 | payload.len() as u8),
            126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ mask[i % 4]),
        );
        self.stream.write_all(&frame).await.expect("write");
    }

    async fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes()).await;
    }

    /// A compressed text message (RSV1), compressed on its own.
    async fn send_compressed(&mut self, payload: &[u8]) {
        self.deflate.reset();
        let mut out = Vec::with_capacity(payload.len() / 4 + 1024);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            self.deflate
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .unwrap();
            if (self.deflate.total_in() - start) as usize == payload.len()
                && out.len() < out.capacity()
            {
                break;
            }
            out.reserve(out.capacity().max(1024));
        }
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        self.send_frame(0xC1, &out).await;
    }
}

fn inflate_alone(payload: &[u8]) -> Vec<u8> {
    let mut inflate = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(payload.len() * 8 + 1024);
    loop {
        let consumed = inflate.total_in() as usize;
        inflate
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .expect("a message inflates on its own");
        if inflate.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

fn config(compression: Deflate) -> Config {
    let mut config = Config::for_tests(40, 10.0);
    config.session.compression = compression;
    config
}

/// What browsers offer gets `server_no_context_takeover` (and `client_no_context_takeover`);
/// the snapshot and live frames come compressed (each inflates alone), compressed filter
/// messages are read and answered; the server counts the bytes before and after.
#[actix_web::test]
async fn a_client_that_offers_deflate_gets_compressed_frames_and_may_send_them() {
    let server = TestServer::start(config(Deflate::Level(1)));
    let mut client = RawClient::open(
        &server,
        CUSTOM,
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(
        client.extension_header().as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    client.send_text(HANDSHAKE).await;
    let (_, echo) = client.next_json().await;
    assert_eq!(echo["format"], "json", "{echo}");
    let (compressed, snapshot) = client.next_json().await;
    assert!(compressed, "40 features are compressed");
    assert_eq!(snapshot["features"].as_array().unwrap().len(), 40);
    // Two compressed filter messages.
    for (round, clause) in ["TRACKID < 3", "1=1"].into_iter().enumerate() {
        client
            .send_compressed(json!({"filter": {"where": clause}}).to_string().as_bytes())
            .await;
        // The reply, then its snapshot (live frames may come between).
        let mut reply = None;
        for _ in 0..50 {
            let (_, message) = client.next_json().await;
            if message.get("filter").is_some() {
                reply = Some(message);
                break;
            }
        }
        let reply = reply.expect("a filter reply");
        assert_eq!(reply["error"], Value::Null, "round {round}: {reply}");
        assert_eq!(reply["filter"]["where"], clause);
    }
    // Live frames are counted: wait for a whole one.
    loop {
        let (compressed, frame) = client.next_json().await;
        if frame["type"] == "featureResult" && frame["features"].as_array().unwrap().len() == 40 {
            assert!(compressed);
            break;
        }
    }
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    let deflate = &stats["services"]["vehicles"]["deflate"];
    let (plain, wire) = (
        deflate["plainBytes"].as_u64().unwrap(),
        deflate["wireBytes"].as_u64().unwrap(),
    );
    assert!(plain > 0 && wire * 2 < plain, "{deflate}");
}

/// A client that offers nothing, or what the server cannot honour, gets today's bytes; with
/// the setting off nobody gets compression.
#[actix_web::test]
async fn clients_without_an_acceptable_offer_and_servers_with_it_off_send_plain_frames() {
    let on = TestServer::start(config(Deflate::Level(1)));
    let off = TestServer::start(config(Deflate::Off));
    for (server, offer) in [
        (&on, None),
        (&on, Some("permessage-deflate; server_max_window_bits=10")),
        (&off, Some("permessage-deflate")),
    ] {
        let mut client = RawClient::open(server, CUSTOM, offer).await;
        assert_eq!(client.extension_header(), None, "{offer:?}");
        client.send_text(HANDSHAKE).await;
        client.next_json().await;
        for _ in 0..3 {
            let (compressed, frame) = client.next_json().await;
            assert!(!compressed, "{offer:?}");
            assert_eq!(frame["type"], "featureResult");
        }
    }
}

/// A deflate bomb: a few kilobytes that inflate to 64 MiB close the session with 1009 (past
/// the 64 KiB message limit), and the server's memory does not follow.
#[actix_web::test]
async fn a_deflate_bomb_closes_with_1009() {
    let server = TestServer::start(config(Deflate::Level(1)));
    let mut client = RawClient::open(&server, CUSTOM, Some("permessage-deflate")).await;
    client.send_text(HANDSHAKE).await;
    client.next_json().await;
    let zeros = vec![b' '; 64 << 20];
    client.send_compressed(&zeros).await;
    let mut close = None;
    for _ in 0..200 {
        let frame = client.next().await;
        if frame.opcode == 8 {
            close = Some(frame.payload);
            break;
        }
    }
    let close = close.expect("a close frame");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
}

/// Python's `websockets` (installed by scripts/test) negotiates permessage-deflate as it does
/// with any server, reads the compressed stream and sends its filter message compressed.
#[actix_web::test]
async fn pythons_websockets_negotiates_and_reads_the_stream() {
    let server = TestServer::start(config(Deflate::Level(1)));
    let url = server.ws_url(CUSTOM);
    let script = format!(
        r#"
import asyncio, json, websockets
async def main():
    async with websockets.connect({url:?}, compression="deflate", max_size=None) as ws:
        print("extensions", [type(e).__name__ for e in getattr(ws, "protocol", ws).extensions])
        await ws.send({HANDSHAKE:?})
        print("echo", json.loads(await ws.recv())["format"])
        print("snapshot", len(json.loads(await ws.recv())["features"]))
        await ws.send(json.dumps({{"filter": {{"where": "TRACKID = 7"}}}}))
        for _ in range(50):
            message = json.loads(await ws.recv())
            if "filter" in message:
                print("reply", message["filter"]["where"], message["error"])
                break
        for _ in range(50):
            message = json.loads(await ws.recv())
            if message.get("type") == "featureResult" and message["features"]:
                print("live", {{f["attributes"]["TRACKID"] for f in message["features"]}})
                break
asyncio.run(main())
"#
    );
    let output = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("python3")
            .arg("-")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/test installs websockets)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().expect("python3 ends")
    });
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("in time")
        .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "extensions ['PerMessageDeflate']",
            "echo json",
            "snapshot 40",
            "reply TRACKID = 7 None",
            "live {7}",
        ],
        "{stdout}"
    );
    let (_, stats) = get_json(server.addr, "/api/stats").await;
    assert!(
        stats["services"]["vehicles"]["deflate"]["wireBytes"]
            .as_u64()
            .unwrap()
            > 0,
        "the server compressed what it sent: {stats}"
    );
}

/// The broadcast endpoint negotiates compression too: a publisher's compressed documents are
/// read, recorded and acknowledged.
#[actix_web::test]
async fn a_publisher_may_send_compressed_documents() {
    let mut config = Config::for_tests(40, 10.0);
    config.services[0].simulator = None;
    let server = TestServer::start(config);
    let mut publisher = RawClient::open(
        &server,
        "/arcgis/ws/services/vehicles/StreamServer/broadcast?ack=true",
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(
        publisher.extension_header().as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let now = featurestream::broker::now_ms();
    for (sequence, tracks) in [(1u64, 1..=30i64), (2, 31..=60)] {
        let document: Vec<Value> = tracks
            .map(|track| {
                json!({
                    "attributes": {"TRACKID": track, "name": format!("bus {track}"), "route": "R1",
                        "status": "moving", "speed": 10.5, "heading": 90, "active": true,
                        "observed": now},
                    "geometry": {"x": -117.0 - track as f64 / 1e3, "y": 34.05}
                })
            })
            .collect();
        publisher
            .send_compressed(json!(document).to_string().as_bytes())
            .await;
        let (_, ack) = publisher.next_json().await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(
            (ack["sequence"].as_u64(), ack["accepted"].as_u64()),
            (Some(sequence), Some(30)),
            "{ack}"
        );
    }
    let (_, count) = get_json(
        server.addr,
        "/arcgis/rest/services/vehicles/FeatureServer/0/query?where=1%3D1&returnCountOnly=true&f=json",
    )
    .await;
    assert_eq!(count["count"], 60, "{count}");
}
