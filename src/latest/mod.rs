//! `LatestState`: the latest observation of every track of one service, ordered by the
//! schema's start-time field, so that an older observation never replaces a newer one. It
//! feeds the snapshot a session gets when it subscribes or changes its filter. Plain Rust, no
//! actors: the same interface can be kept elsewhere (a message bus) later.

mod file;

pub use file::{LoadError, Saved, load, load_or_set_aside, path_for, save};

use std::collections::HashMap;
use std::sync::Arc;

use crate::feature::{Feature, FieldValue, Schema};
use crate::source::Batch;

/// A track id as a map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TrackKey {
    /// An integer track id.
    Integer(i64),
    /// A text track id.
    Text(Arc<str>),
    /// Doubles, dates, booleans, NULL: keyed by their text.
    Other(String),
}

impl TrackKey {
    pub(crate) fn of(feature: &Feature, track_field: usize) -> TrackKey {
        match feature.attributes.get(track_field) {
            Some(FieldValue::Integer(id)) => TrackKey::Integer(*id),
            Some(FieldValue::String(id)) => TrackKey::Text(id.clone()),
            other => TrackKey::Other(format!("{other:?}")),
        }
    }
}

/// The latest observation of each track, with the time it was received.
pub struct LatestState {
    track_field: usize,
    time_field: Option<usize>,
    object_id_field: usize,
    by_track: HashMap<TrackKey, usize>,
    features: Vec<Feature>,
    received_ms: Vec<i64>,
    next_object_id: i64,
    /// Ids of resent copies ([`LatestState::renumbered`]): a range of their own above every
    /// observation's ([`RESEND_IDS`]), so that resending never disturbs the observations'
    /// sequence.
    next_resend_id: i64,
}

/// Where the ids of resent copies start: 2^50, far above any observation's id (2^50
/// observations are 357 years at 100,000 a second) and below JavaScript's exact integers
/// (2^53), as the ArcGIS SDK keys its store by them.
pub const RESEND_IDS: i64 = 1 << 50;

/// What recording a batch did, by position in the batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Observations older than their track's latest: not recorded, not to be streamed.
    pub stale: Vec<usize>,
    /// New tracks past the service's track limit: refused.
    pub refused: Vec<usize>,
    /// Not stored: the backbone could not be reached (`cluster`).
    pub unstored: Vec<usize>,
}

impl Recorded {
    /// Whether every observation was recorded.
    pub fn is_clean(&self) -> bool {
        self.stale.is_empty() && self.refused.is_empty() && self.unstored.is_empty()
    }
}

/// When a batch's observations were received, and who numbers them.
#[derive(Clone, Copy, Debug)]
pub enum Received<'a> {
    /// Received here at this time (epoch ms): the latest state numbers them.
    Here(i64),
    /// Read from the backbone, each stored at its time: numbered already (by the backbone's
    /// sequence, higher for a newer observation of a track); one at or below the track's
    /// is a duplicate.
    Replicated(&'a [i64]),
}

impl LatestState {
    /// An empty state for a service's schema.
    pub fn new(schema: &Schema) -> LatestState {
        LatestState {
            track_field: schema.track_id_field(),
            time_field: schema.start_time_field(),
            object_id_field: schema.object_id_field(),
            by_track: HashMap::new(),
            features: Vec::new(),
            received_ms: Vec::new(),
            next_object_id: 1,
            next_resend_id: RESEND_IDS,
        }
    }

    /// Records a batch received at `received_ms`: every observation that is not stale gets the
    /// next object id (unique and increasing per service, whatever its source said) and becomes
    /// its track's latest. A new track past `max_tracks` is refused.
    /// Replicated observations keep their ids; one not above its track's id is stale.
    pub fn record(
        &mut self,
        batch: &mut Batch,
        received: Received<'_>,
        max_tracks: usize,
    ) -> Recorded {
        let mut recorded = Recorded::default();
        for (index, feature) in batch.features.iter_mut().enumerate() {
            let key = TrackKey::of(feature, self.track_field);
            let slot = match self.by_track.get(&key) {
                Some(&slot) => {
                    let stale = match received {
                        Received::Here(_) => self.is_older(feature, &self.features[slot]),
                        Received::Replicated(_) => {
                            self.object_id(feature) <= self.object_id(&self.features[slot])
                        }
                    };
                    if stale {
                        recorded.stale.push(index);
                        continue;
                    }
                    Some(slot)
                }
                None if self.features.len() >= max_tracks => {
                    recorded.refused.push(index);
                    continue;
                }
                None => None,
            };
            let received_ms = match received {
                Received::Here(received_ms) => {
                    if let Some(id) = feature.attributes.get_mut(self.object_id_field) {
                        *id = FieldValue::Integer(self.next_object_id);
                        self.next_object_id += 1;
                    }
                    received_ms
                }
                Received::Replicated(times) => times[index],
            };
            match slot {
                Some(slot) => {
                    self.features[slot] = feature.clone();
                    self.received_ms[slot] = received_ms;
                }
                None => {
                    self.by_track.insert(key, self.features.len());
                    self.features.push(feature.clone());
                    self.received_ms.push(received_ms);
                }
            }
        }
        recorded
    }

    /// Removes every track last received before `cutoff_ms`; returns their last observations.
    pub fn expire(&mut self, cutoff_ms: i64) -> Vec<Feature> {
        let mut expired = Vec::new();
        let mut slot = 0;
        while slot < self.features.len() {
            if self.received_ms[slot] >= cutoff_ms {
                slot += 1;
                continue;
            }
            let feature = self.features.swap_remove(slot);
            self.received_ms.swap_remove(slot);
            self.by_track
                .remove(&TrackKey::of(&feature, self.track_field));
            if let Some(moved) = self.features.get(slot) {
                self.by_track
                    .insert(TrackKey::of(moved, self.track_field), slot);
            }
            expired.push(feature);
        }
        expired
    }

    fn object_id(&self, feature: &Feature) -> i64 {
        match feature.attributes.get(self.object_id_field) {
            Some(FieldValue::Integer(id)) => *id,
            _ => 0,
        }
    }

    /// Starts the ids of resent copies at `first` (a node of a cluster takes a range of its own).
    pub fn resend_from(&mut self, first: i64) {
        self.next_resend_id = first;
    }

    fn is_older(&self, candidate: &Feature, latest: &Feature) -> bool {
        let Some(time) = self.time_field else {
            return false;
        };
        match (candidate.attributes.get(time), latest.attributes.get(time)) {
            (Some(FieldValue::Date(candidate)), Some(FieldValue::Date(latest))) => {
                candidate < latest
            }
            _ => false,
        }
    }

    /// A track's key, as this state keys tracks.
    pub(crate) fn key_of(&self, feature: &Feature) -> TrackKey {
        TrackKey::of(feature, self.track_field)
    }

    /// A track's latest observation, if it is live.
    pub(crate) fn get(&self, key: &TrackKey) -> Option<&Feature> {
        self.by_track.get(key).map(|&slot| &self.features[slot])
    }

    /// A copy of every track's latest observation under fresh object ids (taken from the
    /// service's sequence), for sending again where the stored ids were already seen.
    pub fn renumbered(&mut self) -> Vec<Feature> {
        let mut copy = self.features.clone();
        for feature in &mut copy {
            if let Some(id) = feature.attributes.get_mut(self.object_id_field) {
                *id = FieldValue::Integer(self.next_resend_id);
                self.next_resend_id += 1;
            }
        }
        copy
    }

    /// The id the next resent copy gets (saved with the state, so that ids never repeat
    /// across restarts: a client's store outlives a reconnect).
    pub fn next_resend_id(&self) -> i64 {
        self.next_resend_id
    }

    /// Every track's latest observation.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// When each of [`LatestState::features`] was received (epoch milliseconds).
    pub fn received_ms(&self) -> &[i64] {
        &self.received_ms
    }

    /// The object id the next recorded observation gets.
    pub fn next_object_id(&self) -> i64 {
        self.next_object_id
    }

    /// Restores a saved state: observations with their receive times, and the object id
    /// sequence (kept above every restored id, so that ids never repeat).
    pub fn restore(
        &mut self,
        saved: Vec<(Feature, i64)>,
        next_object_id: i64,
        next_resend_id: i64,
    ) {
        self.next_resend_id = next_resend_id.max(RESEND_IDS);
        let mut next = next_object_id.max(1);
        for (feature, received_ms) in saved {
            if let Some(FieldValue::Integer(id)) = feature.attributes.get(self.object_id_field) {
                next = next.max(id.saturating_add(1));
            }
            let key = TrackKey::of(&feature, self.track_field);
            match self.by_track.get(&key) {
                Some(&slot) => {
                    if !self.is_older(&feature, &self.features[slot]) {
                        self.features[slot] = feature;
                        self.received_ms[slot] = received_ms;
                    }
                }
                None => {
                    self.by_track.insert(key, self.features.len());
                    self.features.push(feature);
                    self.received_ms.push(received_ms);
                }
            }
        }
        self.next_object_id = next;
    }

    /// Tracks known.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Whether no track is known yet.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::GeometryType;
    use crate::geometry::{Geometry, Wkid};
    use crate::service::vehicles_schema;

    fn observation(schema: &Schema, track: i64, object_id: i64, observed: i64) -> Feature {
        let mut attributes = vec![FieldValue::Null; schema.fields().len()];
        attributes[schema.object_id_field()] = FieldValue::Integer(object_id);
        attributes[schema.track_id_field()] = FieldValue::Integer(track);
        attributes[schema.start_time_field().unwrap()] = FieldValue::Date(observed);
        Feature {
            attributes,
            geometry: Geometry::Point { x: 0.0, y: 0.0 },
        }
    }

    #[test]
    fn the_newest_observation_of_each_track_is_kept_and_older_ones_are_stale() {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let mut latest = LatestState::new(&schema);
        let first = Batch {
            features: vec![
                observation(&schema, 1, 10, 1000),
                observation(&schema, 2, 11, 1000),
            ],
            observed_ms: 1000,
        };
        let mut first = first;
        assert!(
            latest
                .record(&mut first, Received::Here(1000), usize::MAX)
                .is_clean()
        );
        let second = Batch {
            features: vec![
                observation(&schema, 2, 12, 900),
                observation(&schema, 1, 13, 2000),
                observation(&schema, 3, 14, 500),
            ],
            observed_ms: 2000,
        };
        let mut second = second;
        assert_eq!(
            latest.record(&mut second, Received::Here(2000), 3),
            Recorded {
                stale: vec![0],
                ..Recorded::default()
            },
            "track 2 at 900 is older than at 1000"
        );
        let ids: Vec<&FieldValue> = latest
            .features()
            .iter()
            .map(|feature| &feature.attributes[0])
            .collect();
        assert_eq!(
            ids,
            [
                &FieldValue::Integer(3),
                &FieldValue::Integer(2),
                &FieldValue::Integer(4)
            ],
            "the state numbers observations itself, whatever they said"
        );
        assert_eq!(latest.len(), 3);
        let mut third = Batch {
            features: vec![observation(&schema, 4, 0, 3000)],
            observed_ms: 3000,
        };
        assert_eq!(
            latest.record(&mut third, Received::Here(3000), 3).refused,
            [0],
            "a 4th track"
        );
        let expired = latest.expire(1500);
        assert_eq!(expired.len(), 1, "track 2, last received at 1000");
        assert_eq!(expired[0].attributes[1], FieldValue::Integer(2));
        assert_eq!(latest.len(), 2);
        let mut again = Batch {
            features: vec![observation(&schema, 3, 0, 4000)],
            observed_ms: 4000,
        };
        assert!(
            latest
                .record(&mut again, Received::Here(4000), 3)
                .is_clean()
        );
        assert_eq!(
            latest.len(),
            2,
            "the moved slot is still found by its track"
        );
        assert_eq!(latest.next_object_id(), 6);
    }

    #[test]
    fn a_restored_state_keeps_its_ids_and_numbers_above_them() {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let mut latest = LatestState::new(&schema);
        latest.restore(
            vec![
                (observation(&schema, 1, 41, 1000), 1000),
                (observation(&schema, 2, 7, 1000), 1000),
            ],
            12,
            RESEND_IDS + 5,
        );
        assert_eq!(latest.next_object_id(), 42);
        let copy = latest.renumbered();
        assert_eq!(copy[0].attributes[0], FieldValue::Integer(RESEND_IDS + 5));
        assert_eq!(
            latest.features()[0].attributes[0],
            FieldValue::Integer(41),
            "stored ids stay"
        );
        assert_eq!(latest.next_resend_id(), RESEND_IDS + 7);
        assert_eq!(latest.features()[0].attributes[0], FieldValue::Integer(41));
        assert_eq!(latest.received_ms(), [1000, 1000]);
    }
}
