//! `SessionActor`: one per WebSocket. Parses inbound frames (custom-mode handshake, filter
//! messages, `ping`), keeps the session's filter state and output spatial reference, answers
//! every filter message with the `{"filter": .., "error": ..}` reply, runs the heartbeat, and
//! ends the session through one function that sends a close code and reason.

pub mod budget;
pub mod registry;
pub mod socket;
pub mod sse_stream;
pub mod transport;

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler};
use actix_http::ws::{CloseCode, CloseReason, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};

use crate::broker::ServiceRuntime;
use crate::broker::queue::{OutboundQueue, Push};
use crate::broker::subscription::{Deflate, Subscription, WireMode};
use crate::broker::{
    SessionEnded, SessionId, Subscribe, Subscriber, Unsubscribe, UpdateSubscription,
};
use crate::config::SessionSettings;
use crate::filter::{FilterError, FilterState, FilterUpdate, WherePermit};
use crate::geometry::Wkid;
use crate::protocol::close::CloseCause;
use crate::protocol::filter_message::{self, ClientMessage};
use crate::protocol::{handshake, ws_frame};
use budget::ConnectionSlot;
pub use budget::MessageBudget;
use budget::{FilterBudget, Verdict};

/// Where a session is in its life.
enum Phase {
    /// Custom mode: waiting for the handshake frame.
    AwaitingHandshake,
    /// Receiving data in this output spatial reference.
    Streaming(Wkid),
    /// The broadcast endpoint: each text message is a document of observations to publish.
    Publishing(Publishing),
    /// A close is queued or scheduled; inbound frames are ignored.
    Closing,
}

/// A publisher's session (`/StreamServer/broadcast`, docs/protocol.md §9).
pub struct Publishing {
    /// Answer every message with `ack` (the `ack=true` URL parameter), not only failures.
    pub acknowledge: bool,
    /// Messages so far (the reply to one names its number).
    pub sequence: u64,
    /// Messages per second (FEATURESTREAM_INGEST_RATE); past it a message is refused.
    pub budget: MessageBudget,
    /// Most features per message.
    pub max_features: usize,
    /// Most tracks the service holds (named in a refusal).
    pub max_tracks: usize,
}

/// One WebSocket session.
pub struct SessionActor {
    id: SessionId,
    mode: WireMode,
    service: Arc<ServiceRuntime>,
    settings: SessionSettings,
    queue: Arc<OutboundQueue>,
    phase: Phase,
    state: FilterState,
    /// The state's share of the service's filter budget.
    where_permit: Option<WherePermit>,
    last_heard: Instant,
    peer: String,
    filter_budget: FilterBudget,
    message_budget: MessageBudget,
    /// A fragmented text message being reassembled (at most `max_frame_bytes`).
    fragments: Option<BytesMut>,
    cookie: Option<String>,
    registry: Arc<registry::Registry>,
    /// Held for the session's life; dropping it frees a place under the connection cap.
    _slot: ConnectionSlot,
}

/// What every session starts with, whatever its mode.
pub struct SessionParts {
    /// From the server's counter.
    pub id: SessionId,
    /// The service it streams.
    pub service: Arc<ServiceRuntime>,
    /// Limits and timers.
    pub settings: SessionSettings,
    /// Its bounded outbound queue (the 101 response streams it).
    pub queue: Arc<OutboundQueue>,
    /// The peer's address, for logs.
    pub peer: String,
    /// Its place under the connection cap.
    pub slot: ConnectionSlot,
    /// The browser session cookie, if any.
    pub cookie: Option<String>,
    /// Where server-initiated messages find it.
    pub registry: Arc<registry::Registry>,
    /// Whether its data frames go compressed (permessage-deflate negotiated).
    pub deflate: Deflate,
}

impl SessionActor {
    /// A custom-mode session: waits for the handshake (seed 000).
    pub fn custom(parts: SessionParts) -> SessionActor {
        let deflate = parts.deflate;
        SessionActor::new(
            parts,
            WireMode::Custom(deflate),
            Phase::AwaitingHandshake,
            FilterState::default(),
        )
    }

    /// A session whose URL parameters were validated (and its where clause admitted) before
    /// the upgrade, streaming at once in `mode`: ArcGIS server mode or a GeoJSON stream.
    pub fn subscribed(
        parts: SessionParts,
        mode: WireMode,
        out_sr: Wkid,
        state: FilterState,
        where_permit: Option<WherePermit>,
    ) -> SessionActor {
        let mut session = SessionActor::new(parts, mode, Phase::Streaming(out_sr), state);
        session.where_permit = where_permit;
        session
    }

    /// A publisher on the broadcast endpoint (admitted before the upgrade).
    pub fn publisher(parts: SessionParts, publishing: Publishing) -> SessionActor {
        let deflate = parts.deflate;
        SessionActor::new(
            parts,
            WireMode::Custom(deflate),
            Phase::Publishing(publishing),
            FilterState::default(),
        )
    }

    fn new(parts: SessionParts, mode: WireMode, phase: Phase, state: FilterState) -> SessionActor {
        let filter_budget = FilterBudget::new(parts.settings.filter_rate);
        let message_budget = MessageBudget::new(parts.settings.message_rate);
        SessionActor {
            id: parts.id,
            mode,
            service: parts.service,
            settings: parts.settings,
            queue: parts.queue,
            phase,
            state,
            where_permit: None,
            last_heard: Instant::now(),
            peer: parts.peer,
            filter_budget,
            message_budget,
            fragments: None,
            cookie: parts.cookie,
            registry: parts.registry,
            _slot: parts.slot,
        }
    }

    fn subscriber(&self, ctx: &mut Context<SessionActor>) -> Subscriber {
        Subscriber {
            id: self.id,
            queue: self.queue.clone(),
            control: ctx.address().recipient(),
        }
    }

    fn subscription(&self, out_sr: Wkid) -> Subscription {
        Subscription::new(self.mode, out_sr, &self.state, &self.service.service.schema)
    }

    /// Every way a session ends goes through here: queue the close frame, stop the actor.
    fn close(&mut self, ctx: &mut Context<SessionActor>, cause: CloseCause) {
        log::info!(
            "session {} ({}) closed: {} {}",
            self.id.0,
            self.peer,
            cause.code(),
            cause.reason()
        );
        self.phase = Phase::Closing;
        self.registry.count_close(cause.code());
        self.queue.close(Some(cause.frame()));
        ctx.stop();
    }

    /// Queues a reply or control frame; a client that does not read what it provokes past
    /// the queue's allowance is a slow consumer.
    fn send_control(&mut self, ctx: &mut Context<SessionActor>, frame: Bytes) {
        if self.queue.push_control(frame) == Push::Full {
            self.close(ctx, CloseCause::SlowConsumer);
        }
    }

    fn send_text(&mut self, ctx: &mut Context<SessionActor>, text: &str) {
        self.send_control(ctx, ws_frame::text_frame(text.as_bytes()));
    }

    fn on_text_bytes(&mut self, ctx: &mut Context<SessionActor>, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.on_text(ctx, text),
            Err(_) => self.close(ctx, CloseCause::ProtocolError),
        }
    }

    /// A fragment of a message: text messages are reassembled within the frame limit (what a
    /// fragmented message accumulates is capped like a single frame); binary ones refused.
    fn on_fragment(&mut self, ctx: &mut Context<SessionActor>, item: Item) {
        let (chunk, last) = match item {
            Item::FirstText(chunk) => {
                self.fragments = Some(BytesMut::new());
                (chunk, false)
            }
            Item::FirstBinary(_) => return self.close(ctx, CloseCause::BinaryFrame),
            Item::Continue(chunk) => (chunk, false),
            Item::Last(chunk) => (chunk, true),
        };
        let Some(message) = &mut self.fragments else {
            // actix-http's codec refuses a continuation without a first fragment.
            return self.close(ctx, CloseCause::ProtocolError);
        };
        if message.len() + chunk.len() > self.settings.max_frame_bytes {
            let max_bytes = self.settings.max_frame_bytes;
            return self.close(ctx, CloseCause::FrameTooLarge { max_bytes });
        }
        message.extend_from_slice(&chunk);
        if last && let Some(message) = self.fragments.take() {
            self.on_text_bytes(ctx, &message);
        }
    }

    fn on_text(&mut self, ctx: &mut Context<SessionActor>, text: &str) {
        // Seed 001: plain clients send `ping` and get `pong`, in any phase.
        if text.trim().eq_ignore_ascii_case("ping") {
            self.send_text(ctx, "pong");
            return;
        }
        match self.phase {
            Phase::AwaitingHandshake => self.on_handshake(ctx, text),
            Phase::Streaming(out_sr) => self.on_message(ctx, text, out_sr),
            Phase::Publishing(_) => self.on_publish(ctx, text),
            Phase::Closing => {}
        }
    }

    /// A publisher's message: parsed and validated feature by feature, the valid ones
    /// published; the reply (every refused feature by index, or an `ack` when asked for) goes
    /// out once the broker has recorded them.
    fn on_publish(&mut self, ctx: &mut Context<SessionActor>, text: &str) {
        use crate::protocol::ingest_report::{broadcast_error, broadcast_reply};
        let Phase::Publishing(publishing) = &mut self.phase else {
            return;
        };
        publishing.sequence += 1;
        let (sequence, acknowledge) = (publishing.sequence, publishing.acknowledge);
        let (max_features, max_tracks) = (publishing.max_features, publishing.max_tracks);
        let refuse = |session: &mut SessionActor, ctx: &mut Context<SessionActor>, error: &str| {
            session
                .service
                .ingest
                .refused_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            session.send_text(ctx, &broadcast_error(sequence, error));
        };
        if !publishing.budget.take(Instant::now()) {
            return refuse(
                self,
                ctx,
                "too many messages: this one was dropped (see FEATURESTREAM_INGEST_RATE)",
            );
        }
        if let Some(fault) = self.service.durability_fault() {
            return refuse(
                self,
                ctx,
                &format!(
                    "the latest state cannot be made durable ({}): this message was not accepted; send it again shortly",
                    fault.message
                ),
            );
        }
        let received_ms = crate::broker::now_ms();
        let schema = &self.service.service.schema;
        let mut ingested =
            match crate::ingest::parse_document(text, schema, received_ms, 0, max_features) {
                Ok(ingested) => ingested,
                Err(error) => return refuse(self, ctx, &error.to_string()),
            };
        let receipt = self.service.publish(&mut ingested, received_ms);
        let service = self.service.clone();
        let settled = async move {
            let mut report = crate::ingest::Report::default();
            let settled = service
                .settle(&mut report, ingested, receipt, max_tracks)
                .await;
            settled.map(|()| report)
        };
        ctx.spawn(actix::fut::wrap_future(settled).map(
            move |settled, session: &mut SessionActor, ctx| match settled {
                Ok(report) => {
                    if let Some(reply) = broadcast_reply(sequence, &report, acknowledge) {
                        session.send_text(ctx, &reply);
                    }
                }
                Err(_) => session.close(ctx, CloseCause::ShuttingDown),
            },
        ));
    }

    fn on_handshake(&mut self, ctx: &mut Context<SessionActor>, text: &str) {
        let mut handshake = match handshake::decode(text) {
            Ok(handshake) => handshake,
            Err(reason) => {
                // The SDK reconnects at once after any close (docs/protocol.md): wait a moment
                // so that a handshake it will repeat does not become hundreds per second.
                self.phase = Phase::Closing;
                ctx.run_later(self.settings.handshake_reject_delay, move |session, ctx| {
                    session.close(ctx, CloseCause::BadHandshake(reason));
                });
                return;
            }
        };
        // A filter that cannot be applied keeps the session (closing would make the SDK send
        // the same handshake again at once, forever): the echo says that no filter is in
        // force, the next frame is the filter reply naming the problem, and the stream
        // carries what the applied state (everything) selects.
        let mut state = FilterState::default();
        let applied = state
            .apply(
                handshake.update.clone(),
                &self.service.service.schema,
                handshake.out_sr,
                self.settings.filter_limits,
            )
            .and_then(|()| admit(&self.service, &state).map_err(|err| vec![err]));
        let refused = match applied {
            Ok(permit) => {
                self.where_permit = permit;
                None
            }
            Err(errors) => {
                state = FilterState::default();
                handshake.filter_echo = serde_json::Value::Null;
                handshake.out_fields_echo = serde_json::Value::Null;
                Some(errors)
            }
        };
        self.state = state;
        self.phase = Phase::Streaming(handshake.out_sr);
        self.send_text(ctx, &handshake::encode_echo(&handshake));
        if let Some(errors) = refused {
            log::debug!(
                "session {} handshake filter refused: {}",
                self.id.0,
                join_errors(&errors)
            );
            self.registry.count_filter_error();
            self.send_text(ctx, &filter_message::encode_reply(&self.state, &errors));
        }
        let subscriber = self.subscriber(ctx);
        let subscription = self.subscription(handshake.out_sr);
        self.service.broker.do_send(Subscribe {
            subscriber,
            subscription,
        });
    }

    fn on_message(&mut self, ctx: &mut Context<SessionActor>, text: &str, out_sr: Wkid) {
        let update: FilterUpdate = match filter_message::decode(text) {
            ClientMessage::Filter(update) => match self.filter_budget.take(Instant::now()) {
                Verdict::Allowed => update,
                Verdict::Refused(err) => {
                    self.send_text(ctx, &filter_message::encode_reply(&self.state, &[err]));
                    return;
                }
                Verdict::Flood(err) => {
                    self.send_text(ctx, &filter_message::encode_reply(&self.state, &[err]));
                    self.close(ctx, CloseCause::FilterFlood);
                    return;
                }
            },
            ClientMessage::Ping => {
                self.send_text(ctx, "pong");
                return;
            }
            ClientMessage::Unrecognized(err) => {
                self.registry.count_filter_error();
                self.send_text(ctx, &filter_message::encode_reply(&self.state, &[err]));
                return;
            }
        };
        let mut next = self.state.clone();
        let applied = next
            .apply(
                update,
                &self.service.service.schema,
                out_sr,
                self.settings.filter_limits,
            )
            .and_then(|()| admit(&self.service, &next).map_err(|err| vec![err]));
        match applied {
            Ok(permit) => {
                self.state = next;
                self.where_permit = permit;
                let reply =
                    ws_frame::text_frame(filter_message::encode_reply(&self.state, &[]).as_bytes());
                let subscription = self.subscription(out_sr);
                // The broker queues the reply before any frame of the new subscription.
                self.service.broker.do_send(UpdateSubscription {
                    id: self.id,
                    subscription,
                    reply,
                });
            }
            Err(errors) => {
                log::debug!(
                    "session {} filter refused: {}",
                    self.id.0,
                    join_errors(&errors)
                );
                self.registry.count_filter_error();
                self.send_text(ctx, &filter_message::encode_reply(&self.state, &errors));
            }
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<SessionActor>) {
        if self.last_heard.elapsed() > self.settings.heartbeat_interval * 2 {
            self.close(ctx, CloseCause::HeartbeatTimeout);
            return;
        }
        self.send_control(ctx, transport::ping_frame());
    }
}

/// Takes `state`'s share of the service's filter budget (none without a where clause).
pub fn admit(
    service: &ServiceRuntime,
    state: &FilterState,
) -> Result<Option<WherePermit>, FilterError> {
    state
        .filter
        .where_clause
        .as_ref()
        .map(|clause| service.where_ledger.admit(clause))
        .transpose()
}

fn join_errors(errors: &[FilterError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Actor for SessionActor {
    type Context = Context<SessionActor>;

    fn started(&mut self, ctx: &mut Context<SessionActor>) {
        let recipient = ctx.address().recipient();
        self.registry.register(
            self.id,
            self.cookie.clone(),
            &self.service.service.name,
            recipient,
        );
        log::info!(
            "session {} ({}) opened: {:?} mode, service {}",
            self.id.0,
            self.peer,
            self.mode,
            self.service.service.name
        );
        ctx.run_interval(self.settings.heartbeat_interval, |session, ctx| {
            session.heartbeat(ctx)
        });
        if let Phase::Streaming(out_sr) = self.phase {
            let subscriber = self.subscriber(ctx);
            let subscription = self.subscription(out_sr);
            self.service.broker.do_send(Subscribe {
                subscriber,
                subscription,
            });
        }
    }

    fn stopped(&mut self, _: &mut Context<SessionActor>) {
        self.registry.unregister(self.id);
        self.service.broker.do_send(Unsubscribe { id: self.id });
        self.queue.close(None);
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for SessionActor {
    fn handle(&mut self, frame: Result<Frame, ProtocolError>, ctx: &mut Context<SessionActor>) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        if !self.message_budget.take(Instant::now()) {
            self.close(ctx, CloseCause::MessageFlood);
            return;
        }
        match frame {
            Ok(Frame::Text(bytes)) => self.on_text_bytes(ctx, &bytes),
            Ok(Frame::Continuation(item)) => self.on_fragment(ctx, item),
            Ok(Frame::Binary(_)) => self.close(ctx, CloseCause::BinaryFrame),
            Ok(Frame::Ping(payload)) => self.send_control(ctx, transport::pong_frame(&payload)),
            // Only a pong proves the client is there and reading: other frames do not.
            Ok(Frame::Pong(_)) => self.last_heard = Instant::now(),
            Ok(Frame::Close(reason)) => {
                let code = reason
                    .as_ref()
                    .map_or(1000, |reason| u16::from(reason.code));
                log::info!(
                    "session {} ({}) closed by client: {code}",
                    self.id.0,
                    self.peer
                );
                self.registry.count_close(code);
                self.phase = Phase::Closing;
                self.queue.close(Some(echo_close(reason)));
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => self.close(
                ctx,
                CloseCause::FrameTooLarge {
                    max_bytes: self.settings.max_frame_bytes,
                },
            ),
            Err(err) => {
                log::debug!("session {} protocol error: {err}", self.id.0);
                self.close(ctx, CloseCause::ProtocolError);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<SessionActor>) {
        if !matches!(self.phase, Phase::Closing) {
            log::info!("session {} ({}) disconnected", self.id.0, self.peer);
        }
        ctx.stop();
    }
}

/// The close frame answering a client's close: its code, or 1000 when it sent none.
fn echo_close(reason: Option<CloseReason>) -> Bytes {
    let code: u16 = reason.map_or(1000, |reason| match reason.code {
        CloseCode::Other(code) if !(3000..=4999).contains(&code) => 1000,
        code => code.into(),
    });
    let code = if code == 1005 || code == 1006 {
        1000
    } else {
        code
    };
    Bytes::copy_from_slice(&[0x88, 0x02, (code >> 8) as u8, code as u8])
}

impl Handler<SessionEnded> for SessionActor {
    type Result = ();

    /// The broker ended the session (slow consumer, shutdown): say so in a close frame.
    fn handle(&mut self, message: SessionEnded, ctx: &mut Context<SessionActor>) {
        self.close(ctx, message.cause);
    }
}

impl Handler<registry::ServerMessage> for SessionActor {
    type Result = ();

    fn handle(&mut self, message: registry::ServerMessage, ctx: &mut Context<SessionActor>) {
        // Custom mode before its handshake must see the echo first (docs/protocol.md §4.1).
        if matches!(self.phase, Phase::Streaming(_)) {
            self.send_control(ctx, ws_frame::text_frame(&message.json));
        }
    }
}
