//! `SseSessionActor`: a server-sent-events session (seed 002). The same `Subscription`, filter
//! merge, filter-message rate and bounded outbound queue as a WebSocket session; filter
//! updates arrive over HTTP (`POST /api/services/{name}/events/{handle}/filter`, with the
//! random handle the `session` event gave) and are answered with the same
//! `{"filter": .., "error": ..}` reply, also queued as a `filter` event in stream order. The
//! session ends with a `close` event carrying the code and reason a WebSocket would get.
//!
//! `Last-Event-ID` is ignored on purpose: the stream carries live positions, not a log, so a
//! reconnecting client is best served by the next tick, which has every track's newest
//! observation.

use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};

use super::SessionParts;
use super::budget::{FilterBudget, MessageBudget, Verdict};
use crate::broker::queue::Push;
use crate::broker::subscription::{Subscription, WireMode};
use crate::broker::{SessionEnded, Subscribe, Subscriber, Unsubscribe, UpdateSubscription};
use crate::filter::{FilterError, FilterState, WherePermit};
use crate::geometry::Wkid;
use crate::protocol::close::CloseCause;
use crate::protocol::filter_message::{self, ClientMessage};
use crate::protocol::sse;

/// A comment line this often keeps proxies from closing an idle stream (seed 002: 15 s).
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// The capability that lets its holder change one SSE session's filter: 128 random bits, so
/// that no client can reach another's session by guessing or counting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SseHandle(String);

impl SseHandle {
    /// A fresh handle from the thread's cryptographically secure generator.
    pub fn random() -> SseHandle {
        SseHandle(format!("{:032x}", rand::random::<u128>()))
    }

    /// A fresh handle naming its node (`<tag>-<random>`), for a node of a cluster.
    pub fn tagged(tag: &str) -> SseHandle {
        SseHandle(format!("{tag}-{:032x}", rand::random::<u128>()))
    }

    /// A handle as a client sent it back (looked up, never trusted).
    pub fn from_client(text: &str) -> SseHandle {
        SseHandle(text.to_owned())
    }

    /// The handle's text, as it appears in the filter URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Called once when an SSE session stops, with its handle (unregisters it).
pub type OnStop = Box<dyn FnOnce(&SseHandle)>;

/// One SSE session.
pub struct SseSessionActor {
    parts: SessionParts,
    /// `Sse` (Esri JSON) or `GeoJsonSse`.
    mode: WireMode,
    handle: SseHandle,
    out_sr: Wkid,
    state: FilterState,
    where_permit: Option<WherePermit>,
    filter_budget: FilterBudget,
    message_budget: MessageBudget,
    ended: bool,
    on_stop: Option<OnStop>,
}

impl SseSessionActor {
    /// A session whose query parameters were validated, in `mode` (`Sse` or `GeoJsonSse`);
    /// `on_stop` unregisters its handle.
    pub fn new(
        parts: SessionParts,
        mode: WireMode,
        handle: SseHandle,
        out_sr: Wkid,
        state: FilterState,
        where_permit: Option<WherePermit>,
        on_stop: OnStop,
    ) -> SseSessionActor {
        let filter_budget = FilterBudget::new(parts.settings.filter_rate);
        let message_budget = MessageBudget::new(parts.settings.message_rate);
        debug_assert!(mode.is_sse(), "an SSE session frames events");
        SseSessionActor {
            parts,
            mode,
            handle,
            out_sr,
            state,
            where_permit,
            filter_budget,
            message_budget,
            ended: false,
            on_stop: Some(on_stop),
        }
    }

    fn subscription(&self) -> Subscription {
        Subscription::new(
            self.mode,
            self.out_sr,
            &self.state,
            &self.parts.service.service.schema,
        )
    }

    /// Queues a filter reply as a `filter` event and returns its JSON. A client that does not
    /// read the stream its POSTs fill is a slow consumer.
    fn reply(&mut self, ctx: &mut Context<SseSessionActor>, errors: &[FilterError]) -> String {
        let reply = filter_message::encode_reply(&self.state, errors);
        let event = sse::event("filter", reply.as_bytes());
        if self.parts.queue.push_control(event) == Push::Full {
            self.end(ctx, CloseCause::SlowConsumer);
        }
        reply
    }

    /// Every way an SSE session ends: a `close` event with the code and reason a WebSocket
    /// would get, then the end of the stream.
    fn end(&mut self, ctx: &mut Context<SseSessionActor>, cause: CloseCause) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        log::info!(
            "sse session {} ({}) closed: {} {}",
            self.parts.id.0,
            self.parts.peer,
            cause.code(),
            cause.reason()
        );
        self.parts.registry.count_close(cause.code());
        self.parts.queue.close(Some(sse::close_event(&cause)));
        ctx.stop();
    }
}

impl Actor for SseSessionActor {
    type Context = Context<SseSessionActor>;

    fn started(&mut self, ctx: &mut Context<SseSessionActor>) {
        let service = &self.parts.service.service.name;
        log::info!(
            "sse session {} ({}) opened, service {service}",
            self.parts.id.0,
            self.parts.peer
        );
        let endpoint = match self.mode {
            WireMode::GeoJsonSse => "geojson",
            _ => "events",
        };
        let hello = serde_json::json!({
            "session": self.handle.as_str(),
            "filterUrl": format!("/api/services/{service}/{endpoint}/{}/filter", self.handle.as_str()),
            "filter": filter_message::state_json(&self.state),
        });
        self.parts
            .queue
            .push_control(sse::event("session", hello.to_string().as_bytes()));
        let subscriber = Subscriber {
            id: self.parts.id,
            queue: self.parts.queue.clone(),
            control: ctx.address().recipient(),
        };
        let subscription = self.subscription();
        self.parts.service.broker.do_send(Subscribe {
            subscriber,
            subscription,
        });
        ctx.run_interval(SSE_HEARTBEAT, |session, ctx| {
            match session.parts.queue.push_control(sse::heartbeat()) {
                Push::Closed => ctx.stop(),
                Push::Full => session.end(ctx, CloseCause::SlowConsumer),
                Push::Queued | Push::Conflated => {}
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<SseSessionActor>) {
        log::info!("sse session {} stopped", self.parts.id.0);
        self.parts
            .service
            .broker
            .do_send(Unsubscribe { id: self.parts.id });
        self.parts.queue.close(None);
        if let Some(on_stop) = self.on_stop.take() {
            on_stop(&self.handle);
        }
    }
}

/// Sent by `POST .../events/{handle}/filter` with the request body.
#[derive(Message)]
#[rtype(result = "FilterAnswer")]
pub struct ApplyFilter {
    /// The body, `{"filter": ...}`.
    pub text: String,
}

/// The HTTP answer to a filter update: the reply, and whether it was refused for the rate.
pub struct FilterAnswer {
    /// `{"filter": .., "error": ..}` (or `pong` for a plain `ping`).
    pub reply: String,
    /// Over the session's filter-message rate (the reply names the limit).
    pub rate_limited: bool,
}

impl Handler<ApplyFilter> for SseSessionActor {
    type Result = actix::MessageResult<ApplyFilter>;

    fn handle(
        &mut self,
        message: ApplyFilter,
        ctx: &mut Context<SseSessionActor>,
    ) -> actix::MessageResult<ApplyFilter> {
        let answer = |reply: String| FilterAnswer {
            reply,
            rate_limited: false,
        };
        if !self.message_budget.take(Instant::now()) {
            let error = FilterError::Malformed("too many messages; the session is closed.".into());
            let reply = filter_message::encode_reply(&self.state, &[error]);
            self.end(ctx, CloseCause::MessageFlood);
            return actix::MessageResult(FilterAnswer {
                reply,
                rate_limited: true,
            });
        }
        let update = match filter_message::decode(&message.text) {
            ClientMessage::Filter(update) => match self.filter_budget.take(Instant::now()) {
                Verdict::Allowed => update,
                Verdict::Refused(err) => {
                    return actix::MessageResult(FilterAnswer {
                        reply: self.reply(ctx, &[err]),
                        rate_limited: true,
                    });
                }
                Verdict::Flood(err) => {
                    let reply = self.reply(ctx, &[err]);
                    self.end(ctx, CloseCause::FilterFlood);
                    return actix::MessageResult(FilterAnswer {
                        reply,
                        rate_limited: true,
                    });
                }
            },
            ClientMessage::Ping => return actix::MessageResult(answer("pong".to_owned())),
            ClientMessage::Unrecognized(err) => {
                self.parts.registry.count_filter_error();
                return actix::MessageResult(answer(self.reply(ctx, &[err])));
            }
        };
        let mut next = self.state.clone();
        let applied = next
            .apply(
                update,
                &self.parts.service.service.schema,
                self.out_sr,
                self.parts.settings.filter_limits,
            )
            .and_then(|()| super::admit(&self.parts.service, &next).map_err(|err| vec![err]));
        actix::MessageResult(answer(match applied {
            Ok(permit) => {
                self.state = next;
                self.where_permit = permit;
                let reply = filter_message::encode_reply(&self.state, &[]);
                // The broker queues the event before any data of the new subscription.
                self.parts.service.broker.do_send(UpdateSubscription {
                    id: self.parts.id,
                    subscription: self.subscription(),
                    reply: sse::event("filter", reply.as_bytes()),
                });
                reply
            }
            Err(errors) => {
                self.parts.registry.count_filter_error();
                self.reply(ctx, &errors)
            }
        }))
    }
}

impl Handler<SessionEnded> for SseSessionActor {
    type Result = ();

    /// The broker ended the session (slow consumer, shutdown).
    fn handle(&mut self, message: SessionEnded, ctx: &mut Context<SseSessionActor>) {
        self.end(ctx, message.cause);
    }
}
