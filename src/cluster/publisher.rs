//! Stores what a service's sources publish in the backbone, each observation only if it is
//! newer than its track's stored one: a compare-and-set on the track subject's last sequence,
//! so that whatever node accepted two observations of a track, and in whatever order they
//! arrive, the older never replaces the newer. Batches are taken from the service's outbox
//! (the same inbox a node alone gives its broker: merged newest per track while a store is
//! under way), and each publisher waiting for a receipt gets one once its observations are
//! stored, found stale, or could not be stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;

use super::codec::Codec;
use super::naming;
use super::start::{ServiceLink, Shared};
use crate::feature::Feature;
use crate::latest::{Recorded, TrackKey};

/// Stores awaiting their acknowledgement at once (the client blocks past about 5,000).
const IN_FLIGHT: usize = 2000;

/// Rounds of compare-and-set for one observation racing other nodes' stores of its track.
const ROUNDS: usize = 8;

/// Longest a batch's stores may take (a JetStream leader election pauses writes for seconds);
/// what is not stored by then is reported `unstored`.
const STORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// What this node knows of each track's stored observation.
#[derive(Default)]
pub(super) struct TrackIndex {
    known: Mutex<HashMap<TrackKey, Known>>,
}

#[derive(Clone, Copy)]
struct Known {
    /// The stream sequence of the track's stored message.
    sequence: u64,
    /// Its start time.
    time: Option<i64>,
    /// When this node learnt of it (epoch ms), for forgetting expired tracks.
    seen_ms: i64,
}

impl TrackIndex {
    fn lock(&self) -> MutexGuard<'_, HashMap<TrackKey, Known>> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes a stored observation (acknowledged to this node, or found stored).
    pub(super) fn note(&self, key: TrackKey, sequence: u64, time: Option<i64>, seen_ms: i64) {
        self.note_all([(key, sequence, time, seen_ms)]);
    }

    /// Notes stored observations (a batch the replica read back), under one lock.
    pub(super) fn note_all(
        &self,
        stored: impl IntoIterator<Item = (TrackKey, u64, Option<i64>, i64)>,
    ) {
        let mut known = self.lock();
        for (key, sequence, time, seen_ms) in stored {
            let entry = known.entry(key).or_insert(Known {
                sequence,
                time,
                seen_ms,
            });
            if sequence >= entry.sequence {
                *entry = Known {
                    sequence,
                    time,
                    seen_ms,
                };
            }
        }
    }

    fn forget(&self, key: &TrackKey) {
        self.lock().remove(key);
    }

    /// Forgets tracks not seen since `cutoff_ms` (expired everywhere by then).
    pub(super) fn forget_before(&self, cutoff_ms: i64) {
        self.lock().retain(|_, known| known.seen_ms >= cutoff_ms);
    }
}

/// Whether an observation at `candidate` replaces one at `stored`: strictly newer (an equal
/// time is the same observation sent twice); without times, the later store wins.
fn is_newer(candidate: Option<i64>, stored: Option<i64>) -> bool {
    match (candidate, stored) {
        (Some(candidate), Some(stored)) => candidate > stored,
        _ => true,
    }
}

struct Attempt {
    position: usize,
    key: TrackKey,
    subject: String,
    expected: u64,
    time: Option<i64>,
}

/// Takes a service's outbox and stores it, forever.
pub(super) async fn run(shared: Arc<Shared>, link: Arc<ServiceLink>, tracks: Arc<TrackIndex>) {
    let codec = Codec::new(&link.schema);
    loop {
        link.outbox_ready.notified().await;
        while let Some(taken) = link.outbox.take() {
            if taken.stale > 0 {
                link.broker.do_send(crate::broker::CountStale(taken.stale));
            }
            let outcome = store(&shared, &link, &codec, &tracks, &taken.batch.features).await;
            if !outcome.stale.is_empty() {
                link.broker
                    .do_send(crate::broker::CountStale(outcome.stale.len() as u64));
            }
            taken.acknowledge(&outcome);
        }
    }
}

async fn store(
    shared: &Shared,
    link: &ServiceLink,
    codec: &Codec,
    tracks: &TrackIndex,
    features: &[Feature],
) -> Recorded {
    use std::sync::atomic::Ordering::Relaxed;
    let mut outcome = Recorded::default();
    let now_ms = crate::broker::now_ms();
    if let Some(max_age) = link.max_feature_age {
        tracks.forget_before(now_ms - max_age.as_millis() as i64);
    }
    let track_field = link.schema.track_id_field();
    let mut attempts = Vec::with_capacity(features.len());
    {
        let known = tracks.lock();
        let mut new_tracks = 0;
        for (position, feature) in features.iter().enumerate() {
            let key = TrackKey::of(feature, track_field);
            let time = codec.time_of(feature);
            let expected = match known.get(&key) {
                Some(stored) if !is_newer(time, stored.time) => {
                    outcome.stale.push(position);
                    continue;
                }
                Some(stored) => stored.sequence,
                None if known.len() + new_tracks >= link.max_tracks => {
                    outcome.refused.push(position);
                    continue;
                }
                None => {
                    new_tracks += 1;
                    0
                }
            };
            attempts.push(Attempt {
                position,
                subject: naming::track_subject(&link.name, &key),
                key,
                expected,
                time,
            });
        }
    }
    let started = std::time::Instant::now();
    for _ in 0..ROUNDS {
        if attempts.is_empty() || started.elapsed() > STORE_DEADLINE {
            break;
        }
        let mut conflicts = Vec::new();
        for chunk in attempts.chunks(IN_FLIGHT) {
            let mut pending = Vec::with_capacity(chunk.len());
            for attempt in chunk {
                let publish = PublishMessage::build()
                    .payload(codec.encode(&features[attempt.position]))
                    .expected_last_subject_sequence(attempt.expected);
                pending.push(
                    shared
                        .jetstream
                        .send_publish(attempt.subject.clone(), publish)
                        .await,
                );
            }
            for (attempt, sent) in chunk.iter().zip(pending) {
                let acked = match sent {
                    Ok(ack) => ack.await,
                    Err(err) => Err(err),
                };
                match acked {
                    Ok(ack) => {
                        shared.health.stored.fetch_add(1, Relaxed);
                        tracks.note(attempt.key.clone(), ack.sequence, attempt.time, now_ms);
                    }
                    Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                        shared.health.conflicts.fetch_add(1, Relaxed);
                        conflicts.push(attempt);
                    }
                    Err(err) => {
                        log::warn!("service {}: storing an observation: {err}", link.name);
                        outcome.unstored.push(attempt.position);
                    }
                }
            }
        }
        // Another node stored the track since we last heard: store ours only if newer.
        let mut again = Vec::new();
        let stream = shared
            .jetstream
            .get_stream_no_info(naming::state_stream(&link.name))
            .await;
        for attempt in conflicts {
            let last = match &stream {
                Ok(stream) => stream
                    .get_last_raw_message_by_subject(&attempt.subject)
                    .await
                    .map_err(|err| err.kind()),
                Err(_) => Err(LastRawMessageErrorKind::Other),
            };
            match last {
                Ok(message) => {
                    let stored_time = codec
                        .decode(
                            &message.payload,
                            message.sequence as i64,
                            (message.time.unix_timestamp_nanos() / 1_000_000) as i64,
                        )
                        .ok()
                        .and_then(|feature| codec.time_of(&feature));
                    tracks.note(attempt.key.clone(), message.sequence, stored_time, now_ms);
                    if is_newer(attempt.time, stored_time) {
                        again.push(Attempt {
                            expected: message.sequence,
                            key: attempt.key.clone(),
                            subject: attempt.subject.clone(),
                            ..*attempt
                        });
                    } else {
                        outcome.stale.push(attempt.position);
                    }
                }
                Err(LastRawMessageErrorKind::NoMessageFound) => {
                    // Expired from the stream meanwhile: the track starts again.
                    tracks.forget(&attempt.key);
                    again.push(Attempt {
                        expected: 0,
                        key: attempt.key.clone(),
                        subject: attempt.subject.clone(),
                        ..*attempt
                    });
                }
                Err(kind) => {
                    log::warn!(
                        "service {}: reading a track's stored observation: {kind}",
                        link.name
                    );
                    outcome.unstored.push(attempt.position);
                }
            }
        }
        attempts = again;
    }
    outcome
        .unstored
        .extend(attempts.iter().map(|attempt| attempt.position));
    shared
        .health
        .unstored
        .fetch_add(outcome.unstored.len() as u64, Relaxed);
    outcome.stale.sort_unstable();
    outcome.refused.sort_unstable();
    outcome.unstored.sort_unstable();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_strictly_newer_observation_replaces_the_stored_one() {
        assert!(is_newer(Some(2), Some(1)));
        assert!(!is_newer(Some(1), Some(1)), "the same observation twice");
        assert!(!is_newer(Some(0), Some(1)));
        assert!(is_newer(None, Some(1)));
        assert!(is_newer(Some(1), None));
    }
}
