//! Who is connected: every live session with its service and browser session cookie, so that
//! server-initiated messages (seed 001, seed 002's broadcast) reach one browser session's
//! connections, one service, or everyone. Several tabs with one cookie are several
//! connections of one browser session; none replaces another.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::{Message, Recipient};
use bytes::Bytes;

use crate::broker::SessionId;

/// A server-initiated message for one connection, already framed for its transport.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ServerMessage {
    /// The JSON text of the message (`{"type":"message","message":..}`).
    pub json: Bytes,
}

struct Connection {
    cookie: Option<String>,
    service: String,
    recipient: Recipient<ServerMessage>,
}

/// The registry of live connections, and how connections ended.
#[derive(Default)]
pub struct Registry {
    connections: Mutex<HashMap<SessionId, Connection>>,
    closes: Mutex<BTreeMap<u16, u64>>,
    filter_errors: AtomicU64,
}

/// Whom a message is for.
pub enum Audience<'a> {
    /// Every connection of one browser session (cookie id).
    BrowserSession(&'a str),
    /// Every connection to one service.
    Service(&'a str),
    /// Everyone.
    Everyone,
}

impl Registry {
    /// Adds a connection.
    pub fn register(
        &self,
        id: SessionId,
        cookie: Option<String>,
        service: &str,
        recipient: Recipient<ServerMessage>,
    ) {
        let connection = Connection {
            cookie,
            service: service.to_owned(),
            recipient,
        };
        self.lock().insert(id, connection);
    }

    /// Removes a connection.
    pub fn unregister(&self, id: SessionId) {
        self.lock().remove(&id);
    }

    /// Delivers a message; returns how many connections it was sent to.
    pub fn send(&self, audience: Audience<'_>, message: &ServerMessage) -> usize {
        let connections = self.lock();
        let mut sent = 0;
        for connection in connections.values() {
            let chosen = match audience {
                Audience::BrowserSession(cookie) => connection.cookie.as_deref() == Some(cookie),
                Audience::Service(service) => connection.service == service,
                Audience::Everyone => true,
            };
            if chosen {
                connection.recipient.do_send(message.clone());
                sent += 1;
            }
        }
        sent
    }

    /// Counts a session that ended with a close code (the client's own included).
    pub fn count_close(&self, code: u16) {
        *self
            .closes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Counts a filter message answered with errors.
    pub fn count_filter_error(&self) {
        self.filter_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Closes by code so far.
    pub fn closes(&self) -> BTreeMap<u16, u64> {
        self.closes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Filter messages answered with errors so far.
    pub fn filter_errors(&self) -> u64 {
        self.filter_errors.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
