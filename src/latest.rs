//! `LatestState`: the latest observation of every track of one service, ordered by the
//! schema's start-time field, so that an older observation never replaces a newer one. It
//! feeds the snapshot a session gets when it subscribes or changes its filter. Plain Rust, no
//! actors: the same interface can be kept elsewhere (a message bus) later.

use std::collections::HashMap;
use std::sync::Arc;

use crate::feature::{Feature, FieldValue, Schema};
use crate::source::Batch;

/// A track id as a map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TrackKey {
    Integer(i64),
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

/// The latest observation of each track.
pub struct LatestState {
    track_field: usize,
    time_field: Option<usize>,
    by_track: HashMap<TrackKey, usize>,
    features: Vec<Feature>,
}

impl LatestState {
    /// An empty state for a service's schema.
    pub fn new(schema: &Schema) -> LatestState {
        LatestState {
            track_field: schema.track_id_field(),
            time_field: schema.start_time_field(),
            by_track: HashMap::new(),
            features: Vec::new(),
        }
    }

    /// Records a batch; returns the indexes of observations older than their track's latest
    /// (stale: not recorded, and not to be streamed).
    pub fn record(&mut self, batch: &Batch) -> Vec<usize> {
        let mut stale = Vec::new();
        for (index, feature) in batch.features.iter().enumerate() {
            let key = TrackKey::of(feature, self.track_field);
            match self.by_track.get(&key) {
                Some(&slot) => {
                    if self.is_older(feature, &self.features[slot]) {
                        stale.push(index);
                    } else {
                        self.features[slot] = feature.clone();
                    }
                }
                None => {
                    self.by_track.insert(key, self.features.len());
                    self.features.push(feature.clone());
                }
            }
        }
        stale
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

    /// Every track's latest observation.
    pub fn features(&self) -> &[Feature] {
        &self.features
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
        assert!(latest.record(&first).is_empty());
        let second = Batch {
            features: vec![
                observation(&schema, 2, 12, 900),
                observation(&schema, 1, 13, 2000),
                observation(&schema, 3, 14, 500),
            ],
            observed_ms: 2000,
        };
        assert_eq!(
            latest.record(&second),
            [0],
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
                &FieldValue::Integer(13),
                &FieldValue::Integer(11),
                &FieldValue::Integer(14)
            ]
        );
        assert_eq!(latest.len(), 3);
    }
}
