//! What a source hands a service's broker: observations of some of the service's tracks, in
//! the service's schema and spatial reference. The simulator is one source; whatever else
//! feeds a service (ingest, a message bus) hands over the same `Batch` through the broker's
//! `BatchSink`. No actors here.

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
