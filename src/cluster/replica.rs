//! A node's replica of a service's latest state: reads the state stream's last message per
//! track subject (the whole state), then every new message, and hands them to the service's
//! broker in batches, each observation numbered by its stream sequence and timed by when the
//! stream stored it (so expiry is the same on every node). After a reconnect or a gap it
//! reads the whole state again; the broker keeps a track's observation only if its sequence
//! is higher than the one it holds, so nothing is delivered twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::stream::{Config, StorageType};
use futures_util::{FutureExt, StreamExt};

use super::codec::Codec;
use super::naming;
use super::publisher::TrackIndex;
use super::start::{ServiceLink, Shared};
use crate::broker::Replicated;
use crate::latest::TrackKey;

/// Most observations handed to the broker at once.
const MAX_BATCH: usize = 20_000;

/// How often a replica checks that its consumer keeps up with the stream, and how many
/// checks in a row may find it behind before it reads the whole state again.
const STALL_CHECK: Duration = Duration::from_secs(1);
const STALL_CHECKS: u32 = 3;

/// The longest pause between two messages of one burst.
const BURST_GAP: Duration = Duration::from_millis(2);

/// Longest wait between two attempts to read the stream while NATS misbehaves.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps a service's broker a replica of its state stream, forever.
pub(super) async fn follow(shared: Arc<Shared>, link: Arc<ServiceLink>, tracks: Arc<TrackIndex>) {
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
        let run = read(&shared, &link, &codec, &tracks);
        tokio::select! {
            ended = run => match ended {
                Ok(()) => {}
                Err(err) => {
                    log::warn!("service {}: reading the state stream: {err}; again in {backoff:?}", link.name);
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

/// Makes sure the service's stream exists with the service's settings.
async fn ensure_stream(shared: &Shared, link: &ServiceLink) -> Result<(), async_nats::Error> {
    let config = Config {
        name: naming::state_stream(&link.name),
        subjects: vec![naming::track_subjects(&link.name)],
        max_messages_per_subject: 1,
        max_age: link.max_feature_age.unwrap_or_default(),
        storage: StorageType::File,
        num_replicas: shared.replicas,
        ..Default::default()
    };
    let mut stream = shared
        .jetstream
        .get_or_create_stream(config.clone())
        .await?;
    let current = &stream.info().await?.config;
    if current.max_age != config.max_age {
        shared.jetstream.update_stream(config).await?;
    }
    Ok(())
}

async fn read(
    shared: &Shared,
    link: &ServiceLink,
    codec: &Codec,
    tracks: &TrackIndex,
) -> Result<(), async_nats::Error> {
    ensure_stream(shared, link).await?;
    let stream = shared
        .jetstream
        .get_stream_no_info(naming::state_stream(&link.name))
        .await?;
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: naming::track_subjects(&link.name),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        shared.health.set_lagging(&link.name, false);
        log::info!(
            "service {}: caught up (the state stream is empty)",
            link.name
        );
    }
    let mut messages = consumer.messages().await?;
    let track_field = link.schema.track_id_field();
    // The highest stream sequence read, and checks that found the stream ahead of it.
    let mut last_read = 0u64;
    let mut behind_checks = 0;
    let mut check = tokio::time::interval(STALL_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            first = messages.next() => first,
            _ = check.tick() => {
                // A consumer whose server died may stop without an error: if the stream holds
                // newer messages than we read for several checks, read the whole state again.
                if let Ok(info) = stream.get_info().await {
                    let newest = info.state.last_sequence;
                    // The newest message may have expired since (the sequence stays).
                    if newest > last_read && stream.get_raw_message(newest).await.is_ok() {
                        behind_checks += 1;
                        if behind_checks >= STALL_CHECKS {
                            return Err(format!(
                                "the consumer stalled at {last_read}, the stream is at {}",
                                info.state.last_sequence
                            )
                            .into());
                        }
                    } else {
                        behind_checks = 0;
                    }
                }
                continue;
            }
        };
        let Some(first) = first else {
            return Err("the consumer ended".into());
        };
        behind_checks = 0;
        let mut batch = vec![first?];
        // What was published together arrives back to back (a simulator tick, an ingest
        // request): take it as one batch, so that sessions get one frame for it as on a node
        // alone. Wait for more while messages keep coming, at most the coalescing interval.
        let deadline = tokio::time::Instant::now() + link.coalesce;
        while batch.len() < MAX_BATCH {
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
                Some(Ok(message)) => batch.push(message),
                Some(Err(err)) => return Err(err.into()),
                None => return Err("the consumer ended".into()),
            }
        }
        let mut caught_up = false;
        let mut newest: HashMap<TrackKey, usize> = HashMap::with_capacity(batch.len());
        let mut features = Vec::with_capacity(batch.len());
        let mut received_ms = Vec::with_capacity(batch.len());
        let mut stored = Vec::with_capacity(batch.len());
        for message in &batch {
            let info = message.info()?;
            caught_up = info.pending == 0;
            let sequence = info.stream_sequence;
            last_read = last_read.max(sequence);
            let stored_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
            let decoded = codec
                .decode(&message.payload, sequence as i64, stored_ms)
                .map_err(|err| err.to_string())
                .and_then(|feature| {
                    // Keyed by its subject: an observation published on another track's
                    // subject (by anyone with access to the stream) would replace that track.
                    let subject =
                        naming::track_subject(&link.name, &TrackKey::of(&feature, track_field));
                    if subject == message.subject.as_str() {
                        Ok(feature)
                    } else {
                        Err("its track is not the track of its subject".to_owned())
                    }
                });
            let feature = match decoded {
                Ok(feature) => feature,
                Err(err) => {
                    shared
                        .health
                        .unreadable
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log::warn!(
                        "service {}: message {sequence} on {} is not an observation: {err}",
                        link.name,
                        message.subject
                    );
                    continue;
                }
            };
            let key = TrackKey::of(&feature, track_field);
            stored.push((key.clone(), sequence, codec.time_of(&feature), stored_ms));
            // One observation per track and batch: the newest (the stream's order).
            match newest.get(&key) {
                Some(&slot) => {
                    features[slot] = feature;
                    received_ms[slot] = stored_ms;
                }
                None => {
                    newest.insert(key, features.len());
                    features.push(feature);
                    received_ms.push(stored_ms);
                }
            }
        }
        tracks.note_all(stored);
        shared
            .health
            .replicated
            .fetch_add(features.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if !features.is_empty() {
            link.broker
                .send(Replicated {
                    features,
                    received_ms,
                })
                .await?;
        }
        if caught_up {
            shared.health.set_lagging(&link.name, false);
        }
    }
}
