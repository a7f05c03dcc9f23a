//! How sessions end: server shutdown (1001, seed 003), binary frames (1003), oversized frames
//! (1009), a client's own close.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, connect, expect_close, next_json};

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

#[actix_web::test]
async fn a_client_close_is_echoed() {
    let server = TestServer::simulated(5);
    let mut socket = connect(&server.ws_url(SUBSCRIBE)).await;
    next_json(&mut socket).await;
    socket.close(None).await.expect("close");
    let (code, _) = expect_close(&mut socket).await;
    assert_eq!(code, 1000);
}
