//! Admission before the upgrade (seed 002, docs/protocol.md §6): the connection cap, a per-IP rate
//! limit on connection attempts, and the Origin allow-list. Every refusal is an HTTP status
//! the ArcGIS SDK backs off from, never an accepted-then-closed socket (which it would retry
//! at once), unless the operator asks for seed 002's close-with-1013 behaviour.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::HttpRequest;
use actix_web::http::header;

use super::client::Client;
use super::error::HttpError;
use super::gate::ConnectionGate;
use crate::config::{AdmissionSettings, OriginPolicy, OverCap};
pub use crate::session::budget::{ConnectionSlot, TokenBucket};

/// What admission decided for an acceptable request.
pub enum Admitted {
    /// Go ahead; hold the slot for the session's life.
    Slot(ConnectionSlot),
    /// Over the cap in `close` mode: accept, then close with 1013 (seed 002).
    CloseOverCap,
}

/// Admission state shared by every worker.
pub struct Admission {
    settings: AdmissionSettings,
    gate: Arc<ConnectionGate>,
    active: Arc<AtomicUsize>,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    ingest_buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    query_buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

/// Buckets kept before idle (full) ones are forgotten: bounds the map under a scan of IPs.
const MAX_TRACKED_PEERS: usize = 100_000;

impl Admission {
    /// Admission with the configured limits.
    pub fn new(settings: AdmissionSettings) -> Admission {
        Admission {
            gate: ConnectionGate::new(
                settings.max_connections_per_ip,
                settings.max_open_connections,
                settings.rate_limit_loopback,
            ),
            settings,
            active: Arc::new(AtomicUsize::new(0)),
            buckets: Mutex::new(HashMap::new()),
            ingest_buckets: Mutex::new(HashMap::new()),
            query_buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The TCP connection gate.
    pub fn gate(&self) -> Arc<ConnectionGate> {
        self.gate.clone()
    }

    /// Sessions now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Checks the Origin and the client's attempt rate (every attempt counts, good or bad).
    pub fn screen(&self, req: &HttpRequest, client: &Client) -> Result<(), HttpError> {
        self.check_origin(req, client)?;
        self.check_rate(client)
    }

    /// Takes a connection slot, or decides what to do over the cap.
    pub fn acquire(&self) -> Result<Admitted, HttpError> {
        let previous = self.active.fetch_add(1, Ordering::Relaxed);
        let slot = ConnectionSlot::taken(self.active.clone());
        if previous >= self.settings.max_connections {
            drop(slot);
            return match self.settings.over_cap {
                OverCap::Refuse => Err(HttpError::OverCapacity),
                OverCap::Close => Ok(Admitted::CloseOverCap),
            };
        }
        Ok(Admitted::Slot(slot))
    }

    fn check_rate(&self, client: &Client) -> Result<(), HttpError> {
        self.take(&self.buckets, self.settings.connect_rate, client)
    }

    /// Checks a publisher's ingest rate (requests and broadcast messages): 429 past it.
    pub fn check_ingest_rate(&self, client: &Client) -> Result<(), HttpError> {
        self.take(&self.ingest_buckets, self.settings.ingest_rate, client)
    }

    /// Checks a client's feature layer request rate: 429 past it.
    pub fn check_query_rate(&self, client: &Client) -> Result<(), HttpError> {
        self.take(&self.query_buckets, self.settings.query_rate, client)
    }

    fn take(
        &self,
        buckets: &Mutex<HashMap<IpAddr, TokenBucket>>,
        rate: Option<f64>,
        client: &Client,
    ) -> Result<(), HttpError> {
        let Some(rate) = rate else {
            return Ok(());
        };
        let Some(ip) = client.ip else {
            return Ok(());
        };
        // Exempt: a caller on this machine reaching the server directly (not a proxy here).
        if client.local && !self.settings.rate_limit_loopback {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_PEERS {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        let bucket = buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, rate * 2.0));
        if bucket.take(now) {
            Ok(())
        } else {
            Err(HttpError::RateLimited)
        }
    }

    fn check_origin(&self, req: &HttpRequest, client: &Client) -> Result<(), HttpError> {
        let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|value| value.to_str().ok())
        else {
            // Not a browser: Origin is a browser's statement, other clients send none.
            return Ok(());
        };
        let allowed = match &self.settings.origins {
            OriginPolicy::Any => true,
            OriginPolicy::List(origins) => origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
            OriginPolicy::LocalAndSameHost => {
                let host = origin.split("://").nth(1).unwrap_or("");
                let hostname = host
                    .rsplit_once(':')
                    .map_or(host, |(name, _)| name)
                    .trim_matches(['[', ']']);
                let local = hostname == "localhost"
                    || hostname.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                let same_host = client.host.eq_ignore_ascii_case(host);
                local || same_host
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(HttpError::OriginRefused(origin.chars().take(100).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 4.0);
        assert!((0..4).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(500)));
        assert!(!bucket.take(start + Duration::from_millis(600)));
    }
}
