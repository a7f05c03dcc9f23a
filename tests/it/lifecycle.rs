//! How sessions end: server shutdown (1001, seed 003), binary frames (1003), oversized frames
//! (1009), a client's own close.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Socket, TestServer, connect, expect_close, next_json};

const SUBSCRIBE: &str = "/arcgis/ws/services/vehicles/StreamServer/subscribe?outSR=4326";

#[actix_web::test]
async fn shutdown_closes_every_session_with_1001() {
    let server = TestServer::simulated(5);
    let mut server_mode = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut custom = connect(&server.ws_url("/")).await;
    crate::support::send(
        &mut custom,
        r#"{"format":"json","spatialReference":{"wkid":4326}}"#,
    )
    .await;
    next_json(&mut custom).await;
    next_json(&mut server_mode).await;
    server.shutdown().await;
    assert_eq!(
        expect_close(&mut server_mode).await,
        (1001, "server shutting down".to_owned())
    );
    assert_eq!(
        expect_close(&mut custom).await,
        (1001, "server shutting down".to_owned())
    );
}

#[actix_web::test]
async fn while_shutting_down_new_sessions_are_refused_with_503_and_retry_after() {
    let server = TestServer::simulated(5);
    let mut session = connect(&server.ws_url(SUBSCRIBE)).await;
    next_json(&mut session).await;
    let stopper = server.stopper();
    let shutdown = actix_web::rt::spawn(async move { stopper.shutdown().await });
    assert_eq!(expect_close(&mut session).await.0, 1001);
    // The SDK reconnects at once after a close: it must get a refusal it backs off from.
    let (status, body) = crate::support::try_connect(&server.ws_url(SUBSCRIBE))
        .await
        .expect_err("refused");
    assert_eq!(status, 503, "{body}");
    let (status, headers, _) = crate::support::http(
        server.addr,
        "GET",
        "/arcgis/ws/services/vehicles/custom",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(crate::support::header(&headers, "retry-after"), Some("5"));
    // Metadata is still served while draining.
    let (status, _) = crate::support::get_json(
        server.addr,
        "/arcgis/rest/services/vehicles/StreamServer?f=json",
    )
    .await;
    assert_eq!(status, 200);
    shutdown.await.expect("shutdown completes");
}

#[actix_web::test]
async fn binary_frames_close_with_1003() {
    let server = TestServer::simulated(5);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    socket
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    let (code, reason) = expect_close(&mut socket).await;
    assert_eq!(
        (code, reason.as_str()),
        (1003, "binary frames are not supported; send JSON text")
    );
}

#[actix_web::test]
async fn frames_over_64_kib_close_with_1009_and_others_are_untouched() {
    let server = TestServer::simulated(5);
    let mut bystander = connect(&server.ws_url(SUBSCRIBE)).await;
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    socket
        .send(Message::text("x".repeat(64 * 1024 + 1)))
        .await
        .expect("send");
    let (code, reason) = expect_close(&mut socket).await;
    assert_eq!(
        (code, reason.as_str()),
        (1009, "frame larger than 65536 bytes")
    );
    for _ in 0..10 {
        next_json(&mut bystander).await;
    }
}

/// The limit is enforced on the header: a frame declaring 2^40 bytes (or 2^63 - 1) is closed
/// with 1009 before any of its payload is buffered (before: RSS grew with the bytes).
#[actix_web::test]
async fn a_frame_declaring_more_than_the_limit_is_closed_1009_on_its_header() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::simulated(5);
    for declared in [1u64 << 40, (1u64 << 63) - 1, 64 * 1024 + 1] {
        let (status, mut stream) = crate::support::raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
        assert_eq!(status, 101);
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&declared.to_be_bytes());
        header.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        header.extend_from_slice(&[b'x'; 1000]);
        stream.write_all(&header).await.expect("send the header");
        assert_eq!(
            crate::support::raw_read_close(&mut stream).await,
            1009,
            "{declared}"
        );
    }
}

/// A fragmented text message is reassembled; what its fragments accumulate is capped like
/// a single frame (1009).
#[actix_web::test]
async fn fragmented_text_messages_are_reassembled_within_the_frame_limit() {
    use crate::support::{masked_fragment, raw_read_close, raw_upgrade};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::simulated(5);
    let (status, mut stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    let mut message = masked_fragment(false, 0x1, br#"{"filter":{"whe"#);
    message.extend(masked_fragment(false, 0x0, br#"re":"speed > "#));
    message.extend(masked_fragment(true, 0x0, br#"1234"}}"#));
    stream.write_all(&message).await.expect("send");
    let expected = br#"{"filter":{"where":"speed > 1234"},"error":null}"#;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while !seen
        .windows(expected.len())
        .any(|window| window == expected)
    {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("the reply arrives")
            .expect("read");
        assert!(read > 0, "closed before the reply");
        seen.extend_from_slice(&chunk[..read]);
    }
    let (status, mut stream) = raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    let piece = vec![b' '; 60 * 1024];
    let mut message = masked_fragment(false, 0x1, &piece);
    message.extend(masked_fragment(false, 0x0, &piece));
    stream.write_all(&message).await.expect("send");
    assert_eq!(raw_read_close(&mut stream).await, 1009);
}

#[actix_web::test]
async fn a_client_close_is_echoed() {
    let server = TestServer::simulated(5);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    next_json(&mut socket).await;
    socket.close(None).await.expect("close");
    let (code, _) = expect_close(&mut socket).await;
    assert_eq!(code, 1000);
}

#[actix_web::test]
async fn stats_count_closes_by_code_and_filter_errors() {
    let server = TestServer::simulated(5);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    crate::support::send(&mut socket, r#"{"filter":{"where":"nope = 1"}}"#).await;
    crate::support::next_reply(&mut socket).await;
    socket.send(Message::binary(vec![0])).await.expect("send");
    assert_eq!(expect_close(&mut socket).await.0, 1003);
    let mut counted = false;
    for _ in 0..50 {
        let (_, stats) = crate::support::get_json(server.addr, "/api/stats").await;
        if stats["closes"]["1003"] == 1 && stats["filterErrors"] == 1 {
            counted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(counted, "closes by code and filter errors are counted");
}

/// The release-like binary on a free port, started with a low soft open-file limit, as many
/// shells give; returns it with a session that has received data.
async fn start_binary() -> (tokio::process::Child, Socket) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = tokio::process::Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_featurestream"))
        .args(["--port", &port.to_string(), "--features", "5", "--hz", "20"])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let url = format!("ws://127.0.0.1:{port}{SUBSCRIBE}");
    let mut socket = None;
    for _ in 0..100 {
        if let Ok((connected, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            socket = Some(connected);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut socket = socket.expect("the server accepts sessions");
    next_json(&mut socket).await;
    (child, socket)
}

async fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
}

async fn exit_code(child: &mut tokio::process::Child) -> Option<i32> {
    tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the grace period")
        .expect("wait")
        .code()
}

#[actix_web::test]
async fn sigterm_closes_sessions_with_1001_and_the_binary_exits_0() {
    let (mut child, mut socket) = start_binary().await;
    let pid = child.id().expect("pid").to_string();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("an open-file limit")
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(
        open_files.first(),
        open_files.get(1),
        "the soft open-file limit is raised to the hard one: {open_files:?}"
    );
    signal(&child, "TERM").await;
    assert_eq!(
        expect_close(&mut socket).await,
        (1001, "server shutting down".to_owned())
    );
    assert_eq!(exit_code(&mut child).await, Some(0));
}

/// SIGHUP (a closed terminal, a supervisor) is a graceful shutdown too, with the 1001 close
/// the SDK needs (before: the process died without it).
#[actix_web::test]
async fn sighup_closes_sessions_with_1001_and_the_binary_exits_0() {
    let (mut child, mut socket) = start_binary().await;
    signal(&child, "HUP").await;
    assert_eq!(
        expect_close(&mut socket).await,
        (1001, "server shutting down".to_owned())
    );
    assert_eq!(exit_code(&mut child).await, Some(0));
}

/// A second signal during the drain exits at once, with status 1.
#[actix_web::test]
async fn a_second_signal_exits_without_waiting_for_the_drain() {
    use tokio::io::AsyncWriteExt;
    let (mut child, mut socket) = start_binary().await;
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_ref() else {
        panic!("a plain connection")
    };
    let addr = tcp.peer_addr().expect("the server's address");
    // A request head still arriving keeps the graceful stop waiting (up to its 5 s timeout
    // after the 1.5 s drain): the second signal comes well within that.
    let mut pending = tokio::net::TcpStream::connect(addr).await.expect("connect");
    pending
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("half a request head");
    signal(&child, "INT").await;
    assert_eq!(expect_close(&mut socket).await.0, 1001);
    signal(&child, "INT").await;
    assert_eq!(exit_code(&mut child).await, Some(1));
    drop(pending);
}

/// Malformed requests are answered 400 and do not write ERROR lines to the default log (a
/// scan would flood it).
#[actix_web::test]
async fn malformed_requests_write_no_error_lines_by_default() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_featurestream"))
        .args(["--port", &port.to_string(), "--features", "5"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let mut answered = 0;
    for _ in 0..100 {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        tokio::time::timeout(crate::support::WAIT, stream.read_to_end(&mut answer))
            .await
            .expect("answered")
            .expect("read");
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        answered += 1;
        if answered == 5 {
            break;
        }
    }
    assert_eq!(answered, 5);
    signal(&child, "TERM").await;
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .await
        .expect("read the log");
    assert_eq!(exit_code(&mut child).await, Some(0));
    assert!(log.contains("featurestream listening on"), "{log}");
    assert!(!log.contains(" ERROR "), "{log}");
}

/// The close code reaches a client that is still sending when the server closes: the server
/// reads and discards until the client's side closes (RFC 6455 §7.1.1) instead of closing with
/// unread bytes, which makes the kernel reset the connection and lose the close frame (the
/// client saw 1006 instead of 1008).
#[actix_web::test]
async fn a_client_still_sending_after_the_close_gets_the_close_code() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::simulated(5);
    let (status, stream) = crate::support::raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    let (mut reader, mut writer) = stream.into_split();
    let flood = actix_web::rt::spawn(async move {
        let filters = crate::support::masked_frame(0x1, br#"{"filter":{}}"#).repeat(1000);
        // Bounded: 4 MB, far past the close (which comes after a second's burst of filters).
        for _ in 0..200 {
            if writer.write_all(&filters).await.is_err() {
                break;
            }
        }
        writer
    });
    // The client is busy sending: it reads only once its flood is written (or refused).
    let writer = flood.await.expect("the flood ends");
    // And it is slow to come back to reading: by then the server has long closed.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(crate::support::raw_read_close(&mut reader).await, 1008);
    drop(writer);
}

/// The server's socket states toward `peer`, from `/proc/net/tcp` (hex `XX` states).
fn server_socket_states(server: std::net::SocketAddr, peer: std::net::SocketAddr) -> Vec<String> {
    let hex = |addr: std::net::SocketAddr| match addr {
        std::net::SocketAddr::V4(v4) => {
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            )
        }
        std::net::SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(server), hex(peer));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
                .then(|| fields[3].to_owned())
        })
        .collect()
}

/// When the server gives up on a client that does not read (after the linger period), it
/// resets the connection: no socket is left holding unsent bytes in the kernel (before: each
/// sat in FIN-WAIT-1 with up to the send buffer queued), and the reset is counted.
#[actix_web::test]
async fn a_client_that_never_reads_leaves_no_socket_behind() {
    let mut config = featurestream::config::Config::for_tests(200, 20.0);
    config.session.queue_bytes = 64 * 1024;
    config.session.slow_consumer_after = std::time::Duration::from_secs(1);
    let server = TestServer::start(config);
    let (status, stalled) = crate::support::raw_upgrade(server.addr, SUBSCRIBE, &[]).await;
    assert_eq!(status, 101);
    let peer = stalled.local_addr().expect("the client's address");
    assert!(!server_socket_states(server.addr, peer).is_empty());
    let mut gone = false;
    // Bounded: filling the buffers, a second behind, the 5 s linger, well within 60 s.
    for _ in 0..600 {
        if server_socket_states(server.addr, peer).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the server's socket is still there: {:?}",
        server_socket_states(server.addr, peer)
    );
    let (_, stats) = crate::support::get_json(server.addr, "/api/stats").await;
    assert_eq!(stats["connectionsReset"], 1);
    assert_eq!(stats["closes"]["1008"], 1);
    drop(stalled);
}
