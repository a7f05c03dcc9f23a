//! The upgrade service: actix-http hands every `Upgrade` request here with the connection
//! itself. The request goes through the actix-web application as any other (routing,
//! admission, auth, URL parameters: the same handlers answer), and
//! - a 101 carrying an [`Upgraded`] queue is written, then the connection is driven here:
//!   queued frames go to the socket with vectored writes straight from the shared `Bytes`
//!   (no copy into a per-connection buffer), and what the client sends feeds the request's
//!   payload, which the session decodes as before;
//! - any other response (404, 400, 401, 503, ...) is written whole and the connection closed.
//!
//! Only requests for a WebSocket endpoint get here (`server` answers the others with
//! [`answer`]): on any other route the request body would wait for a 101 that never comes.
//!
//! An idle connection holds no read or write buffer: reads allocate only once the socket is
//! readable, and writes come from the queue's frames.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::IoSlice;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use actix_codec::{Encoder, Framed};
use actix_http::body::{BodySize, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1;
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_web::dev::{Service, ServiceResponse};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::transport::Upgraded;
use crate::broker::queue::OutboundQueue;

/// Bytes moved from the queue per write round: bounds what sits outside the queue's count.
const WRITE_BUDGET: usize = 64 * 1024;
/// At most this many frames per vectored write.
const MAX_SLICES: usize = 64;
/// Bytes read at once from a readable socket.
const READ_BYTES: usize = 4096;
/// Largest error body written for a refused upgrade.
const MAX_REFUSAL_BODY: usize = 64 * 1024;
/// How long a closed session's last frames may wait for a client that does not read before
/// the connection is dropped.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the server waits for the client's side of the close after its own.
const CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes read and discarded while waiting for it (the time bounds it first on any real
/// network).
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// Inbound bytes buffered for the session before reading pauses.
const MAX_INBOUND_BYTES: usize = 64 * 1024;

/// Answers one upgrade request on its connection with the application `app`.
pub async fn serve<S, B>(
    app: Rc<S>,
    mut req: Request,
    framed: Framed<TcpStream, h1::Codec>,
    stats: Arc<TeardownStats>,
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let inbound = Rc::new(RefCell::new(Inbound::default()));
    *req.payload() = actix_http::Payload::Stream {
        payload: Box::pin(InboundStream(inbound.clone())),
    };
    let response: Response<B> = app.call(req).await?.into();
    let actix_codec::FramedParts {
        io,
        mut codec,
        read_buf,
        ..
    } = framed.into_parts();
    let upgraded = response.extensions().get::<Upgraded>().cloned();
    let (head, body) = response.into_parts();
    match upgraded {
        Some(Upgraded(queue)) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            queue.adopt();
            drop(body);
            let mut out = BytesMut::with_capacity(256);
            codec.encode(
                actix_http::h1::Message::Item((head.drop_body(), BodySize::Stream)),
                &mut out,
            )?;
            drop(codec);
            let mut io = io;
            let written = io.write_all(&out).await;
            drop(out);
            if !read_buf.is_empty() {
                // The client's first frames may have come with the request.
                inbound.borrow_mut().push(read_buf.freeze());
            } else {
                drop(read_buf);
            }
            let connection = Connection {
                io,
                queue: queue.clone(),
                pending: VecDeque::new(),
                inbound,
                linger: None,
            };
            if written.is_ok() {
                connection.run(&stats).await;
            }
            // The connection is gone or done: the broker unregisters the session.
            queue.close(None);
        }
        _ => {
            drop(inbound);
            write_and_close(io, codec, head, body).await?;
        }
    }
    Ok(())
}

/// Answers a request that must not be upgraded with `response` and closes the connection.
pub async fn answer(
    framed: Framed<TcpStream, h1::Codec>,
    response: actix_web::HttpResponse,
) -> Result<(), actix_web::Error> {
    let actix_codec::FramedParts { io, codec, .. } = framed.into_parts();
    let (head, body) = Response::from(response).into_parts();
    write_and_close(io, codec, head, body).await
}

/// Writes a refusal (its body read up to a bound, never a stream) and closes.
async fn write_and_close<B: MessageBody>(
    mut io: TcpStream,
    mut codec: h1::Codec,
    mut head: Response<()>,
    body: B,
) -> Result<(), actix_web::Error> {
    let bytes = if matches!(body.size(), BodySize::Sized(_)) {
        actix_http::body::to_bytes_limited(body, MAX_REFUSAL_BODY)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    } else {
        // A streaming body (server-sent events) never ends: not on this path.
        Bytes::new()
    };
    head.head_mut().set_connection_type(ConnectionType::Close);
    let mut out = BytesMut::with_capacity(256 + bytes.len());
    codec.encode(
        actix_http::h1::Message::Item((head.drop_body(), BodySize::Sized(bytes.len() as u64))),
        &mut out,
    )?;
    out.extend_from_slice(&bytes);
    if io.write_all(&out).await.is_ok() {
        let _ = io.shutdown().await;
    }
    Ok(())
}

/// An upgraded connection: the session's queue out, the request payload in.
struct Connection {
    io: TcpStream,
    queue: Arc<OutboundQueue>,
    /// Frames taken from the queue and not yet fully written; the front may be partly sent.
    pending: VecDeque<Bytes>,
    /// Feeds the request payload the session decodes its inbound frames from.
    inbound: Rc<RefCell<Inbound>>,
    /// Started when the session has closed while the socket is full.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How a connection's writing ended.
enum Ended {
    /// Everything queued until the close was written.
    Written,
    /// The socket failed.
    Failed,
    /// The client did not take its last frames within the linger period.
    GaveUp,
}

/// Connections the server gave up on and reset, for `/metrics`.
#[derive(Default)]
pub struct TeardownStats {
    /// Connections reset (`SO_LINGER` 0) because the client did not read its last frames.
    pub reset: AtomicU64,
}

impl Connection {
    /// Runs until the queue is closed and written, or the socket fails.
    async fn run(mut self, stats: &TeardownStats) {
        match poll_fn(|cx| self.poll_io(cx)).await {
            Ended::Written => {
                // RFC 6455 §7.1.1: after its Close the server lets the client answer, reading
                // and discarding what it still sends. Closing with unread bytes would make the
                // kernel send a reset, and the client's kernel drop the close frame with it.
                let _ = self.io.shutdown().await;
                self.inbound.borrow_mut().end();
                drain(&mut self.io, CLOSE_DRAIN, MAX_DRAIN_BYTES).await;
            }
            Ended::Failed => self.inbound.borrow_mut().end(),
            Ended::GaveUp => {
                // As nginx's `reset_timedout_connection`: a reset frees the bytes the kernel
                // still holds for a client that does not read (FIN-WAIT-1 keeps them for
                // minutes against a zero window).
                let _ = self.io.set_zero_linger();
                stats.reset.fetch_add(1, Ordering::Relaxed);
                self.inbound.borrow_mut().end();
            }
        }
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        self.poll_read(cx);
        loop {
            if self.pending.is_empty() {
                match self.queue.poll_drain(cx, &mut self.pending, WRITE_BUDGET) {
                    Poll::Ready(true) => {}
                    Poll::Ready(false) => return Poll::Ready(Ended::Written),
                    Poll::Pending => return Poll::Pending,
                }
            }
            // On the stack: this runs once per session and tick.
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = self.pending.len().min(MAX_SLICES);
            for (slice, frame) in slices.iter_mut().zip(&self.pending) {
                *slice = IoSlice::new(frame);
            }
            match Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ended::Failed),
                Poll::Ready(Ok(written)) => self.advance(written),
                Poll::Pending => {
                    // A client that stops reading must not hold its connection forever once
                    // its session has ended (slow consumer, heartbeat, shutdown).
                    if self.queue.poll_closed(cx) {
                        let linger = self
                            .linger
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_LINGER)));
                        if linger.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Ended::GaveUp);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Drops `written` bytes from the front of the pending frames.
    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.pending.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.pending.pop_front();
        }
    }

    /// Moves what the client sent into the request payload, while the session keeps up.
    fn poll_read(&mut self, cx: &mut Context<'_>) {
        loop {
            if !self.inbound.borrow_mut().has_room(cx) {
                return;
            }
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return,
                Poll::Ready(Err(_)) => return self.inbound.borrow_mut().end(),
                Poll::Ready(Ok(())) => {}
            }
            let mut buffer = BytesMut::with_capacity(READ_BYTES);
            match self.io.try_read_buf(&mut buffer) {
                Ok(0) => return self.inbound.borrow_mut().end(),
                Ok(_) => self.inbound.borrow_mut().push(buffer.freeze()),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return self.inbound.borrow_mut().end(),
            }
        }
    }
}

/// Reads and discards what the client still sends after the server's last bytes, until it
/// closes its side, for at most `within` and `max_bytes`: closing with unread bytes would reset
/// the connection and could lose the last answer on the client's side.
pub async fn drain(io: &mut TcpStream, within: std::time::Duration, max_bytes: usize) {
    use tokio::io::AsyncReadExt;
    // On the heap, only while draining: an array here would sit in every connection's future
    // (this future is part of it) for the connection's whole life, 4 KiB a session.
    let mut scratch = vec![0u8; READ_BYTES];
    let mut drained = 0;
    let _ = tokio::time::timeout(within, async {
        while drained < max_bytes {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    })
    .await;
}

/// Bytes the client sent, waiting for the session. Both ends live on the connection's
/// worker thread.
#[derive(Default)]
struct Inbound {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// The client's side has ended (or the socket failed).
    ended: bool,
    /// The session no longer reads.
    dropped: bool,
    session: Option<Waker>,
    connection: Option<Waker>,
}

impl Inbound {
    fn push(&mut self, chunk: Bytes) {
        self.buffered += chunk.len();
        self.chunks.push_back(chunk);
        if let Some(waker) = self.session.take() {
            waker.wake();
        }
    }

    fn end(&mut self) {
        self.ended = true;
        if let Some(waker) = self.session.take() {
            waker.wake();
        }
    }

    /// Whether to read more now; if not because the session is behind, wakes the
    /// connection when it catches up.
    fn has_room(&mut self, cx: &mut Context<'_>) -> bool {
        if self.ended || self.dropped {
            return false;
        }
        if self.buffered < MAX_INBOUND_BYTES {
            return true;
        }
        self.connection = Some(cx.waker().clone());
        false
    }
}

/// The request payload of an upgraded connection.
struct InboundStream(Rc<RefCell<Inbound>>);

impl Stream for InboundStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inbound = self.0.borrow_mut();
        if let Some(chunk) = inbound.chunks.pop_front() {
            inbound.buffered -= chunk.len();
            if let Some(waker) = inbound.connection.take() {
                waker.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if inbound.ended {
            return Poll::Ready(None);
        }
        inbound.session = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for InboundStream {
    fn drop(&mut self) {
        let mut inbound = self.0.borrow_mut();
        inbound.dropped = true;
        inbound.chunks.clear();
        if let Some(waker) = inbound.connection.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain's future is part of every upgraded connection's future for the connection's
    /// whole life: a buffer held in it costs its size per session (a 4 KiB array there once
    /// doubled the server's memory at 5,000 sessions).
    #[test]
    fn the_drain_future_holds_no_buffer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut io = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let future = drain(&mut io, std::time::Duration::from_millis(1), 1);
            assert!(
                std::mem::size_of_val(&future) < 512,
                "{} bytes",
                std::mem::size_of_val(&future)
            );
        });
    }
}
