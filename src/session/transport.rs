//! The WebSocket transport, built the way actix-web-actors builds its own (docs/architecture.md
//! "Transport"), but frame-once: the session's bounded queue of ready frames (shared `Bytes`,
//! `broker::queue`) and inbound frames decoded with actix-http's codec over the request payload. The 101
//! response carries the queue as an [`Upgraded`] extension: the server's upgrade service
//! (`session::socket`) writes its frames straight to the socket. The response's body streams
//! the same queue when no upgrade service takes over (and for server-sent events). The only
//! module that touches actix-http's ws codec.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, ProtocolError, hash_key};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};

use crate::broker::queue::OutboundQueue;
use crate::protocol::ws_frame;
use futures_util::{Stream, StreamExt};

/// Largest slice handed to the HTTP layer at once.
const MAX_CHUNK_BYTES: usize = 16 * 1024;
/// The 101 response's extension: the queue the upgraded connection writes.
#[derive(Clone)]
pub struct Upgraded(pub Arc<OutboundQueue>);

/// The 101 response body: drains the queue, ends after the final frame.
struct OutboundStream {
    queue: Arc<OutboundQueue>,
}

impl Stream for OutboundStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // actix-http copies each chunk into the connection's write buffer, which keeps its
        // capacity: hand it bounded slices (zero-copy) so that a large shared frame does not
        // grow every session's buffer to the frame's size.
        self.queue
            .poll_next_chunk(cx, MAX_CHUNK_BYTES)
            .map(|frame| frame.map(Ok))
    }
}

impl Drop for OutboundStream {
    /// The connection is gone: refuse further pushes so the broker unregisters the session.
    fn drop(&mut self) {
        if !self.queue.is_adopted() {
            self.queue.close(None);
        }
    }
}

/// A `200 text/event-stream` response streaming `queue` (server-sent events).
pub fn event_stream(queue: Arc<OutboundQueue>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(OutboundStream { queue })
}

/// Whether the request asks for a WebSocket upgrade that actix-http can accept.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    actix_http::ws::verify_handshake(req.head()).is_ok()
}

/// Why an upgrade request is not acceptable, if it is not.
pub fn upgrade_error(req: &HttpRequest) -> Option<String> {
    actix_http::ws::verify_handshake(req.head())
        .err()
        .map(|err| err.to_string())
}

/// The 101 Switching Protocols response for `queue`: an [`Upgraded`] extension for the
/// upgrade service, and a body streaming the queue otherwise. Call after `upgrade_error`
/// returned `None`.
pub fn switching_protocols(req: &HttpRequest, queue: Arc<OutboundQueue>) -> HttpResponse {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| hash_key(key.as_bytes()))
        .unwrap_or_default();
    // The accept key is base64: always a valid header value.
    let accept = header::HeaderValue::from_bytes(&key)
        .unwrap_or_else(|_| header::HeaderValue::from_static(""));
    let mut response = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS)
        .upgrade("websocket")
        .insert_header((header::SEC_WEBSOCKET_ACCEPT, accept))
        .streaming(OutboundStream {
            queue: queue.clone(),
        });
    response.extensions_mut().insert(Upgraded(queue));
    response
}

/// Inbound frames decoded from the request payload, which keeps flowing after the upgrade.
/// A frame declaring more than `max_frame_bytes` ends the stream with
/// `ProtocolError::Overflow` as soon as its header has arrived.
pub fn inbound_frames(
    payload: web::Payload,
    max_frame_bytes: usize,
) -> impl Stream<Item = Result<Frame, ProtocolError>> {
    let codec = Codec::new().max_size(max_frame_bytes);
    let max_declared = max_frame_bytes as u64;
    futures_util::stream::unfold(
        Some((payload, BytesMut::new(), codec)),
        move |state| async move {
            let (mut payload, mut buffer, mut codec) = state?;
            loop {
                // actix-http checks the limit only once the whole frame has arrived: refuse
                // as soon as the header declares too much, before buffering any of it.
                if ws_frame::declared_payload_length(&buffer)
                    .is_some_and(|length| length > max_declared)
                {
                    return Some((Err(ProtocolError::Overflow), None));
                }
                match codec.decode(&mut buffer) {
                    Ok(Some(frame)) => return Some((Ok(frame), Some((payload, buffer, codec)))),
                    Ok(None) => {}
                    Err(err) => return Some((Err(err), None)),
                }
                match payload.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(_)) | None => return None,
                }
            }
        },
    )
}

/// A ping control frame with an empty payload.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// A pong answering a ping's payload (at most 125 bytes by the protocol).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    let length = payload.len().min(125);
    let mut frame = Vec::with_capacity(2 + length);
    frame.extend_from_slice(&[0x8A, length as u8]);
    frame.extend_from_slice(&payload[..length]);
    Bytes::from(frame)
}
