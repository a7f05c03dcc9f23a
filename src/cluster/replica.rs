//! A node's replica of a service's state: the newest complete checkpoint in the backbone,
//! then every log message after it, in the log's order, handed to the service's broker in
//! batches. Each observation is numbered by its place in the log (`codec::object_id`) and
//! timed by when the log stored it, so every node applies the same observations in the same
//! order with the same ids and expires them at the same age: every node holds the same state.
//! After a reconnect or a gap it reads again from the newest checkpoint; the broker skips what
//! it holds already (an id at or below its track's), so nothing is delivered twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::stream::{Config, StorageType, Stream};
use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, StreamExt};

use super::codec::{self, Codec};
use super::naming;
use super::publisher::{Fate, Fates};
use super::start::{ServiceLink, Shared};
use crate::broker::Replicated;
use crate::feature::Feature;
use crate::latest::Recorded;

/// Most log messages, and most of their bytes, handed to the broker at once.
const MAX_BATCH: usize = 20_000;
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Every this many stall checks, a replica also checks that the log it has not read yet was
/// not dropped by a checkpoint (it fell further behind than the oldest checkpoint kept).
const OVERTAKEN_CHECK_EVERY: u32 = 5;

/// How often a replica checks that its consumer keeps up with the log, and how many checks
/// in a row may find it behind before it reads the whole state again.
const STALL_CHECK: Duration = Duration::from_secs(1);
const STALL_CHECKS: u32 = 3;

/// The longest pause between two messages of one burst.
const BURST_GAP: Duration = Duration::from_millis(2);

/// Longest wait between two attempts to read the log while NATS misbehaves.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps a service's broker a replica of its log, forever.
pub(super) async fn follow(shared: Arc<Shared>, link: Arc<ServiceLink>, fates: Arc<Fates>) {
    let codec = Codec::new(&link.schema);
    let mut epoch = shared.epoch.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        if !shared.health.is_connected() {
            // Wait for the next connection (a new epoch).
            let _ = epoch.changed().await;
            continue;
        }
        epoch.borrow_and_update();
        shared.health.set_lagging(&link.name, true);
        shared
            .health
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = read(&shared, &link, &codec, &fates);
        tokio::select! {
            ended = run => match ended {
                Ok(()) => {}
                Err(err) => {
                    log::warn!("service {}: reading the log: {err}; again in {backoff:?}", link.name);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
            _ = epoch.changed() => {
                log::info!("service {}: reading the whole state again", link.name);
            }
        }
        backoff = Duration::from_millis(100);
    }
}

/// Makes sure the service's stream exists: its log and its checkpoints, on disk, kept until
/// a checkpoint makes them unneeded (no age limit: a track that never expires must outlive
/// every message of its own).
pub(super) async fn ensure_stream(
    shared: &Shared,
    link: &ServiceLink,
) -> Result<Stream, async_nats::Error> {
    let config = Config {
        name: naming::state_stream(&link.name),
        subjects: vec![
            naming::log_subject(&link.name),
            naming::checkpoint_subject(&link.name),
        ],
        storage: StorageType::File,
        num_replicas: shared.replicas,
        ..Default::default()
    };
    Ok(shared.jetstream.get_or_create_stream(config).await?)
}

/// The newest complete checkpoint: the log position it is as of, the sequence of its first
/// message, and the state.
struct Checkpoint {
    through: u64,
    first_sequence: u64,
    features: Vec<Feature>,
    received_ms: Vec<i64>,
}

/// A checkpoint being read, part by part.
struct Parts {
    first_sequence: u64,
    parts: Vec<Option<(Vec<Feature>, Vec<i64>)>>,
}

/// Reads every checkpoint message and keeps the newest checkpoint whose parts all read.
async fn newest_checkpoint(
    shared: &Shared,
    link: &ServiceLink,
    codec: &Codec,
    stream: &Stream,
) -> Result<Option<Checkpoint>, async_nats::Error> {
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: naming::checkpoint_subject(&link.name),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(None);
    }
    let mut messages = consumer.messages().await?;
    let mut newest: Option<Checkpoint> = None;
    let mut reading: HashMap<u64, Parts> = HashMap::new();
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info()?;
        let (sequence, last) = (info.stream_sequence, info.pending == 0);
        match codec.decode_checkpoint(&message.payload) {
            Ok((meta, features)) => {
                let parts = reading.entry(meta.through).or_insert_with(|| Parts {
                    first_sequence: sequence,
                    parts: vec![None; meta.parts as usize],
                });
                if let Some(part) = parts.parts.get_mut(meta.part as usize) {
                    *part = Some((features, meta.received));
                }
                if parts.parts.iter().all(Option::is_some)
                    && newest
                        .as_ref()
                        .is_none_or(|newest| newest.through < meta.through)
                {
                    let parts = reading.remove(&meta.through).expect("being read");
                    let mut checkpoint = Checkpoint {
                        through: meta.through,
                        first_sequence: parts.first_sequence,
                        features: Vec::new(),
                        received_ms: Vec::new(),
                    };
                    for (features, received) in parts.parts.into_iter().flatten() {
                        checkpoint.features.extend(features);
                        checkpoint.received_ms.extend(received);
                    }
                    reading.retain(|&through, _| through > meta.through);
                    newest = Some(checkpoint);
                }
            }
            Err(err) => unreadable(
                shared,
                link,
                1,
                format_args!("checkpoint message {sequence} is unreadable: {err}"),
            ),
        }
        if last {
            break;
        }
    }
    Ok(newest)
}

async fn read(
    shared: &Shared,
    link: &ServiceLink,
    codec: &Codec,
    fates: &Fates,
) -> Result<(), async_nats::Error> {
    let stream = ensure_stream(shared, link).await?;
    let checkpoint = newest_checkpoint(shared, link, codec, &stream).await?;
    let through = checkpoint
        .as_ref()
        .map_or(0, |checkpoint| checkpoint.through);
    // Where the checkpoint read starts: it must still be there once the log after it is read
    // (a checkpoint writer drops the log only up to the checkpoint before its newest one).
    let started_from = checkpoint
        .as_ref()
        .map(|checkpoint| checkpoint.first_sequence);
    if let Some(checkpoint) = checkpoint {
        log::info!(
            "service {}: read the checkpoint as of log position {through} ({} tracks)",
            link.name,
            checkpoint.features.len()
        );
        let mut received = checkpoint.received_ms.into_iter();
        let mut features = checkpoint.features.into_iter().peekable();
        while features.peek().is_some() {
            let batch: Vec<Feature> = features.by_ref().take(MAX_BATCH).collect();
            let received_ms = received.by_ref().take(batch.len()).collect();
            link.broker
                .send(Replicated {
                    features: batch,
                    received_ms,
                    through,
                })
                .await?;
        }
    }
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: naming::log_subject(&link.name),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: through + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut verified = started_from.is_none();
    if consumer.info().await?.num_pending == 0 {
        still_there(&stream, started_from).await?;
        shared.health.set_lagging(&link.name, false);
        verified = true;
        log::info!("service {}: caught up with the log", link.name);
    }
    let mut messages = consumer.messages().await?;
    // The highest log position read, and checks that found the log ahead of it.
    let mut last_read = through;
    let mut behind_checks = 0;
    let mut checks = 0u32;
    let mut check = tokio::time::interval(STALL_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The periodic look at the log runs beside the reading, never in its way: a request
    // JetStream does not answer (a stream just created, a leader being elected) waits out its
    // timeout without holding up the messages or the publishers waiting for them.
    let mut look: Option<LocalBoxFuture<'_, Look>> = None;
    loop {
        let first = tokio::select! {
            first = messages.next() => first,
            _ = check.tick(), if look.is_none() => {
                checks += 1;
                let overtaken_too = checks.is_multiple_of(OVERTAKEN_CHECK_EVERY);
                look = Some(look_at_log(&stream, link, codec, overtaken_too).boxed_local());
                continue;
            }
            found = async { look.as_mut().expect("enabled only while a look runs").await }, if look.is_some() => {
                look = None;
                // A consumer whose server died may stop without an error: if the log holds
                // newer messages than we read for several looks, read the whole state again.
                match found.newest {
                    Some(newest) if newest > last_read => {
                        behind_checks += 1;
                        if behind_checks >= STALL_CHECKS {
                            return Err(format!(
                                "the consumer stalled at {last_read}, the log is at {newest}"
                            )
                            .into());
                        }
                    }
                    _ => behind_checks = 0,
                }
                if let Some(through) = found.oldest_checkpoint {
                    dropped_unread(through, last_read)?;
                }
                continue;
            }
        };
        let Some(first) = first else {
            return Err("the consumer ended".into());
        };
        behind_checks = 0;
        let first = first?;
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        // What was published together arrives back to back (a simulator tick, an ingest
        // request): take it as one batch, so that sessions get one frame for it as on a node
        // alone. Wait for more while messages keep coming, at most the coalescing interval.
        let deadline = tokio::time::Instant::now() + link.coalesce;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let next = match messages.next().now_or_never() {
                Some(next) => next,
                None if link.coalesce.is_zero() => break,
                None => {
                    let wait = deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(BURST_GAP);
                    match tokio::time::timeout(wait, messages.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            match next {
                Some(Ok(message)) => {
                    bytes += message.payload.len();
                    batch.push(message);
                }
                Some(Err(err)) => return Err(err.into()),
                None => return Err("the consumer ended".into()),
            }
        }
        // A hole in the log's positions is a checkpoint's messages (the stream holds both
        // subjects) or log dropped by a checkpoint before this node read it: before applying
        // anything past it, make sure it is not the latter (once per checkpoint written).
        let newest = batch.last().expect("one at least").info()?.stream_sequence;
        if newest.saturating_sub(last_read) > batch.len() as u64 {
            overtaken(&stream, link, codec, last_read).await?;
        }
        let mut caught_up = false;
        let mut pending = Pending::default();
        for message in &batch {
            let info = message.info()?;
            caught_up = info.pending == 0;
            let sequence = info.stream_sequence;
            last_read = last_read.max(sequence);
            let stored_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|id| id.as_str().to_owned());
            if let Some(delete) = codec.decode_delete(&message.payload) {
                // Everything before it in the log first, then the delete at its position.
                if !pending.is_empty() {
                    pending.flush(shared, link, fates, sequence - 1).await?;
                }
                match delete {
                    Ok(key) => {
                        let found = link
                            .broker
                            .send(crate::broker::ReplicatedRemoval {
                                key,
                                through: sequence,
                            })
                            .await?;
                        if let Some(id) = id {
                            fates.settle(&id, Fate::Deleted(found));
                        }
                    }
                    Err(err) => unreadable(
                        shared,
                        link,
                        1,
                        format_args!("log message {sequence} is not a delete: {err}"),
                    ),
                }
                continue;
            }
            let appended = id.as_deref().and_then(|id| fates.appended(id));
            let decoded = match appended.map_or_else(
                || codec.decode_log(&message.payload, stored_ms),
                |features| Ok(codec.appended(features, stored_ms)),
            ) {
                Ok(decoded) => decoded,
                Err(err) => {
                    unreadable(
                        shared,
                        link,
                        1,
                        format_args!("log message {sequence} is not observations: {err}"),
                    );
                    if let Some(id) = id {
                        fates.settle(&id, Fate::Recorded(Recorded::default()));
                    }
                    continue;
                }
            };
            if let Some((position, reason)) = decoded.rejected.first() {
                let count = decoded.rejected.len();
                unreadable(
                    shared,
                    link,
                    count as u64,
                    format_args!(
                        "log message {sequence} holds {count} observations the service refuses, the first (position {position}): {reason}"
                    ),
                );
            }
            let mut places = Vec::new();
            let object_id_field = link.schema.object_id_field();
            for (position, mut feature) in decoded.features {
                feature.attributes[object_id_field] =
                    crate::feature::FieldValue::Integer(codec::object_id(sequence, position));
                if places.len() <= position {
                    places.resize(position + 1, usize::MAX);
                }
                places[position] = pending.features.len();
                pending.features.push(feature);
                pending.received_ms.push(stored_ms);
            }
            if let Some(id) = id {
                let refused = decoded
                    .rejected
                    .into_iter()
                    .map(|(position, _)| position)
                    .collect();
                pending.awaited.push((id, places, refused));
            }
        }
        pending.flush(shared, link, fates, last_read).await?;
        if caught_up && !verified {
            still_there(&stream, started_from).await?;
            verified = true;
        }
        if caught_up && verified {
            shared.health.set_lagging(&link.name, false);
        }
    }
}

/// Observations read from the log and not yet handed to the broker.
#[derive(Default)]
struct Pending {
    features: Vec<Feature>,
    received_ms: Vec<i64>,
    /// Per message awaited by a publisher on this node: its id, where its observations are
    /// in `features` (by position in the message), and what decoding refused.
    awaited: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.features.is_empty() && self.awaited.is_empty()
    }

    /// Hands what is pending to the broker as the state through log position `through`, and
    /// tells this node's publishers what became of their messages.
    async fn flush(
        &mut self,
        shared: &Shared,
        link: &ServiceLink,
        fates: &Fates,
        through: u64,
    ) -> Result<(), async_nats::Error> {
        let Pending {
            features,
            received_ms,
            awaited,
        } = std::mem::take(self);
        shared
            .health
            .replicated
            .fetch_add(features.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let recorded = link
            .broker
            .send(Replicated {
                features,
                received_ms,
                through,
            })
            .await?;
        for (id, places, unreadable) in awaited {
            fates.settle(
                &id,
                Fate::Recorded(by_message(&recorded, &places, unreadable)),
            );
        }
        Ok(())
    }
}

/// Counts what the service refuses of the backbone's messages, and says what.
fn unreadable(shared: &Shared, link: &ServiceLink, count: u64, what: std::fmt::Arguments<'_>) {
    shared
        .health
        .unreadable
        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    log::warn!("service {}: {what}", link.name);
}

/// Whether the checkpoint a read started from (its first message) is still there: then the
/// log after it was whole while it was read (a writer drops a checkpoint before the log it
/// needs). If not, the read must start again.
async fn still_there(stream: &Stream, started_from: Option<u64>) -> Result<(), async_nats::Error> {
    if let Some(first) = started_from
        && stream.get_raw_message(first).await.is_err()
    {
        return Err("the log was compacted while it was read".into());
    }
    Ok(())
}

/// Whether a checkpoint dropped log this replica has not read yet: the oldest checkpoint kept
/// is as of a position past what it read (a writer drops the log only up to the oldest
/// checkpoint it keeps). If so, it must read again from the newest checkpoint.
async fn overtaken(
    stream: &Stream,
    link: &ServiceLink,
    codec: &Codec,
    last_read: u64,
) -> Result<(), async_nats::Error> {
    match oldest_checkpoint(stream, link, codec).await {
        Some(through) => dropped_unread(through, last_read),
        None => Ok(()),
    }
}

/// An error when the oldest checkpoint kept, as of log position `through`, is past what this
/// replica read: the log between was dropped.
fn dropped_unread(through: u64, last_read: u64) -> Result<(), async_nats::Error> {
    if through > last_read {
        return Err(format!(
            "the log up to {through} was dropped while this node had read to {last_read}"
        )
        .into());
    }
    Ok(())
}

/// The log position the oldest checkpoint kept is as of; `None` when there is none or it
/// cannot be read.
async fn oldest_checkpoint(stream: &Stream, link: &ServiceLink, codec: &Codec) -> Option<u64> {
    let oldest = stream
        .get_first_raw_message_by_subject(naming::checkpoint_subject(&link.name), 0)
        .await
        .ok()?;
    codec.checkpoint_position(&oldest.payload)
}

/// What a periodic look at the log found.
struct Look {
    /// The position of the newest log message; `None` when JetStream did not say.
    newest: Option<u64>,
    /// When asked for: the position the oldest checkpoint kept is as of.
    oldest_checkpoint: Option<u64>,
}

/// Asks JetStream for the newest log position and, when `overtaken_too`, for the oldest
/// checkpoint's; a question it does not answer comes back `None`.
async fn look_at_log(
    stream: &Stream,
    link: &ServiceLink,
    codec: &Codec,
    overtaken_too: bool,
) -> Look {
    let newest = stream
        .get_last_raw_message_by_subject(&naming::log_subject(&link.name))
        .await
        .ok()
        .map(|message| message.sequence);
    let oldest_checkpoint = if overtaken_too {
        oldest_checkpoint(stream, link, codec).await
    } else {
        None
    };
    Look {
        newest,
        oldest_checkpoint,
    }
}

/// What recording a batch did to one message's observations, by position in the message:
/// `places[p]` is where the observation at position `p` went in the batch (`usize::MAX`:
/// refused by decoding, listed in `unreadable`).
fn by_message(recorded: &Recorded, places: &[usize], unreadable: Vec<usize>) -> Recorded {
    let mut mine = Recorded {
        unstored: unreadable,
        ..Recorded::default()
    };
    for (position, &place) in places.iter().enumerate() {
        if place == usize::MAX {
            continue;
        }
        if recorded.stale.binary_search(&place).is_ok() {
            mine.stale.push(position);
        } else if recorded.refused.binary_search(&place).is_ok() {
            mine.refused.push(position);
        } else if recorded.unstored.binary_search(&place).is_ok() {
            mine.unstored.push(position);
        }
    }
    mine.unstored.sort_unstable();
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_outcome_maps_back_to_each_message() {
        // Message positions 0..4 went to batch places 3, refused by decoding, 4, 5.
        let places = [3, usize::MAX, 4, 5];
        let recorded = Recorded {
            stale: vec![0, 4],
            refused: vec![5],
            unstored: vec![],
        };
        assert_eq!(
            by_message(&recorded, &places, vec![1]),
            Recorded {
                stale: vec![2],
                refused: vec![3],
                unstored: vec![1],
            }
        );
    }
}
