//! Appends what a service's sources publish to its log in the backbone, a batch per message,
//! with no compare-and-set: the order of the log decides, and every node's replica applies it
//! by the same rule (an observation replaces its track's only if strictly newer), so the state
//! is the same everywhere and no ordering of nodes can move a track backwards. Batches are
//! taken from the service's outbox (the same inbox a node alone gives its broker: merged
//! newest per track while the log is behind). Each message carries an id of its own
//! (`Nats-Msg-Id`), by which this node's replica, reading it back, tells the publisher what
//! became of each observation; a publisher waiting for a receipt gets it then. A message
//! whose acknowledgement fails is sent again under its id until the log answers (JetStream
//! stores an id once), for up to 15 s; only then is it reported `unstored`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use tokio::sync::{Semaphore, oneshot};

use super::codec::Codec;
use super::naming;
use super::start::{ServiceLink, Shared};
use crate::feature::Feature;
use crate::latest::Recorded;

/// Log messages appended and not yet read back, at most (each up to `codec::PER_MESSAGE`
/// observations); past it, batches wait in the outbox, merged newest per track.
const IN_FLIGHT: usize = 64;

/// Longest wait for this node's replica to read back what was appended (the replica reading
/// the whole state again after a reconnect, say); past it the observations, stored, are
/// reported recorded.
const FATE_DEADLINE: Duration = Duration::from_secs(20);

/// How long a message whose acknowledgement failed is sent again under its id (a stream
/// leader being elected after a NATS server died takes a few seconds). JetStream stores an id
/// once, so the answer to a resend says for certain whether the message is in the log, also
/// when the first acknowledgement was lost after the message was stored.
const RESEND_WINDOW: Duration = Duration::from_secs(15);

/// What applying one of this node's log messages did.
pub(super) enum Fate {
    /// A batch of observations: what recording them did, by position in the message.
    Recorded(Recorded),
    /// A delete: whether the track was live.
    Deleted(bool),
}

/// A publisher of this node waiting to hear what became of its message, and the observations
/// the message holds (none for a delete).
struct Awaited {
    fate: oneshot::Sender<Fate>,
    features: Option<Vec<Feature>>,
}

/// Publishers of this node's messages waiting to hear what became of them, by message id.
#[derive(Default)]
pub(super) struct Fates {
    waiting: Mutex<HashMap<String, Awaited>>,
}

impl Fates {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Awaited>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn expect(&self, id: String, features: Option<Vec<Feature>>) -> oneshot::Receiver<Fate> {
        let (fate, receiver) = oneshot::channel();
        self.lock().insert(id, Awaited { fate, features });
        receiver
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The observations of this node's message `id` as it appended them, once: the replica
    /// applies them instead of decoding the message's bytes back into the same values.
    pub(super) fn appended(&self, id: &str) -> Option<Vec<Feature>> {
        self.lock()
            .get_mut(id)
            .and_then(|awaited| awaited.features.take())
    }

    /// Tells the publisher of message `id` (if it waits) what applying it did.
    pub(super) fn settle(&self, id: &str, fate: Fate) {
        if let Some(awaited) = self.lock().remove(id) {
            let _ = awaited.fate.send(fate);
        }
    }
}

/// One message appended to the log: its id, the positions of the taken batch it holds, the
/// log's acknowledgement and what its reading back will tell.
struct Appended {
    id: String,
    payload: bytes::Bytes,
    range: std::ops::Range<usize>,
    ack: Result<async_nats::jetstream::context::PublishAckFuture, String>,
    fate: oneshot::Receiver<Fate>,
}

/// Takes a service's outbox and appends it to the log, forever.
pub(super) async fn run(shared: Arc<Shared>, link: Arc<ServiceLink>, fates: Arc<Fates>) {
    let codec = Codec::new(&link.schema);
    let subject = naming::log_subject(&link.name);
    // Message ids unique to this run of this node (JetStream drops a repeated id within its
    // duplicate window: a message sent twice is stored once).
    let run_id = format!("{}-{:016x}", shared.node, rand::random::<u64>());
    let mut sent = 0u64;
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut deletes = link
        .deletes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
        .expect("one publisher per service");
    loop {
        tokio::select! {
            _ = link.outbox_ready.notified() => {}
            Some(delete) = deletes.recv() => {
                sent += 1;
                let id = format!("{run_id}-{sent}");
                let fate = fates.expect(id.clone(), None);
                let payload = codec.encode_delete(&delete.key);
                let (shared, link, fates) = (shared.clone(), link.clone(), fates.clone());
                actix::spawn(async move {
                    let found = append_delete(&shared, &link, &fates, id, payload, fate).await;
                    if let Some(found) = found {
                        let _ = delete.answer.send(found);
                    }
                });
                // On to the outbox as well: a batch may have arrived meanwhile.
            }
        }
        while let Some(mut taken) = link.outbox.take() {
            if taken.stale > 0 {
                link.broker.do_send(crate::broker::CountStale(taken.stale));
            }
            let messages = codec.encode_log(&taken.batch.features);
            let permits = in_flight
                .clone()
                .acquire_many_owned(messages.len().min(IN_FLIGHT) as u32)
                .await
                .expect("the semaphore is never closed");
            let mut appended = Vec::with_capacity(messages.len());
            let mut features = std::mem::take(&mut taken.batch.features).into_iter();
            for (payload, range) in messages {
                sent += 1;
                let id = format!("{run_id}-{sent}");
                let fate = fates.expect(
                    id.clone(),
                    Some(features.by_ref().take(range.len()).collect()),
                );
                let publish = PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(&id);
                let ack = shared
                    .jetstream
                    .send_publish(subject.clone(), publish)
                    .await
                    .map_err(|err| err.to_string());
                appended.push(Appended {
                    id,
                    payload,
                    range,
                    ack,
                    fate,
                });
            }
            let (shared, link, fates) = (shared.clone(), link.clone(), fates.clone());
            actix::spawn(async move {
                let outcome = settle(&shared, &link, &fates, appended).await;
                drop(permits);
                if !outcome.stale.is_empty() {
                    link.broker
                        .do_send(crate::broker::CountStale(outcome.stale.len() as u64));
                }
                taken.acknowledge(&outcome);
            });
        }
    }
}

/// Waits for each message's acknowledgement and then for its reading back; what recording
/// did, by position in the taken batch.
async fn settle(
    shared: &Shared,
    link: &ServiceLink,
    fates: &Fates,
    appended: Vec<Appended>,
) -> Recorded {
    use std::sync::atomic::Ordering::Relaxed;
    let mut outcome = Recorded::default();
    for Appended {
        id,
        payload,
        range,
        ack,
        fate,
    } in appended
    {
        if let Err(err) = acknowledged(shared, link, &id, payload, ack).await {
            fates.forget(&id);
            log::warn!(
                "service {}: appending {} observations to the log: {err}",
                link.name,
                range.len()
            );
            shared
                .health
                .unstored
                .fetch_add(range.len() as u64, Relaxed);
            outcome.unstored.extend(range);
            continue;
        }
        shared.health.stored.fetch_add(range.len() as u64, Relaxed);
        match tokio::time::timeout(FATE_DEADLINE, fate).await {
            Ok(Ok(Fate::Recorded(recorded))) => {
                let shift = |positions: Vec<usize>| positions.into_iter().map(|p| range.start + p);
                outcome.stale.extend(shift(recorded.stale));
                outcome.refused.extend(shift(recorded.refused));
                outcome.unstored.extend(shift(recorded.unstored));
            }
            _ => {
                fates.forget(&id);
                log::warn!(
                    "service {}: {} observations stored in the log were not read back within {FATE_DEADLINE:?}; reported recorded",
                    link.name,
                    range.len()
                );
            }
        }
    }
    outcome.stale.sort_unstable();
    outcome.refused.sort_unstable();
    outcome.unstored.sort_unstable();
    outcome
}

/// Appends an operator's delete to the log and waits for this node's replica to apply it:
/// whether the track was live there; `None` when the log did not take it.
async fn append_delete(
    shared: &Shared,
    link: &ServiceLink,
    fates: &Fates,
    id: String,
    payload: bytes::Bytes,
    fate: oneshot::Receiver<Fate>,
) -> Option<bool> {
    let publish = PublishMessage::build()
        .payload(payload.clone())
        .message_id(&id);
    let ack = shared
        .jetstream
        .send_publish(naming::log_subject(&link.name), publish)
        .await
        .map_err(|err| err.to_string());
    if let Err(err) = acknowledged(shared, link, &id, payload, ack).await {
        fates.forget(&id);
        log::warn!(
            "service {}: appending a track's delete to the log: {err}",
            link.name
        );
        return None;
    }
    match tokio::time::timeout(FATE_DEADLINE, fate).await {
        Ok(Ok(Fate::Deleted(found))) => Some(found),
        _ => {
            fates.forget(&id);
            log::warn!(
                "service {}: a track's delete stored in the log was not read back within {FATE_DEADLINE:?}",
                link.name
            );
            None
        }
    }
}

/// Waits for the log's acknowledgement of message `id` (sent as `ack`); when it fails, sends the
/// message again under its id (see [`resend`]). The last error if the log never takes it.
async fn acknowledged(
    shared: &Shared,
    link: &ServiceLink,
    id: &str,
    payload: bytes::Bytes,
    ack: Result<async_nats::jetstream::context::PublishAckFuture, String>,
) -> Result<(), String> {
    let acked = match ack {
        Ok(ack) => ack.await.map_err(|err| err.to_string()),
        Err(err) => Err(err),
    };
    match acked {
        Ok(_) => Ok(()),
        Err(first) => resend(shared, link, id, payload, first).await,
    }
}

/// Sends message `id` again until the log acknowledges it or [`RESEND_WINDOW`] passes; the
/// last error if it never does.
async fn resend(
    shared: &Shared,
    link: &ServiceLink,
    id: &str,
    payload: bytes::Bytes,
    first: String,
) -> Result<(), String> {
    let subject = naming::log_subject(&link.name);
    let deadline = tokio::time::Instant::now() + RESEND_WINDOW;
    let mut pause = Duration::from_millis(100);
    let mut last = first;
    loop {
        log::info!(
            "service {}: the log did not acknowledge message {id} ({last}); sending it again",
            link.name
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(id);
        let attempt = async {
            shared
                .jetstream
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|err| err.to_string())?
                .await
                .map_err(|err| err.to_string())
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) => last = err,
            Err(_) => return Err(last),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
    }
}
