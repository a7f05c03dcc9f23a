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
use crate::protocol::{deflate, ws_frame};
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
/// upgrade service, and a body streaming the queue otherwise; with `deflate`, it accepts the
/// client's permessage-deflate offer. Call after `upgrade_error` returned `None`.
pub fn switching_protocols(
    req: &HttpRequest,
    queue: Arc<OutboundQueue>,
    deflate: bool,
) -> HttpResponse {
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
    if deflate {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            header::HeaderValue::from_static(deflate::RESPONSE),
        );
    }
    response.extensions_mut().insert(Upgraded(queue));
    response
}

/// Inbound frames decoded from the request payload, which keeps flowing after the upgrade.
/// A frame declaring more than `max_frame_bytes` ends the stream with
/// `ProtocolError::Overflow` as soon as its header has arrived. With `deflate` negotiated, a
/// message the client compressed (RSV1 on its first frame) comes out inflated, and one
/// inflating past `max_frame_bytes` ends the stream with
/// `ProtocolError::Overflow` before it takes more memory than that (a deflate bomb).
pub fn inbound_frames(
    payload: web::Payload,
    max_frame_bytes: usize,
    deflate: bool,
) -> impl Stream<Item = Result<Frame, ProtocolError>> {
    let codec = Codec::new().max_size(max_frame_bytes);
    let max_declared = max_frame_bytes as u64;
    let inbound = Inbound {
        payload,
        buffer: BytesMut::new(),
        codec,
        inflater: deflate.then(Inflating::default),
    };
    futures_util::stream::unfold(Some(inbound), move |state| async move {
        let mut inbound = state?;
        loop {
            // actix-http checks the limit only once the whole frame has arrived: refuse
            // as soon as the header declares too much, before buffering any of it.
            if ws_frame::declared_payload_length(&inbound.buffer)
                .is_some_and(|length| length > max_declared)
            {
                return Some((Err(ProtocolError::Overflow), None));
            }
            if let Some(inflating) = &mut inbound.inflater
                && let Err(err) = inflating.take_rsv1(&mut inbound.buffer)
            {
                return Some((Err(err), None));
            }
            match inbound.codec.decode(&mut inbound.buffer) {
                Ok(Some(frame)) => {
                    let frame = match &mut inbound.inflater {
                        Some(inflating) => inflating.inflate(frame, max_frame_bytes),
                        None => Ok(frame),
                    };
                    return match frame {
                        Ok(frame) => Some((Ok(frame), Some(inbound))),
                        Err(err) => Some((Err(err), None)),
                    };
                }
                Ok(None) => {}
                Err(err) => return Some((Err(err), None)),
            }
            match inbound.payload.next().await {
                Some(Ok(chunk)) => inbound.buffer.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    })
}

struct Inbound {
    payload: web::Payload,
    buffer: BytesMut,
    codec: Codec,
    inflater: Option<Inflating>,
}

/// A session's inbound decompression: where a message stands. The client compresses every
/// message on its own (`client_no_context_takeover`), so an inflater lives only while a
/// compressed message is read: an idle session holds none.
#[derive(Default)]
struct Inflating {
    context: Option<deflate::Inflater>,
    /// The frame at the head of the buffer had RSV1 set (cleared for actix's parser).
    head_compressed: bool,
    /// Inside a fragmented compressed message: its bytes inflated so far.
    message_bytes: Option<usize>,
}

impl Inflating {
    /// Reads and clears RSV1 of the frame at the head of `buffer` (actix-http's parser refuses
    /// it): allowed on the first frame of a text or binary message only.
    fn take_rsv1(&mut self, buffer: &mut BytesMut) -> Result<(), ProtocolError> {
        let Some(first) = buffer.first_mut() else {
            return Ok(());
        };
        if *first & 0x40 == 0 {
            return Ok(());
        }
        let opcode = *first & 0x0F;
        if !(opcode == 0x1 || opcode == 0x2) || self.message_bytes.is_some() {
            return Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "RSV1 set on a frame that cannot be compressed",
            )));
        }
        *first &= !0x40;
        self.head_compressed = true;
        Ok(())
    }

    /// The frame as the session reads it: inflated if it is (part of) a compressed message.
    fn inflate(&mut self, frame: Frame, limit: usize) -> Result<Frame, ProtocolError> {
        use actix_http::ws::Item;
        let compressed = std::mem::take(&mut self.head_compressed);
        if compressed {
            self.context = Some(deflate::Inflater::default());
        }
        let mut inflate = |bytes: &[u8], last: bool, so_far: usize| {
            let mut out = Vec::new();
            let context = self.context.get_or_insert_with(deflate::Inflater::default);
            let inflated = context.inflate(bytes, last, &mut out, limit.saturating_sub(so_far));
            if last {
                self.context = None;
            }
            inflated.map_err(|err| match err {
                deflate::InflateError::TooLarge => ProtocolError::Overflow,
                deflate::InflateError::Corrupt => ProtocolError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a compressed message that does not inflate",
                )),
            })?;
            Ok::<Bytes, ProtocolError>(Bytes::from(out))
        };
        Ok(match frame {
            Frame::Text(bytes) if compressed => Frame::Text(inflate(&bytes, true, 0)?),
            Frame::Binary(bytes) if compressed => Frame::Binary(inflate(&bytes, true, 0)?),
            Frame::Continuation(Item::FirstText(bytes)) if compressed => {
                let out = inflate(&bytes, false, 0)?;
                self.message_bytes = Some(out.len());
                Frame::Continuation(Item::FirstText(out))
            }
            Frame::Continuation(Item::FirstBinary(bytes)) if compressed => {
                let out = inflate(&bytes, false, 0)?;
                self.message_bytes = Some(out.len());
                Frame::Continuation(Item::FirstBinary(out))
            }
            Frame::Continuation(Item::Continue(bytes)) if self.message_bytes.is_some() => {
                let so_far = self.message_bytes.unwrap_or(0);
                let out = inflate(&bytes, false, so_far)?;
                self.message_bytes = Some(so_far + out.len());
                Frame::Continuation(Item::Continue(out))
            }
            Frame::Continuation(Item::Last(bytes)) if self.message_bytes.is_some() => {
                let so_far = self.message_bytes.take().unwrap_or(0);
                Frame::Continuation(Item::Last(inflate(&bytes, true, so_far)?))
            }
            other => other,
        })
    }
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
