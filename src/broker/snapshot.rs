//! Snapshots: the latest observation of every track a subscription selects, sent when a
//! session subscribes, after each accepted filter change and to catch up a session that fell
//! behind (docs/architecture.md "Latest state and snapshots").
//!
//! The broker only names a snapshot (a [`Snapshot`]: a subscription, the state version it is
//! of, the resend ids it uses), which costs nothing however large the state; the session's
//! writer builds it piece by piece (a slot range of the state at a time, selected first and
//! then encoded) as its queue drains, off the broker's thread. A piece counts against the
//! queue's byte budget like any data, so a client that does not read holds at most one piece.
//! Pieces are built from the newest frozen state: a track written after the snapshot's
//! version is skipped, because the live frames queued after the snapshot bring its newer
//! observation (or, if the queue dropped them, the next catch-up snapshot does). What the
//! snapshot sends is therefore the state at its version, never newer than what follows it.
//!
//! Sessions of one group that subscribe between two batches share a `Snapshot`, and a piece
//! built for one of them is kept in it and shared (as the same bytes) by every other: the
//! group's snapshot is encoded once, as a whole frame was before, and lives as long as a
//! session still sends it. A client that does not read builds nothing itself.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::subscription::{Deflate, DeflateBytes, Subscription, WireMode};
use crate::feature::FieldValue;
use crate::latest::StateCell;
use crate::protocol::feature_result::{EncodedBatch, FeatureEncoder, Selection};
use crate::protocol::sse;

/// Slots of the state per piece: a custom-mode piece of the simulator's features is about
/// 100 KB, a tenth of a session's default queue.
pub const PIECE_SLOTS: usize = 512;

/// One group's snapshot as of one version of the state.
pub struct Snapshot {
    cell: Arc<StateCell>,
    /// Slots written after this version are skipped (their newer observation follows live).
    version: u64,
    /// Slots the state had: later ones hold tracks born after the snapshot.
    slot_count: usize,
    /// The resent copy of the track in slot `i` carries id `first_id + i`.
    first_id: i64,
    object_id_field: usize,
    subscription: Subscription,
    encoder: FeatureEncoder,
    /// Pieces built so far, by piece index.
    pieces: Mutex<Vec<Cached>>,
    /// Where compressed pieces sent are counted.
    deflate_bytes: Arc<DeflateBytes>,
}

#[derive(Clone)]
enum Cached {
    NotBuilt,
    Empty,
    /// The piece as sent, and its length before compression.
    Built(Bytes, usize),
}

/// What a cursor's next step produced.
pub enum Step {
    /// A frame for the client.
    Frame(Bytes),
    /// A slot range with nothing selected.
    Nothing,
    /// The snapshot is complete.
    Done,
}

impl Snapshot {
    /// The snapshot of `subscription` as of the state `cell` now holds.
    pub fn new(
        cell: Arc<StateCell>,
        first_id: i64,
        object_id_field: usize,
        subscription: Subscription,
        encoder: FeatureEncoder,
        deflate_bytes: Arc<DeflateBytes>,
    ) -> Snapshot {
        let frozen = cell.load();
        let pieces = frozen.slot_count().div_ceil(PIECE_SLOTS);
        Snapshot {
            version: frozen.version(),
            slot_count: frozen.slot_count(),
            cell,
            first_id,
            object_id_field,
            subscription,
            encoder,
            pieces: Mutex::new(vec![Cached::NotBuilt; pieces]),
            deflate_bytes,
        }
    }

    /// A cursor at the snapshot's start.
    pub fn cursor(self: &Arc<Snapshot>) -> SnapshotCursor {
        SnapshotCursor {
            snapshot: self.clone(),
            next_piece: 0,
        }
    }

    fn cached(&self, piece: usize) -> Option<Option<(Bytes, usize)>> {
        let pieces = self
            .pieces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match pieces.get(piece)? {
            Cached::NotBuilt => None,
            Cached::Empty => Some(None),
            Cached::Built(bytes, plain_len) => Some(Some((bytes.clone(), *plain_len))),
        }
    }

    fn build(&self, piece: usize) -> Option<(Bytes, usize)> {
        let start = piece * PIECE_SLOTS;
        let end = (start + PIECE_SLOTS).min(self.slot_count);
        let frozen = self.cell.load();
        let unfiltered = self.subscription.is_unfiltered();
        let mut features = Vec::new();
        for (index, slot) in frozen.slots(start..end) {
            if slot.version > self.version
                || !(unfiltered || self.subscription.matches(&slot.feature))
            {
                continue;
            }
            let mut feature = (*slot.feature).clone();
            if let Some(id) = feature.attributes.get_mut(self.object_id_field) {
                *id = FieldValue::Integer(self.first_id + index as i64);
            }
            features.push(feature);
        }
        drop(frozen);
        let built = if features.is_empty() {
            None
        } else {
            let encoded = self.encoder.encode_batch(&features);
            let mode = self.subscription.mode;
            let plain = frame_for(&encoded, mode, Selection::All);
            let plain_len = plain.len();
            Some((mode.deflate().apply(plain), plain_len))
        };
        let mut pieces = self
            .pieces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = pieces.get_mut(piece) {
            *cached = match &built {
                Some((bytes, plain_len)) => Cached::Built(bytes.clone(), *plain_len),
                None => Cached::Empty,
            };
        }
        built
    }
}

/// Where one queue is in a snapshot.
pub struct SnapshotCursor {
    snapshot: Arc<Snapshot>,
    next_piece: usize,
}

impl SnapshotCursor {
    /// Builds (or takes from another session of the group) the next piece: a bounded amount
    /// of work, [`PIECE_SLOTS`] slots at most.
    pub fn step(&mut self) -> Step {
        let snapshot = &self.snapshot;
        let piece = self.next_piece;
        if piece * PIECE_SLOTS >= snapshot.slot_count {
            return Step::Done;
        }
        self.next_piece += 1;
        let frame = match snapshot.cached(piece) {
            Some(frame) => frame,
            None => snapshot.build(piece),
        };
        match frame {
            Some((frame, plain_len)) => {
                if snapshot.subscription.mode.deflate() != Deflate::Off {
                    snapshot.deflate_bytes.add(plain_len, frame.len());
                }
                Step::Frame(frame)
            }
            None => Step::Nothing,
        }
    }
}

/// The frame of `selection` of an encoded batch, in a wire mode, before any compression.
pub(super) fn frame_for(encoded: &EncodedBatch, mode: WireMode, selection: Selection<'_>) -> Bytes {
    match mode {
        WireMode::Custom(_) | WireMode::GeoJson(_) => encoded.custom_frame(selection),
        WireMode::Server(_) => encoded.server_frames(selection),
        WireMode::Sse | WireMode::GeoJsonSse => sse::features_event(&encoded.json_array(selection)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::broker::queue::{OutboundQueue, Push};
    use crate::feature::{GeometryType, Schema};
    use crate::filter::FilterState;
    use crate::geometry::Wkid;
    use crate::latest::{LatestState, RESEND_IDS, Received};
    use crate::protocol::feature_result::View;
    use crate::service::vehicles_schema;
    use crate::simulator::Fleet;

    /// A state of `tracks` simulated vehicles.
    pub(crate) fn state_of(tracks: usize) -> (LatestState, Schema) {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let mut latest = LatestState::new(&schema);
        let mut fleet = Fleet::new(schema.clone(), tracks, 7, 4);
        latest.record(
            &mut fleet.step(1.0, 1_000),
            Received::Here(1_000),
            usize::MAX,
        );
        (latest, schema)
    }

    /// An unfiltered custom-mode snapshot of the state as it is now.
    pub(crate) fn snapshot_of(latest: &mut LatestState, schema: &Schema) -> Arc<Snapshot> {
        let subscription = Subscription::new(
            WireMode::Custom(Default::default()),
            Wkid::Wgs84,
            &FilterState::default(),
            schema,
        );
        let encoder = FeatureEncoder::new(
            schema,
            &View::new(Wkid::Wgs84, subscription.view.out_fields.clone()),
        );
        Arc::new(Snapshot::new(
            latest.cell(),
            latest.reserve_resend_ids(),
            schema.object_id_field(),
            subscription,
            encoder,
            Arc::default(),
        ))
    }

    /// The features of a queued custom-mode frame (its header skipped).
    pub(crate) fn features_of(frame: &Bytes) -> Vec<serde_json::Value> {
        let start = match frame[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let value: serde_json::Value = serde_json::from_slice(&frame[start..]).expect("JSON");
        value["features"].as_array().expect("features").clone()
    }

    fn ids_of(frame: &Bytes) -> Vec<(i64, i64)> {
        features_of(frame)
            .iter()
            .map(|feature| {
                (
                    feature["attributes"]["OBJECTID"].as_i64().unwrap(),
                    feature["attributes"]["TRACKID"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_large_snapshot_is_built_piece_by_piece_as_the_queue_drains() {
        let (mut latest, schema) = state_of(5_000);
        let snapshot = snapshot_of(&mut latest, &schema);
        let queue = OutboundQueue::new(1 << 20);
        assert_eq!(queue.push_snapshot(snapshot.cursor()), Push::Queued);
        assert_eq!(
            queue.queued_bytes(),
            0,
            "nothing is built before the client reads"
        );
        let (mut tracks, mut ids, mut pieces) = (BTreeSet::new(), BTreeSet::new(), 0);
        while let Some(piece) = queue.take_front_for_tests() {
            pieces += 1;
            assert!(
                piece.len() < 256 * 1024,
                "a piece is bounded: {}",
                piece.len()
            );
            for (id, track) in ids_of(&piece) {
                assert!(id >= RESEND_IDS, "resent under an id of the resend range");
                assert!(ids.insert(id), "an id once");
                assert!(tracks.insert(track), "a track once");
            }
        }
        assert_eq!(tracks.len(), 5_000, "every track");
        assert_eq!(pieces, 5_000usize.div_ceil(PIECE_SLOTS));
    }

    #[test]
    fn a_track_written_after_the_snapshot_is_left_to_the_live_frames() {
        let (mut latest, schema) = state_of(3);
        let snapshot = snapshot_of(&mut latest, &schema);
        let mut newer = Fleet::new(schema.clone(), 1, 7, 4).step(2.0, 5_000);
        latest.record(&mut newer, Received::Here(5_000), usize::MAX);
        let queue = OutboundQueue::new(1 << 20);
        queue.push_snapshot(snapshot.cursor());
        let piece = queue.take_front_for_tests().expect("a piece");
        let tracks: Vec<i64> = ids_of(&piece).into_iter().map(|(_, track)| track).collect();
        assert_eq!(
            tracks.len(),
            2,
            "the track written since is skipped: {tracks:?}"
        );
    }

    #[test]
    fn a_new_snapshot_replaces_one_not_yet_sent_and_sessions_share_pieces() {
        let (mut latest, schema) = state_of(2_000);
        let first = snapshot_of(&mut latest, &schema);
        let second = snapshot_of(&mut latest, &schema);
        let queue = OutboundQueue::new(1 << 20);
        queue.push_snapshot(first.cursor());
        queue.push_control(Bytes::from_static(b"reply"));
        queue.push_snapshot(second.cursor());
        assert_eq!(
            queue.take_front_for_tests(),
            Some(Bytes::from_static(b"reply")),
            "the first snapshot is gone, the reply stays"
        );
        let piece = queue.take_front_for_tests().expect("the second's piece");
        let other = OutboundQueue::new(1 << 20);
        other.push_snapshot(second.cursor());
        let shared = other.take_front_for_tests().expect("a piece");
        assert_eq!(
            piece.as_ptr(),
            shared.as_ptr(),
            "one piece, shared while held"
        );
        drop((piece, shared));
        queue.close(None);
        assert_eq!(
            queue.take_front_for_tests(),
            None,
            "nothing of a snapshot after the close"
        );
    }
}
