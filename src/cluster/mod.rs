//! The NATS backbone, for running several nodes as one service (`FEATURESTREAM_NATS_URL`).
//! Unset, a node is alone and nothing here runs.
//!
//! With it, each service has a log in a JetStream stream (`naming`), and every node's state
//! is the same fold of it:
//! - sources (HTTP and WebSocket ingest, the simulator, subscribed NATS subjects) hand their
//!   batches to the `publisher`, which appends each batch to the log as one message (`codec`)
//!   with no compare-and-set: the log's order decides;
//! - every node, the accepting one included, applies what its `replica` reads of the log, in
//!   the log's order, by one rule (an observation replaces its track's only if strictly newer
//!   by the start-time field; a new track past the limit is refused), numbering each
//!   observation by its place in the log; so every node holds the same state, fans out the
//!   same bytes, and tells the accepting node's publishers what became of their observations
//!   (the accepting node applies its own messages from the observations it appended, at their
//!   place in the log, instead of decoding their bytes back into the same values);
//! - one node at a time (a `lease`) writes a `checkpoint` of the state now and then and drops
//!   the log before the previous one; a starting or reconnected node reads the newest
//!   checkpoint and the log after it, and is ready (`/readyz`) once it has caught up;
//! - the simulator of a service runs where its `lease` is held, one node at a time;
//! - a service may also take observations from a NATS subject or a JetStream stream
//!   (`subject_ingest`);
//! - `control` carries server-initiated messages and SSE filter updates to the node that
//!   holds the session.

mod checkpoint;
mod codec;
pub mod control;
mod lease;
pub mod naming;
mod publisher;
mod replica;
mod subject_ingest;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub use codec::Codec;

/// How long a lease lives without renewal before another node may take it; its holder stops
/// using it after half of this without a renewal, so two holders never overlap.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// How the node stands with the backbone, for `/readyz`, `/api/stats` and `/metrics`.
#[derive(Default)]
pub struct Health {
    services: Vec<String>,
    connected: AtomicBool,
    /// Services whose replica has not caught up with the stream since the last (re)connect.
    lagging: Mutex<HashSet<String>>,
    /// Connections lost since start.
    pub disconnects: AtomicU64,
    /// Reads of the whole latest state after a (re)connect or a gap.
    pub resyncs: AtomicU64,
    /// Observations stored in the backbone by this node.
    pub stored: AtomicU64,
    /// Checkpoints this node wrote (each lets the log before the previous one go).
    pub checkpoints: AtomicU64,
    /// Observations read back from the backbone.
    pub replicated: AtomicU64,
    /// Backbone messages that are not observations of the service (logged, skipped).
    pub unreadable: AtomicU64,
    /// Observations the backbone did not take (unreachable): their publishers were told.
    pub unstored: AtomicU64,
    /// Slow-consumer reports: messages a subscription that fell behind dropped.
    pub slow_consumers: AtomicU64,
}

impl Health {
    /// A health record for a node serving `services`, none caught up yet.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Health {
        let services: Vec<String> = services.into_iter().map(str::to_owned).collect();
        Health {
            lagging: Mutex::new(services.iter().cloned().collect()),
            services,
            ..Health::default()
        }
    }

    fn lagging(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.lagging
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the node is connected and every service has caught up with the stream.
    pub fn is_ready(&self) -> bool {
        self.is_connected() && self.lagging().is_empty()
    }

    /// Whether the node is connected to NATS.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Services not caught up, sorted (for `/readyz`).
    pub fn lagging_services(&self) -> Vec<String> {
        let mut services: Vec<String> = self.lagging().iter().cloned().collect();
        services.sort();
        services
    }

    fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::SeqCst);
        if was && !connected {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every service must catch up again (after a reconnect).
    fn set_all_lagging(&self) {
        self.lagging().extend(self.services.iter().cloned());
    }

    fn set_lagging(&self, service: &str, lagging: bool) {
        let mut set = self.lagging();
        match lagging {
            true => set.insert(service.to_owned()),
            false => set.remove(service),
        };
    }
}

/// Checks a comma-separated list of NATS server URLs; the error names the bad one.
pub fn check_servers(urls: &str) -> Result<(), String> {
    for server in urls.split(',').map(str::trim) {
        server
            .parse::<async_nats::ServerAddr>()
            .map_err(|err| format!("{server}: {err}"))?;
    }
    Ok(())
}

/// A counter's value.
pub fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One of the node's backbone counters, as `/api/stats` (`key`) and `/metrics` (`metric`,
/// `help`) show it.
pub struct Counter {
    /// Its key under `cluster` in `/api/stats`.
    pub key: &'static str,
    /// Its Prometheus name (after `featurestream_`, before `_total`).
    pub metric: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Its value.
    pub value: u64,
}

impl Health {
    /// Every counter, for `/api/stats` and `/metrics` alike.
    pub fn counters(&self) -> [Counter; 8] {
        let counter = |key, metric, help, value: &AtomicU64| Counter {
            key,
            metric,
            help,
            value: count(value),
        };
        [
            counter(
                "disconnects",
                "nats_disconnects",
                "Connections to NATS lost",
                &self.disconnects,
            ),
            counter(
                "resyncs",
                "nats_resyncs",
                "Reads of the whole latest state (after a (re)connect or a gap)",
                &self.resyncs,
            ),
            counter(
                "stored",
                "nats_stored",
                "Observations this node appended to a service's log in JetStream",
                &self.stored,
            ),
            counter(
                "checkpoints",
                "nats_checkpoints",
                "Checkpoints of a service's state this node wrote to JetStream",
                &self.checkpoints,
            ),
            counter(
                "replicated",
                "nats_replicated",
                "Observations read from a service's log in JetStream",
                &self.replicated,
            ),
            counter(
                "unreadable",
                "nats_unreadable",
                "Log and checkpoint messages, or observations in them, that their service refuses (skipped)",
                &self.unreadable,
            ),
            counter(
                "unstored",
                "nats_unstored",
                "Observations the log did not take (publishers were told)",
                &self.unstored,
            ),
            counter(
                "slowConsumers",
                "nats_slow_consumers",
                "Slow-consumer reports of the NATS client: messages a subscription that fell behind dropped (core-NATS subject ingest is at most once; the log's consumer recovers its own gaps)",
                &self.slow_consumers,
            ),
        ]
    }
}

pub use self::start::{Backbone, ServiceLink};

mod start;
