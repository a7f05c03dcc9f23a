//! The broker's whole contract: what it accepts and what it sends.

use std::sync::Arc;

use actix::{Message, Recipient};
use bytes::Bytes;

use crate::broker::queue::OutboundQueue;
use crate::broker::subscription::Subscription;
use crate::protocol::close::CloseCause;

/// A session's id, from a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// How the broker reaches a session: its queue for data, a recipient for control.
#[derive(Clone)]
pub struct Subscriber {
    /// The session.
    pub id: SessionId,
    /// Its bounded outbound queue.
    pub queue: Arc<OutboundQueue>,
    /// Told when the broker ends the session (slow consumer, shutdown).
    pub control: Recipient<SessionEnded>,
}

/// Sent by a session when it is ready for data (server mode: at once; custom mode: after the
/// handshake echo is queued).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// Who.
    pub subscriber: Subscriber,
    /// What it receives.
    pub subscription: Subscription,
}

/// Sent by a session after a successful filter message: the broker switches the session to
/// the new subscription and queues `reply` before any data of the new subscription.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateSubscription {
    /// Who.
    pub id: SessionId,
    /// The new subscription.
    pub subscription: Subscription,
    /// The `{"filter": .., "error": null}` reply frame.
    pub reply: Bytes,
}

/// Sent by a session when it ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// Who.
    pub id: SessionId,
}

/// Sent by the server on shutdown: close every session with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll {
    /// The close to send.
    pub cause: CloseCause,
}

/// Sent by the broker to a session it has closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionEnded {
    /// Why.
    pub cause: CloseCause,
}
