//! `SseSessionActor`: a server-sent-events session (seed 002). The same `Subscription`, filter
//! merge and bounded outbound queue as a WebSocket session; filter updates arrive over HTTP
//! (`POST /api/services/{name}/events/{session}/filter`) and are answered with the same
//! `{"filter": .., "error": ..}` reply, also queued as a `filter` event in stream order.
//!
//! `Last-Event-ID` is ignored on purpose: the stream carries live positions, not a log, so a
//! reconnecting client is best served by the next tick, which has every track's newest
//! observation.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};

use crate::broker::{
    SessionEnded, SessionId, Subscribe, Subscriber, Unsubscribe, UpdateSubscription,
};
use crate::config::SessionSettings;
use crate::filter::FilterState;
use crate::geometry::Wkid;
use crate::http::admission::ConnectionSlot;
use crate::protocol::filter_message::{self, ClientMessage};
use crate::protocol::sse;
use crate::server::ServiceRuntime;
use crate::session::subscription::{Subscription, WireMode};
use crate::session::transport::{OutboundQueue, Push};

/// A comment line this often keeps proxies from closing an idle stream (seed 002: 15 s).
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// One SSE session.
pub struct SseSessionActor {
    id: SessionId,
    service: Arc<ServiceRuntime>,
    settings: SessionSettings,
    queue: Arc<OutboundQueue>,
    out_sr: Wkid,
    state: FilterState,
    on_stop: Option<Box<dyn FnOnce(SessionId)>>,
    _slot: ConnectionSlot,
}

impl SseSessionActor {
    /// A session whose query parameters were validated; `on_stop` unregisters it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        service: Arc<ServiceRuntime>,
        settings: SessionSettings,
        queue: Arc<OutboundQueue>,
        out_sr: Wkid,
        state: FilterState,
        slot: ConnectionSlot,
        on_stop: Box<dyn FnOnce(SessionId)>,
    ) -> SseSessionActor {
        SseSessionActor {
            id,
            service,
            settings,
            queue,
            out_sr,
            state,
            on_stop: Some(on_stop),
            _slot: slot,
        }
    }
}

impl Actor for SseSessionActor {
    type Context = Context<SseSessionActor>;

    fn started(&mut self, ctx: &mut Context<SseSessionActor>) {
        log::info!(
            "sse session {} opened, service {}",
            self.id.0,
            self.service.service.name
        );
        let hello = serde_json::json!({
            "session": self.id.0,
            "filterUrl": format!("/api/services/{}/events/{}/filter", self.service.service.name, self.id.0),
            "filter": filter_message::state_json(&self.state),
        });
        self.queue
            .push_control(sse::event("session", hello.to_string().as_bytes()));
        let subscriber = Subscriber {
            id: self.id,
            queue: self.queue.clone(),
            control: ctx.address().recipient(),
        };
        let subscription = Subscription::new(
            WireMode::Sse,
            self.out_sr,
            &self.state,
            &self.service.service.schema,
        );
        self.service.broker.do_send(Subscribe {
            subscriber,
            subscription,
        });
        ctx.run_interval(SSE_HEARTBEAT, |session, ctx| {
            if session.queue.push_control(sse::heartbeat()) == Push::Closed {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<SseSessionActor>) {
        log::info!("sse session {} closed", self.id.0);
        self.service.broker.do_send(Unsubscribe { id: self.id });
        self.queue.close(None);
        if let Some(on_stop) = self.on_stop.take() {
            on_stop(self.id);
        }
    }
}

/// Sent by `POST .../events/{session}/filter` with the request body.
#[derive(Message)]
#[rtype(result = "String")]
pub struct ApplyFilter {
    /// The body, `{"filter": ...}`.
    pub text: String,
}

impl Handler<ApplyFilter> for SseSessionActor {
    type Result = String;

    fn handle(&mut self, message: ApplyFilter, _: &mut Context<SseSessionActor>) -> String {
        let update = match filter_message::decode(&message.text) {
            ClientMessage::Filter(update) => update,
            ClientMessage::Ping => return "pong".to_owned(),
            ClientMessage::Unrecognized(err) => {
                return filter_message::encode_reply(&self.state, &[err]);
            }
        };
        let mut next = self.state.clone();
        match next.apply(
            update,
            &self.service.service.schema,
            self.out_sr,
            self.settings.filter_limits,
        ) {
            Ok(()) => {
                self.state = next;
                let reply = filter_message::encode_reply(&self.state, &[]);
                let subscription = Subscription::new(
                    WireMode::Sse,
                    self.out_sr,
                    &self.state,
                    &self.service.service.schema,
                );
                let event = sse::event("filter", reply.as_bytes());
                self.service.broker.do_send(UpdateSubscription {
                    id: self.id,
                    subscription,
                    reply: event,
                });
                reply
            }
            Err(errors) => {
                let reply = filter_message::encode_reply(&self.state, &errors);
                self.queue
                    .push_control(sse::event("filter", reply.as_bytes()));
                reply
            }
        }
    }
}

impl Handler<SessionEnded> for SseSessionActor {
    type Result = ();

    fn handle(&mut self, message: SessionEnded, ctx: &mut Context<SseSessionActor>) {
        log::info!(
            "sse session {} ended: {}",
            self.id.0,
            message.cause.reason()
        );
        ctx.stop();
    }
}
