//! What a source hands a service's broker: observations of some of the service's tracks, in
//! the service's schema and spatial reference. The simulator is one source; whatever else
//! feeds a service (ingest, a message bus) hands over the same `Batch` through the broker's
//! `BatchSink`. No actors here.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::feature::Feature;

/// Observations of some tracks, taken together.
#[derive(Debug)]
pub struct Batch {
    /// One observation per track at most, in the service's schema.
    pub features: Vec<Feature>,
    /// Epoch milliseconds of the newest observation (the `observed` time of a simulator tick).
    pub observed_ms: i64,
}

/// What became of a published batch's observations, by position in that batch: a publisher
/// that asks for it gets it once the broker has recorded the batch in the latest state and
/// queued it to every session that selects it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Older than their track's latest: not recorded, not streamed.
    pub stale: Vec<usize>,
    /// New tracks past the service's track limit: refused.
    pub refused: Vec<usize>,
    /// Not stored: the backbone (NATS) could not be reached; send them again.
    pub unstored: Vec<usize>,
}

/// How an outside feed of a service fares (MQTT, GTFS-Realtime): whether it is connected (or
/// its last poll succeeded), whether this node runs it (a cluster runs each feed on one node,
/// under the service's source lease), and what happened, counted by outcome. `/metrics`,
/// `/readyz` and `/api/stats` show it.
#[derive(Debug)]
pub struct FeedHealth {
    /// `mqtt` or `gtfsRealtime`.
    pub kind: &'static str,
    /// Where it comes from, without credentials.
    pub origin: String,
    connected: std::sync::atomic::AtomicBool,
    running_here: std::sync::atomic::AtomicBool,
    outcomes: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    last_error: Mutex<Option<String>>,
}

impl FeedHealth {
    /// A feed not yet connected.
    pub fn new(kind: &'static str, origin: String) -> Arc<FeedHealth> {
        Arc::new(FeedHealth {
            kind,
            origin,
            connected: Default::default(),
            running_here: Default::default(),
            outcomes: Mutex::default(),
            last_error: Mutex::default(),
        })
    }

    /// Counts `count` of `outcome` (`message`, `notJson`, `reconnect`, `notModified`, ...).
    pub fn count(&self, outcome: &'static str, count: u64) {
        *self
            .outcomes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(outcome)
            .or_default() += count;
    }

    /// Every outcome counted so far.
    pub fn outcomes(&self) -> Vec<(&'static str, u64)> {
        self.outcomes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(outcome, count)| (*outcome, *count))
            .collect()
    }

    /// How many of `outcome` so far.
    pub fn counted(&self, outcome: &str) -> u64 {
        self.outcomes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(outcome)
            .copied()
            .unwrap_or(0)
    }

    /// Connected (or polled) now; `error` says why not.
    pub fn set_connected(&self, connected: bool, error: Option<String>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.connected.store(connected, Relaxed);
        if connected || error.is_some() {
            *self
                .last_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
        }
    }

    /// Whether it is connected (its last poll succeeded).
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this node runs it now.
    pub fn set_running_here(&self, here: bool) {
        self.running_here
            .store(here, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this node runs it now.
    pub fn is_running_here(&self) -> bool {
        self.running_here.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last failure, while it lasts.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Whether a source may publish now: a node alone always may; in a cluster a source that must
/// run once (the simulator) publishes only while this node holds its lease, kept by
/// `cluster` (renewed within `ttl`, used only within half of it).
#[derive(Debug)]
pub struct Lease {
    /// Held for good: the node is alone.
    alone: bool,
    /// How long the lease lives without a renewal.
    ttl: Duration,
    /// When this node last renewed it (`None`: not held here).
    renewed: Mutex<Option<Instant>>,
}

impl Lease {
    /// A lease this node does not hold yet, living `ttl` without a renewal.
    pub fn new(ttl: Duration) -> Arc<Lease> {
        Arc::new(Lease {
            alone: false,
            ttl,
            renewed: Mutex::new(None),
        })
    }

    /// A lease always held (a node alone).
    pub fn alone() -> Arc<Lease> {
        Arc::new(Lease {
            alone: true,
            ttl: Duration::ZERO,
            renewed: Mutex::new(None),
        })
    }

    fn renewed(&self) -> MutexGuard<'_, Option<Instant>> {
        self.renewed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this node holds the lease now: renewed less than half a TTL ago, so that it
    /// stops before another node may take it.
    pub fn is_held(&self) -> bool {
        self.alone
            || self
                .renewed()
                .is_some_and(|renewed| renewed.elapsed() < self.ttl / 2)
    }

    /// This node renewed (or took) it just now.
    pub fn renewed_now(&self) {
        *self.renewed() = Some(Instant::now());
    }

    /// Another node holds it.
    pub fn release(&self) {
        *self.renewed() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_used_within_half_its_life() {
        assert!(Lease::alone().is_held());
        let lease = Lease::new(Duration::from_secs(3600));
        assert!(!lease.is_held(), "not taken yet");
        lease.renewed_now();
        assert!(lease.is_held());
        lease.release();
        assert!(!lease.is_held());
        let short = Lease::new(Duration::ZERO);
        short.renewed_now();
        assert!(!short.is_held(), "past half its life");
    }
}
