//! `LatestState`: the latest observation of every track of one service, ordered by the
//! schema's start-time field, so that an older observation never replaces a newer one. It
//! feeds the snapshot a session gets when it subscribes or changes its filter, and the feature
//! layer's queries. Plain Rust, no actors.
//!
//! Readers off the broker's thread (queries, snapshots, checkpoints) work on a [`Frozen`] copy:
//! the slots live in a persistent vector (`imbl`), so a copy costs a reference count and the
//! broker's next write copies only the chunks it touches. A track keeps its slot for life
//! (an expired track's slot is emptied and reused by a later new track), and every slot notes
//! the state version that last wrote it, so a reader of a newer copy can tell what changed
//! since the copy it started from.

pub mod codec;
pub mod journal;
mod legacy;
pub mod store;

pub use journal::{Fault, Journal, StoreHealth};
pub use store::{Bounds, Layout, Recovered, StoreError};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::feature::{Feature, FieldValue, Schema};
use crate::source::Batch;

/// A track id as a map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TrackKey {
    /// An integer track id (an integral double too: `0`, `0.0` and `-0.0` are one track).
    Integer(i64),
    /// A text track id.
    Text(Arc<str>),
    /// Other doubles, dates, booleans, NULL: keyed by their text.
    Other(String),
}

impl TrackKey {
    /// The key of a track id written as text (a URL segment), read as the schema's track id
    /// field reads it; `None` when it cannot be one.
    pub fn parse(schema: &Schema, text: &str) -> Option<TrackKey> {
        use crate::feature::FieldType;
        let value = match schema.fields()[schema.track_id_field()].field_type {
            FieldType::String => FieldValue::String(Arc::from(text)),
            FieldType::Single | FieldType::Double => {
                FieldValue::Double(text.parse::<f64>().ok().filter(|n| n.is_finite())?)
            }
            FieldType::Date => FieldValue::Date(text.parse().ok()?),
            _ => FieldValue::Integer(text.parse().ok()?),
        };
        Some(TrackKey::of_value(Some(&value)))
    }

    pub(crate) fn of(feature: &Feature, track_field: usize) -> TrackKey {
        TrackKey::of_value(feature.attributes.get(track_field))
    }

    pub(crate) fn of_value(value: Option<&FieldValue>) -> TrackKey {
        match value {
            Some(FieldValue::Integer(id)) => TrackKey::Integer(*id),
            Some(FieldValue::String(id)) => TrackKey::Text(id.clone()),
            Some(FieldValue::Double(id))
                if id.fract() == 0.0 && id.abs() < 9_007_199_254_740_992.0 =>
            {
                TrackKey::Integer(*id as i64)
            }
            other => TrackKey::Other(format!("{other:?}")),
        }
    }
}

/// One track's latest observation, as the state holds it.
#[derive(Clone, Debug)]
pub struct Slot {
    /// The observation (shared with every frozen copy that holds it).
    pub feature: Arc<Feature>,
    /// When it was received (epoch milliseconds).
    pub received_ms: i64,
    /// The state version that wrote it ([`Frozen::version`]).
    pub version: u64,
    /// The state version at which its track took this slot (a slot emptied by expiry is
    /// later reused by another track, with a later `born`).
    pub born: u64,
}

/// A consistent copy of a state, for readers off the broker's thread; costs a reference count.
#[derive(Clone, Default)]
pub struct Frozen {
    slots: imbl::Vector<Option<Slot>>,
    version: u64,
}

impl Frozen {
    /// Every live track's slot, with its index.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Slot)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| Some((index, slot.as_ref()?)))
    }

    /// Every live track's latest observation.
    pub fn features(&self) -> impl Iterator<Item = &Feature> + '_ {
        self.iter().map(|(_, slot)| &*slot.feature)
    }

    /// The slot at `index`, if a track lives there.
    pub fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)?.as_ref()
    }

    /// The slots of `range` (live or empty), clipped to the state.
    pub fn slots(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = (usize, &Slot)> {
        let end = range.end.min(self.slots.len());
        let start = range.start.min(end);
        self.slots
            .focus()
            .narrow(start..end)
            .into_iter()
            .enumerate()
            .filter_map(move |(offset, slot)| Some((start + offset, slot.as_ref()?)))
    }

    /// Slots, live or empty: every index a track can have is below this.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The version of the state this copy is of: raised by every change.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// The newest frozen copy of a service's state, which the broker replaces after every change
/// and readers (queries, snapshots) take when they need it.
#[derive(Default)]
pub struct StateCell(Mutex<Frozen>);

impl StateCell {
    /// The newest copy.
    pub fn load(&self) -> Frozen {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn store(&self, frozen: Frozen) {
        let old = std::mem::replace(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            frozen,
        );
        // The old copy's release (possibly the last reference to many observations) happens
        // here, outside the lock.
        drop(old);
    }
}

/// The latest observation of each track, with the time it was received.
pub struct LatestState {
    track_field: usize,
    time_field: Option<usize>,
    object_id_field: usize,
    by_track: HashMap<TrackKey, u32>,
    slots: imbl::Vector<Option<Slot>>,
    /// Emptied slots, reused by new tracks.
    free: Vec<u32>,
    version: u64,
    next_object_id: i64,
    /// Ids of resent copies ([`LatestState::reserve_resend_ids`]): a range of their own above
    /// every observation's ([`RESEND_IDS`]), so that resending never disturbs the
    /// observations' sequence.
    next_resend_id: i64,
    /// Where readers find the newest copy.
    cell: Arc<StateCell>,
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
    /// Read from the backbone's log, each stored at its time: numbered already (by its log
    /// position); one at or below its track's id is read again, one not strictly newer by
    /// the start-time field is stale.
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
            slots: imbl::Vector::new(),
            free: Vec::new(),
            version: 0,
            next_object_id: 1,
            next_resend_id: RESEND_IDS,
            cell: Arc::default(),
        }
    }

    /// Where readers off the broker's thread find the newest copy of this state.
    pub fn cell(&self) -> Arc<StateCell> {
        self.cell.clone()
    }

    /// A copy of the state as it is now (a reference count).
    pub fn frozen(&self) -> Frozen {
        Frozen {
            slots: self.slots.clone(),
            version: self.version,
        }
    }

    /// Hands readers the state as it is now: called by every change.
    fn publish(&mut self) {
        self.version += 1;
        // Slots written by this change carry the new version already (see `write`).
        self.cell.store(self.frozen());
    }

    fn write(&mut self, slot: Option<u32>, key: TrackKey, feature: &Feature, received_ms: i64) {
        let version = self.version + 1;
        let born = slot
            .and_then(|slot| self.slots.get(slot as usize)?.as_ref())
            .map_or(version, |slot| slot.born);
        let written = Some(Slot {
            feature: Arc::new(feature.clone()),
            received_ms,
            version,
            born,
        });
        match slot {
            Some(slot) => {
                self.slots.set(slot as usize, written);
            }
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots.set(slot as usize, written);
                        slot
                    }
                    None => {
                        self.slots.push_back(written);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.by_track.insert(key, slot);
            }
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
        let mut changed = false;
        for (index, feature) in batch.features.iter_mut().enumerate() {
            let key = TrackKey::of(feature, self.track_field);
            let slot = match self.by_track.get(&key) {
                Some(&slot) => {
                    let latest = &self.slots[slot as usize]
                        .as_ref()
                        .expect("a live track's slot holds it")
                        .feature;
                    let stale = match received {
                        Received::Here(_) => self.is_older(feature, latest),
                        // Read again (a re-read after a reconnect), or not strictly newer:
                        // every node applies the one log in the same order by this rule, so
                        // every node holds the same state.
                        Received::Replicated(_) => {
                            self.object_id(feature) <= self.object_id(latest)
                                || !self.is_newer(feature, latest)
                        }
                    };
                    if stale {
                        recorded.stale.push(index);
                        continue;
                    }
                    Some(slot)
                }
                None if self.by_track.len() >= max_tracks => {
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
            self.write(slot, key, feature, received_ms);
            changed = true;
        }
        if changed {
            self.publish();
        }
        recorded
    }

    /// Removes every track last received before `cutoff_ms`; returns their last observations.
    pub fn expire(&mut self, cutoff_ms: i64) -> Vec<Arc<Feature>> {
        let gone: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| {
                slot.as_ref()
                    .is_some_and(|slot| slot.received_ms < cutoff_ms)
            })
            .map(|(index, _)| index)
            .collect();
        let mut expired = Vec::with_capacity(gone.len());
        for index in gone {
            let Some(slot) = self.slots.set(index, None) else {
                continue;
            };
            self.by_track
                .remove(&TrackKey::of(&slot.feature, self.track_field));
            self.free.push(index as u32);
            expired.push(slot.feature);
        }
        if !expired.is_empty() {
            self.publish();
        }
        expired
    }

    /// Removes one track now (an operator's delete); returns its last observation.
    pub fn remove(&mut self, key: &TrackKey) -> Option<Arc<Feature>> {
        let index = self.by_track.remove(key)?;
        let slot = self.slots.set(index as usize, None)?;
        self.free.push(index);
        self.publish();
        Some(slot.feature)
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

    /// Whether `candidate` is strictly newer than `latest` by the start-time field (an equal
    /// time is the same observation sent twice); without times, the later one is.
    fn is_newer(&self, candidate: &Feature, latest: &Feature) -> bool {
        let Some(time) = self.time_field else {
            return true;
        };
        match (candidate.attributes.get(time), latest.attributes.get(time)) {
            (Some(FieldValue::Date(candidate)), Some(FieldValue::Date(latest))) => {
                candidate > latest
            }
            _ => true,
        }
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

    /// Reserves object ids for resending every slot of the state once (a snapshot sends the
    /// track in slot `i` as id `first + i`): taken from the resend sequence, so that a resent
    /// copy never carries an id a client has already seen.
    pub fn reserve_resend_ids(&mut self) -> i64 {
        let first = self.next_resend_id;
        self.next_resend_id += self.slots.len().max(1) as i64;
        first
    }

    /// The id the next resent copy gets (saved with the state, so that ids never repeat
    /// across restarts: a client's store outlives a reconnect).
    pub fn next_resend_id(&self) -> i64 {
        self.next_resend_id
    }

    /// Every track's latest observation.
    pub fn features(&self) -> impl Iterator<Item = &Feature> + '_ {
        self.slots
            .iter()
            .filter_map(|slot| slot.as_ref().map(|slot| &*slot.feature))
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
        self.by_track.reserve(saved.len());
        for (feature, received_ms) in saved {
            if let Some(FieldValue::Integer(id)) = feature.attributes.get(self.object_id_field) {
                next = next.max(id.saturating_add(1));
            }
            let key = TrackKey::of(&feature, self.track_field);
            let version = self.version + 1;
            // One hash lookup per track and no copy: a start restores a million of them.
            match self.by_track.entry(key) {
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    let slot = Slot {
                        feature: Arc::new(feature),
                        received_ms,
                        version,
                        born: version,
                    };
                    let index = match self.free.pop() {
                        Some(index) => {
                            self.slots.set(index as usize, Some(slot));
                            index
                        }
                        None => {
                            self.slots.push_back(Some(slot));
                            (self.slots.len() - 1) as u32
                        }
                    };
                    vacant.insert(index);
                }
                std::collections::hash_map::Entry::Occupied(occupied) => {
                    let index = *occupied.get() as usize;
                    let latest = &self.slots[index]
                        .as_ref()
                        .expect("a live track's slot holds it");
                    let (time_field, born) = (self.time_field, latest.born);
                    let older = time_field.is_some_and(|time| {
                        matches!(
                            (feature.attributes.get(time), latest.feature.attributes.get(time)),
                            (Some(FieldValue::Date(candidate)), Some(FieldValue::Date(newest)))
                                if candidate < newest
                        )
                    });
                    if !older {
                        self.slots.set(
                            index,
                            Some(Slot {
                                feature: Arc::new(feature),
                                received_ms,
                                version,
                                born,
                            }),
                        );
                    }
                }
            }
        }
        self.next_object_id = next;
        self.publish();
    }

    /// Tracks known.
    pub fn len(&self) -> usize {
        self.by_track.len()
    }

    /// Whether no track is known yet.
    pub fn is_empty(&self) -> bool {
        self.by_track.is_empty()
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
        assert_eq!(latest.reserve_resend_ids(), RESEND_IDS + 5);
        assert_eq!(
            latest.features().next().unwrap().attributes[0],
            FieldValue::Integer(41),
            "stored ids stay"
        );
        assert_eq!(latest.next_resend_id(), RESEND_IDS + 7);
        let received: Vec<i64> = latest
            .frozen()
            .iter()
            .map(|(_, slot)| slot.received_ms)
            .collect();
        assert_eq!(received, [1000, 1000]);
    }
}
