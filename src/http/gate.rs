//! `ConnectionGate`: TCP connections by address, before any request head is read. A client
//! holding many idle connections (partial request heads) would otherwise fill the open-file
//! limit and lock everyone out, health checks included. Past the per-address limit a new
//! connection is answered 429 and closed; past the total (the open-file limit less a reserve)
//! 503. Loopback callers are exempt from both: health checks and admin calls from this
//! machine always find a descriptor in the reserve.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateRefusal {
    /// Its address has too many connections open.
    PerAddress,
    /// The server has as many connections open as it takes from the network.
    Full,
}

impl GateRefusal {
    /// The complete HTTP response sent before closing (no request was read).
    pub fn response(self) -> &'static [u8] {
        match self {
            GateRefusal::PerAddress => concat!(
                "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n",
                "retry-after: 5\r\nconnection: close\r\ncontent-length: 86\r\n\r\n",
                r#"{"error":{"code":429,"message":"Too many connections from this address","details":[]}}"#
            )
            .as_bytes(),
            GateRefusal::Full => concat!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n",
                "retry-after: 5\r\nconnection: close\r\ncontent-length: 81\r\n\r\n",
                r#"{"error":{"code":503,"message":"Too many connections; retry later","details":[]}}"#
            )
            .as_bytes(),
        }
    }
}

/// The gate of one server.
pub struct ConnectionGate {
    max_per_address: Option<usize>,
    /// Loopback peers count against the per-address limit too (tests, a proxy-less setup
    /// that wants it); they always keep the reserve.
    limit_loopback: bool,
    max_total: Option<usize>,
    open: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    refused_per_address: AtomicU64,
    refused_full: AtomicU64,
    /// Connections over their address's limit being looked at for a health check now.
    probing: AtomicUsize,
}

/// Connections over their address's limit looked at at once for a health check (each for
/// [`PROBE_WAIT`] at most); past it they are refused at once.
const MAX_PROBING: usize = 64;
/// How long a connection over its address's limit may take to show a health check.
pub const PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether a request head's first bytes are a health or readiness check (`GET /healthz`,
/// `GET /readyz`, or `HEAD`).
pub fn is_health_check(head: &[u8]) -> bool {
    HEALTH_CHECKS.iter().any(|prefix| head.starts_with(prefix))
}

/// Whether a request head's first bytes may still become a health check.
pub fn may_be_health_check(head: &[u8]) -> bool {
    HEALTH_CHECKS.iter().any(|prefix| prefix.starts_with(head))
}

const HEALTH_CHECKS: [&[u8]; 6] = [
    b"GET /healthz ",
    b"GET /readyz ",
    b"HEAD /healthz ",
    b"HEAD /readyz ",
    b"GET /healthz?",
    b"GET /readyz?",
];

/// An open connection's place; released when dropped.
pub struct GatePass {
    gate: Arc<ConnectionGate>,
    address: Option<IpAddr>,
}

impl ConnectionGate {
    /// A gate with these limits (`None`: no limit).
    pub fn new(
        max_per_address: Option<usize>,
        max_total: Option<usize>,
        limit_loopback: bool,
    ) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            max_per_address,
            limit_loopback,
            max_total,
            open: AtomicUsize::new(0),
            by_address: Mutex::default(),
            refused_per_address: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            probing: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a connection from `peer`, or says why not.
    pub fn enter(
        self: &Arc<ConnectionGate>,
        peer: Option<IpAddr>,
    ) -> Result<GatePass, GateRefusal> {
        let local = peer.is_none_or(|peer| peer.is_loopback());
        if !local
            && self
                .max_total
                .is_some_and(|max| self.open.load(Ordering::Relaxed) >= max)
        {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(GateRefusal::Full);
        }
        let counted =
            peer.filter(|_| self.max_per_address.is_some() && (!local || self.limit_loopback));
        if let (Some(max), Some(peer)) = (self.max_per_address, counted) {
            let mut by_address = self.lock();
            let open = by_address.entry(peer).or_insert(0);
            if *open >= max {
                self.refused_per_address.fetch_add(1, Ordering::Relaxed);
                return Err(GateRefusal::PerAddress);
            }
            *open += 1;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(GatePass {
            gate: self.clone(),
            address: counted,
        })
    }

    /// A place for a health check over its address's limit (health checks always get
    /// through: an orchestrator must not see a loaded node as dead). `None`: too many
    /// connections are being looked at already.
    pub fn probe(self: &Arc<ConnectionGate>) -> Option<ProbeSlot> {
        if self.probing.fetch_add(1, Ordering::Relaxed) >= MAX_PROBING {
            self.probing.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ProbeSlot { gate: self.clone() })
    }

    /// Connections open now, and refused since start (per address, full).
    pub fn counts(&self) -> (usize, u64, u64) {
        (
            self.open.load(Ordering::Relaxed),
            self.refused_per_address.load(Ordering::Relaxed),
            self.refused_full.load(Ordering::Relaxed),
        )
    }
}

/// A connection over its address's limit being looked at (see [`ConnectionGate::probe`]).
pub struct ProbeSlot {
    gate: Arc<ConnectionGate>,
}

impl ProbeSlot {
    /// The connection is a health check: it gets a place outside its address's count.
    pub fn admit(self) -> GatePass {
        self.gate.open.fetch_add(1, Ordering::Relaxed);
        GatePass {
            gate: self.gate.clone(),
            address: None,
        }
    }
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        self.gate.probing.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(address) = self.address {
            let mut by_address = self.gate.lock();
            if let Some(open) = by_address.get_mut(&address) {
                *open -= 1;
                if *open == 0 {
                    by_address.remove(&address);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_in_all_with_loopback_in_the_reserve() {
        let gate = ConnectionGate::new(Some(2), Some(3), false);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let first = gate.enter(Some(a)).unwrap();
        let _second = gate.enter(Some(a)).unwrap();
        assert_eq!(gate.enter(Some(a)).err(), Some(GateRefusal::PerAddress));
        let _third = gate.enter(Some(b)).unwrap();
        assert_eq!(gate.enter(Some(b)).err(), Some(GateRefusal::Full));
        let _health_check = gate.enter(Some(local)).unwrap();
        drop(first);
        assert!(
            gate.enter(Some(a)).is_err(),
            "the health check still holds a place"
        );
        assert_eq!(gate.counts(), (3, 1, 2));
    }

    #[test]
    fn refusals_are_complete_http_responses() {
        for refusal in [GateRefusal::PerAddress, GateRefusal::Full] {
            let text = std::str::from_utf8(refusal.response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), length);
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        }
    }
}
