//! Outside feeds a service takes observations from, with the same validation, receipts,
//! latest state and metrics as its other sources: MQTT topics (`mqtt`) and GTFS-Realtime
//! VehiclePositions feeds polled over HTTP ([`gtfs_realtime`]). Each runs on one node at a
//! time (the service's source lease, as the simulator: a node alone always holds it) on an
//! arbiter of its own. Only this module knows MQTT and HTTP clients.

pub mod gtfs_realtime;
mod mqtt;

use std::sync::Arc;

use crate::broker::ServiceRuntime;
use crate::service::Feed;
use crate::source::{FeedHealth, Lease};

/// The health a service's feed reports, made before it starts.
pub fn health_of(feed: &Feed) -> Arc<FeedHealth> {
    let origin = match feed {
        Feed::Mqtt(mqtt) => format!("{} {}", mqtt.origin(), mqtt.topics.join(" ")),
        Feed::GtfsRealtime(gtfs) => gtfs_realtime::feed_origin(gtfs),
    };
    FeedHealth::new(feed.kind(), origin)
}

/// Starts `runtime`'s feed on `arbiter`, run while this node holds `lease`.
pub fn start(
    arbiter: &actix::ArbiterHandle,
    feed: Feed,
    runtime: Arc<ServiceRuntime>,
    lease: Arc<Lease>,
    health: Arc<FeedHealth>,
    max_features: usize,
) {
    let started = match feed {
        Feed::Mqtt(mqtt) => arbiter.spawn(mqtt::run(mqtt, runtime, lease, health, max_features)),
        Feed::GtfsRealtime(gtfs) => arbiter.spawn(gtfs_realtime::run(gtfs, runtime, lease, health)),
    };
    if !started {
        log::error!("the feeds' arbiter is gone: a feed did not start");
    }
}
