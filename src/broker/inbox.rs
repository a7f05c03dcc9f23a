//! `BatchInbox`: where a source leaves batches for its broker. Batches that arrive while the
//! broker is still fanning out an earlier one are merged, the newest observation of each
//! track winning, so that a broker slowed down (by expensive filters, a burst of ingest)
//! falls back at most one batch instead of further and further behind: its viewers see the
//! current state late by one fan-out, never a growing backlog.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::feature::{Feature, FieldValue};
use crate::latest::TrackKey;
use crate::source::{Batch, Receipt};

/// Where an observation waiting in the inbox came from.
#[derive(Clone, Copy)]
struct Origin {
    /// Index of its publisher's receipt in `Pending::receipts`, if it asked for one.
    receipt: Option<usize>,
    /// Position in its batch.
    position: usize,
}

#[derive(Default)]
struct Pending {
    features: Vec<Feature>,
    origins: Vec<Origin>,
    by_track: HashMap<TrackKey, usize>,
    observed_ms: i64,
    /// Batches merged into this one (1 when none was).
    batches: u64,
    /// Observations older than one of the same track already waiting (stale).
    stale: u64,
    receipts: Vec<(oneshot::Sender<Receipt>, Receipt)>,
    /// Observations replaced while waiting by a newer one of their track, with the index of
    /// what replaced them: never recorded, they share its fate if it fails and are stale
    /// (older than their track's latest) if it is recorded.
    superseded: Vec<(Origin, usize)>,
}

/// A service's inbox.
pub struct BatchInbox {
    track_field: usize,
    time_field: Option<usize>,
    pending: Mutex<Option<Pending>>,
}

/// What the broker takes from the inbox.
pub struct Taken {
    /// The merged batch.
    pub batch: Batch,
    /// How many batches it merges (more than 1 when the broker was behind).
    pub batches: u64,
    /// Observations dropped as stale while waiting (older than one of the same track).
    pub stale: u64,
    origins: Vec<Origin>,
    receipts: Vec<(oneshot::Sender<Receipt>, Receipt)>,
    superseded: Vec<(Origin, usize)>,
}

impl Taken {
    /// Tells each publisher that asked what became of its observations, given what recording
    /// the merged batch did (positions in the merged batch).
    pub fn acknowledge(self, recorded: &crate::latest::Recorded) {
        let Taken {
            origins,
            mut receipts,
            superseded,
            ..
        } = self;
        for (origin, winner) in superseded {
            let Some(receipt) = origin.receipt else {
                continue;
            };
            let receipt = &mut receipts[receipt].1;
            let fate = if recorded.refused.binary_search(&winner).is_ok() {
                &mut receipt.refused
            } else if recorded.unstored.binary_search(&winner).is_ok() {
                &mut receipt.unstored
            } else {
                &mut receipt.stale
            };
            fate.push(origin.position);
        }
        type List = fn(&mut Receipt) -> &mut Vec<usize>;
        let lists: [(&[usize], List); 3] = [
            (&recorded.stale, |receipt| &mut receipt.stale),
            (&recorded.refused, |receipt| &mut receipt.refused),
            (&recorded.unstored, |receipt| &mut receipt.unstored),
        ];
        for (positions, list) in lists {
            for &merged in positions {
                let origin = origins[merged];
                if let Some(receipt) = origin.receipt {
                    list(&mut receipts[receipt].1).push(origin.position);
                }
            }
        }
        for (sender, mut receipt) in receipts {
            receipt.stale.sort_unstable();
            receipt.refused.sort_unstable();
            receipt.unstored.sort_unstable();
            // A publisher that stopped waiting (its client went away) needs no answer.
            let _ = sender.send(receipt);
        }
    }
}

impl BatchInbox {
    /// An inbox merging by the attribute at `track_field`, the newest by `time_field` (else
    /// the last arrived) winning.
    pub fn new(track_field: usize, time_field: Option<usize>) -> BatchInbox {
        BatchInbox {
            track_field,
            time_field,
            pending: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn time(&self, feature: &Feature) -> Option<i64> {
        match feature.attributes.get(self.time_field?) {
            Some(FieldValue::Date(ms)) => Some(*ms),
            _ => None,
        }
    }

    /// Leaves a batch; `true` when the inbox was empty (the broker must be told). With a
    /// `receipt`, the publisher is told what became of each observation once recorded.
    pub fn push(&self, batch: Batch, receipt: Option<oneshot::Sender<Receipt>>) -> bool {
        let mut pending = self.lock();
        let was_empty = pending.is_none();
        let merged = pending.get_or_insert_with(Pending::default);
        merged.batches += 1;
        merged.observed_ms = merged.observed_ms.max(batch.observed_ms);
        let receipt = receipt.map(|sender| {
            merged.receipts.push((sender, Receipt::default()));
            merged.receipts.len() - 1
        });
        for (position, feature) in batch.features.into_iter().enumerate() {
            let origin = Origin { receipt, position };
            let key = TrackKey::of(&feature, self.track_field);
            match merged.by_track.get(&key) {
                Some(&index) => {
                    let older = matches!(
                        (self.time(&feature), self.time(&merged.features[index])),
                        (Some(new), Some(waiting)) if new < waiting
                    );
                    if older {
                        // Older than what waits for the same track: stale already.
                        merged.stale += 1;
                        if let Some(receipt) = receipt {
                            merged.receipts[receipt].1.stale.push(position);
                        }
                    } else {
                        merged.features[index] = feature;
                        let replaced = std::mem::replace(&mut merged.origins[index], origin);
                        merged.superseded.push((replaced, index));
                    }
                }
                None => {
                    merged.by_track.insert(key, merged.features.len());
                    merged.features.push(feature);
                    merged.origins.push(origin);
                }
            }
        }
        was_empty
    }

    /// Observations waiting (one per track).
    pub fn pending_len(&self) -> usize {
        self.lock()
            .as_ref()
            .map_or(0, |pending| pending.features.len())
    }

    /// Takes everything left since the last take.
    pub fn take(&self) -> Option<Taken> {
        let pending = self.lock().take()?;
        Some(Taken {
            batch: Batch {
                features: pending.features,
                observed_ms: pending.observed_ms,
            },
            batches: pending.batches,
            stale: pending.stale,
            origins: pending.origins,
            receipts: pending.receipts,
            superseded: pending.superseded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::FieldValue;
    use crate::geometry::Geometry;

    fn observation(track: i64, object_id: i64) -> Feature {
        Feature {
            attributes: vec![FieldValue::Integer(object_id), FieldValue::Integer(track)],
            geometry: Geometry::Point { x: 0.0, y: 0.0 },
        }
    }

    #[test]
    fn batches_left_while_the_broker_is_busy_merge_with_the_newest_per_track() {
        let inbox = BatchInbox::new(1, None);
        let first = Batch {
            features: vec![observation(1, 10), observation(2, 11)],
            observed_ms: 1000,
        };
        let second = Batch {
            features: vec![observation(2, 12), observation(3, 13)],
            observed_ms: 2000,
        };
        assert!(inbox.push(first, None), "the broker is told once");
        assert!(
            !inbox.push(second, None),
            "not again while the first is pending"
        );
        let taken = inbox.take().expect("a batch");
        assert_eq!(taken.batches, 2);
        assert_eq!(taken.batch.observed_ms, 2000);
        let ids: Vec<&FieldValue> = taken
            .batch
            .features
            .iter()
            .map(|feature| &feature.attributes[0])
            .collect();
        assert_eq!(
            ids,
            [
                &FieldValue::Integer(10),
                &FieldValue::Integer(12),
                &FieldValue::Integer(13)
            ]
        );
        assert!(inbox.take().is_none());
        assert!(inbox.push(
            Batch {
                features: vec![],
                observed_ms: 3000
            },
            None
        ));
    }

    /// Observations as (object id, track, observed); the time field is index 2.
    fn timed(track: i64, observed: i64) -> Feature {
        Feature {
            attributes: vec![
                FieldValue::Integer(0),
                FieldValue::Integer(track),
                FieldValue::Date(observed),
            ],
            geometry: Geometry::Point { x: 0.0, y: 0.0 },
        }
    }

    #[test]
    fn an_older_observation_waiting_behind_a_newer_one_is_stale_and_receipts_map_back() {
        let inbox = BatchInbox::new(1, Some(2));
        let (first_sender, mut first) = oneshot::channel();
        let (second_sender, mut second) = oneshot::channel();
        inbox.push(
            Batch {
                features: vec![timed(1, 2000), timed(2, 1000)],
                observed_ms: 2000,
            },
            Some(first_sender),
        );
        inbox.push(
            Batch {
                features: vec![timed(1, 1500), timed(3, 1000), timed(2, 3000)],
                observed_ms: 3000,
            },
            Some(second_sender),
        );
        let taken = inbox.take().expect("a batch");
        assert_eq!(taken.stale, 1, "track 1 at 1500 behind track 1 at 2000");
        let times: Vec<&FieldValue> = taken
            .batch
            .features
            .iter()
            .map(|feature| &feature.attributes[2])
            .collect();
        assert_eq!(
            times,
            [
                &FieldValue::Date(2000),
                &FieldValue::Date(3000),
                &FieldValue::Date(1000)
            ]
        );
        // The broker found merged position 2 (track 3) refused: it is the second batch's 1.
        taken.acknowledge(&crate::latest::Recorded {
            refused: vec![2],
            ..Default::default()
        });
        assert_eq!(
            first.try_recv().expect("a receipt"),
            Receipt {
                stale: vec![1],
                ..Receipt::default()
            },
            "track 2 at 1000, replaced while waiting by track 2 at 3000: never recorded"
        );
        assert_eq!(
            second.try_recv().expect("a receipt"),
            Receipt {
                stale: vec![0],
                refused: vec![1],
                unstored: vec![],
            }
        );
    }
}
