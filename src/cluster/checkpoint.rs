//! Compaction of a service's log: the node holding the service's checkpoint lease writes the
//! state, as of a log position, into the backbone as a checkpoint (a run of messages on the
//! checkpoint subject), then drops what the checkpoint before it makes unneeded: the older
//! checkpoints and the log up to the previous checkpoint's position. A node that starts
//! reads the newest complete checkpoint and the log after it, so the backbone holds about
//! two states and the log of two intervals, whatever has been ingested since the start.
//!
//! Keeping the previous checkpoint's log gives a node still reading it (it started from the
//! previous one) a whole interval to finish; one slower than that finds its checkpoint gone
//! when it catches up and reads again (`replica`).

use std::sync::Arc;

use super::codec::{CheckpointMeta, Codec, MESSAGE_BYTES, PER_MESSAGE};
use super::naming;
use super::start::{ServiceLink, Shared};
use crate::broker::CheckpointCopy;
use crate::source::Lease;

/// A checkpoint written: the log position it is as of, and its first message.
#[derive(Clone, Copy)]
struct Written {
    through: u64,
    first_sequence: u64,
}

/// Writes the service's checkpoints while this node holds `lease`, forever.
pub(super) async fn write(shared: Arc<Shared>, link: Arc<ServiceLink>, lease: Arc<Lease>) {
    // The checkpoint before the newest this node wrote, and the newest.
    let mut previous: Option<Written> = None;
    let mut newest: Option<Written> = None;
    loop {
        tokio::time::sleep(link.checkpoint_every).await;
        if !lease.is_held() {
            (previous, newest) = (None, None);
            continue;
        }
        if !shared.health.is_ready() {
            continue;
        }
        let Ok((state, through)) = link.broker.send(CheckpointCopy).await else {
            return;
        };
        if through == 0 || newest.is_some_and(|newest| newest.through == through) {
            continue;
        }
        match checkpoint(&shared, &link, &lease, state, through).await {
            Ok(written) => {
                shared
                    .health
                    .checkpoints
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(dropped) = previous {
                    drop_before(&shared, &link, dropped).await;
                }
                previous = newest;
                newest = Some(written);
            }
            Err(err) => log::warn!(
                "service {}: writing a checkpoint as of log position {through}: {err}",
                link.name
            ),
        }
    }
}

/// Writes `state` (as of log position `through`) as a checkpoint.
async fn checkpoint(
    shared: &Shared,
    link: &ServiceLink,
    lease: &Lease,
    state: crate::latest::Frozen,
    through: u64,
) -> Result<Written, String> {
    let schema = link.schema.clone();
    // Encoding a large state takes a while: off this thread, which reads the log.
    let parts = tokio::task::spawn_blocking(move || encode(&schema, &state, through))
        .await
        .map_err(|err| err.to_string())?;
    let subject = naming::checkpoint_subject(&link.name);
    let mut acks = Vec::with_capacity(parts.len());
    for part in parts {
        if !lease.is_held() {
            return Err("the lease moved to another node".into());
        }
        let ack = shared
            .jetstream
            .publish(subject.clone(), part)
            .await
            .map_err(|err| err.to_string())?;
        acks.push(ack);
    }
    let mut first_sequence = None;
    for ack in acks {
        let ack = ack.await.map_err(|err| err.to_string())?;
        first_sequence.get_or_insert(ack.sequence);
    }
    Ok(Written {
        through,
        first_sequence: first_sequence.unwrap_or(0),
    })
}

/// The messages of a checkpoint of `state`: at most [`PER_MESSAGE`] features each, closed
/// once past [`MESSAGE_BYTES`]; an empty state is one message without features.
fn encode(
    schema: &crate::feature::Schema,
    state: &crate::latest::Frozen,
    through: u64,
) -> Vec<bytes::Bytes> {
    let codec = Codec::new(schema);
    let object_id = schema.object_id_field();
    let mut parts: Vec<(CheckpointMeta, Vec<u8>)> = vec![(CheckpointMeta::default(), Vec::new())];
    for (_, slot) in state.iter() {
        let (meta, features) = parts.last_mut().expect("one at least");
        codec.write_feature(&slot.feature, features);
        meta.ids.push(match slot.feature.attributes.get(object_id) {
            Some(crate::feature::FieldValue::Integer(id)) => *id,
            _ => 0,
        });
        meta.received.push(slot.received_ms);
        if meta.ids.len() == PER_MESSAGE || features.len() >= MESSAGE_BYTES {
            parts.push((CheckpointMeta::default(), Vec::new()));
        }
    }
    if parts.len() > 1 && parts.last().is_some_and(|(meta, _)| meta.ids.is_empty()) {
        parts.pop();
    }
    let count = parts.len() as u32;
    parts
        .into_iter()
        .enumerate()
        .map(|(part, (mut meta, features))| {
            meta.through = through;
            meta.part = part as u32;
            meta.parts = count;
            codec.checkpoint_message(&meta, &features)
        })
        .collect()
}

/// Drops the checkpoints before `kept` and the log up to its position.
async fn drop_before(shared: &Shared, link: &ServiceLink, kept: Written) {
    let Ok(stream) = shared
        .jetstream
        .get_stream_no_info(naming::state_stream(&link.name))
        .await
    else {
        return;
    };
    // The checkpoints first: a reader that finds its checkpoint gone reads again, so the log
    // a checkpoint still there needs is never dropped before it.
    let purged = async {
        stream
            .purge()
            .filter(naming::checkpoint_subject(&link.name))
            .sequence(kept.first_sequence)
            .await?;
        stream
            .purge()
            .filter(naming::log_subject(&link.name))
            .sequence(kept.through + 1)
            .await
    };
    match purged.await {
        Ok(purged) => log::debug!(
            "service {}: dropped the log up to position {} ({} messages)",
            link.name,
            kept.through,
            purged.purged
        ),
        Err(err) => log::warn!(
            "service {}: dropping the log up to position {}: {err}",
            link.name,
            kept.through
        ),
    }
}
