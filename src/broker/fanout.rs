//! `Fanout`: the broker's plain state and the per-batch work (docs/architecture.md "The hot path").
//! Each batch is encoded once per view in use, each group of identical subscriptions
//! evaluates its filter once per feature and builds its frame once, and every member gets a
//! clone of the same `Bytes`. Cost grows with distinct subscriptions, not with sessions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::envelope_index::EnvelopeIndex;
use super::messages::{SessionId, Subscriber};
use super::snapshot::{Snapshot, frame_for};
use crate::broker::queue::Push;
use crate::broker::subscription::{Deflate, GroupKey, Subscription, WireMode};
use crate::feature::{Feature, Schema};

/// Sessions the broker no longer feeds, and why.
pub type Ended = Vec<(Subscriber, CloseCause)>;
use crate::latest::{LatestState, Recorded};
use crate::protocol::close::CloseCause;
use crate::protocol::feature_result::{EncodedBatch, FeatureEncoder, Selection, View};
use crate::source::Batch;

struct Group {
    subscription: Subscription,
    members: Vec<Subscriber>,
    /// Slot in the envelope index, for groups with an envelope (set at each rebuild).
    envelope_slot: Option<usize>,
}

/// Counters for `/api/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Batches published.
    pub batches: u64,
    /// Features received from the source.
    pub features_in: u64,
    /// Features queued to sessions (a feature sent to two sessions counts twice).
    pub features_out: u64,
    /// Data frames dropped because a session's queue was full (it gets a snapshot instead).
    pub frames_conflated: u64,
    /// Observations older than their track's latest: not recorded, not streamed.
    pub stale: u64,
    /// Snapshot frames queued to sessions (on subscribe, after each filter change, and to
    /// catch up a session that fell behind).
    pub snapshot_frames: u64,
    /// New tracks refused because the service held its maximum.
    pub tracks_refused: u64,
    /// Tracks removed because they stopped reporting.
    pub tracks_expired: u64,
    /// Delete messages queued to sessions (one per session per expiry round).
    pub delete_frames: u64,
    /// Data frames (live and snapshot) queued to sessions that negotiated compression: their
    /// bytes as they would have been plain, and as sent (a frame sent to two sessions counts
    /// twice).
    pub deflate_plain_bytes: u64,
    /// See `deflate_plain_bytes`.
    pub deflate_wire_bytes: u64,
}

/// The sessions of one service, grouped by subscription.
pub struct Fanout {
    schema: Schema,
    slow_consumer_after: Duration,
    encoders: HashMap<View, FeatureEncoder>,
    groups: HashMap<GroupKey, Group>,
    members: HashMap<SessionId, GroupKey>,
    stats: FanoutStats,
    /// Compressed bytes sent, counted by the broker and by snapshot readers.
    deflate_bytes: Arc<crate::broker::subscription::DeflateBytes>,
    selection: Vec<u32>,
    envelope_index: EnvelopeIndex,
    latest: LatestState,
    /// Each group's snapshot of the state as it is now, shared by the sessions that join the
    /// group before the next change (dropped by it; the snapshot lives on in the queues that
    /// still send it). Snapshots resend every observation under fresh object ids: the ArcGIS
    /// SDK keys its store by object id, and a server-mode layer first reads the latest state
    /// from the feature layer (`/query`, stored ids); the same id arriving again over the
    /// socket makes SDK 5.1 drop the feature (docs/protocol.md §8).
    snapshots: HashMap<GroupKey, Arc<Snapshot>>,
    /// Sessions whose queue dropped data: each gets a snapshot once it has room.
    behind: HashSet<SessionId>,
    max_tracks: usize,
}

impl Fanout {
    /// An empty fan-out for a service's schema, holding at most `max_tracks` tracks.
    pub fn new(schema: Schema, slow_consumer_after: Duration, max_tracks: usize) -> Fanout {
        Fanout {
            behind: HashSet::new(),
            max_tracks,
            slow_consumer_after,
            encoders: HashMap::new(),
            groups: HashMap::new(),
            members: HashMap::new(),
            stats: FanoutStats::default(),
            deflate_bytes: Arc::default(),
            selection: Vec::new(),
            envelope_index: EnvelopeIndex::default(),
            latest: LatestState::new(&schema),
            snapshots: HashMap::new(),
            schema,
        }
    }

    /// Number of sessions.
    pub fn session_count(&self) -> usize {
        self.members.len()
    }

    /// Number of distinct subscriptions.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> FanoutStats {
        let (deflate_plain_bytes, deflate_wire_bytes) = self.deflate_bytes.totals();
        FanoutStats {
            deflate_plain_bytes,
            deflate_wire_bytes,
            ..self.stats
        }
    }

    /// Tracks in the latest state.
    pub fn tracks(&self) -> usize {
        self.latest.len()
    }

    /// Adds a session (or moves it, if already present) and queues its snapshot: the latest
    /// observation of every track its subscription selects, before any live frame.
    pub fn subscribe(&mut self, subscriber: Subscriber, subscription: Subscription) {
        let id = subscriber.id;
        self.remove(id);
        let key = subscription.key.clone();
        let queue = subscriber.queue.clone();
        if subscription.envelope.is_some() && !self.groups.contains_key(&key) {
            self.envelope_index.mark_dirty();
        }
        self.members.insert(subscriber.id, key.clone());
        self.encoders
            .entry(subscription.view.clone())
            .or_insert_with(|| FeatureEncoder::new(&self.schema, &subscription.view));
        self.groups
            .entry(key.clone())
            .or_insert_with(|| Group {
                subscription,
                members: Vec::new(),
                envelope_slot: None,
            })
            .members
            .push(subscriber);
        if let Some(snapshot) = self.snapshot(&key)
            && queue.push_snapshot(snapshot.cursor()) == Push::Queued
        {
            self.stats.snapshot_frames += 1;
        }
    }

    /// Counts observations found stale before they reached the latest state (in the inbox).
    pub fn count_stale(&mut self, stale: u64) {
        self.stats.stale += stale;
    }

    /// The service's schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The latest state (for saving it).
    pub fn latest(&self) -> &LatestState {
        &self.latest
    }

    /// The latest state, to restore a saved one before any session subscribes.
    pub fn latest_mut(&mut self) -> &mut LatestState {
        &mut self.latest
    }

    /// Sends each session that fell behind its snapshot once its queue has room for it; ends
    /// those behind for longer than the slow-consumer limit.
    pub fn catch_up(&mut self) -> Vec<(Subscriber, CloseCause)> {
        let mut ended = Vec::new();
        let ids: Vec<SessionId> = self.behind.iter().copied().collect();
        for id in ids {
            let Some(key) = self.members.get(&id).cloned() else {
                self.behind.remove(&id);
                continue;
            };
            let Some(queue) = self.groups[&key]
                .members
                .iter()
                .find(|member| member.id == id)
                .map(|member| member.queue.clone())
            else {
                continue;
            };
            // Build the snapshot only for a queue that drained enough to take one (a client
            // that never reads costs nothing here).
            let push = if queue.is_closed() {
                Push::Closed
            } else if !queue.has_room() || queue.has_snapshot() {
                // A snapshot still being sent is finished first (replacing it would start
                // over from its first piece); what was dropped meanwhile, the next one covers.
                Push::Conflated
            } else {
                match self.snapshot(&key) {
                    Some(snapshot) => queue.push_snapshot(snapshot.cursor()),
                    // Nothing to send: caught up once the queue has drained.
                    None if queue.queued_bytes() == 0 => {
                        queue.clear();
                        Push::Queued
                    }
                    None => Push::Conflated,
                }
            };
            match push {
                Push::Queued => {
                    self.stats.snapshot_frames += 1;
                    self.behind.remove(&id);
                }
                Push::Conflated => {
                    if queue.behind_for(self.slow_consumer_after)
                        && let Some(subscriber) = self.remove(id)
                    {
                        ended.push((subscriber, CloseCause::SlowConsumer));
                    }
                }
                Push::Closed | Push::Full => {
                    if let Some(subscriber) = self.remove(id) {
                        ended.push((subscriber, CloseCause::Normal));
                    }
                }
            }
        }
        ended
    }

    /// Removes the tracks last received before `cutoff_ms` from the latest state and queues
    /// `{"type":"delete","trackIds":[..]}` to every session whose filter selected them (one
    /// message per group, shared). Returns the sessions to end (their queue is gone or full)
    /// and the tracks removed.
    pub fn expire(&mut self, cutoff_ms: i64) -> (Ended, Vec<Arc<Feature>>) {
        let expired = self.latest.expire(cutoff_ms);
        self.stats.tracks_expired += expired.len() as u64;
        (self.send_deletes(&expired), expired)
    }

    /// Removes one track now (an operator's delete) and queues its delete message to every
    /// session that selected it; `None` when no such track is live.
    pub fn remove_track(&mut self, key: &crate::latest::TrackKey) -> Option<(Ended, Arc<Feature>)> {
        let removed = self.latest.remove(key)?;
        Some((self.send_deletes(std::slice::from_ref(&removed)), removed))
    }

    /// Queues `{"type":"delete","trackIds":[..]}` for tracks that left the state to every
    /// group that selected them (one message per group, shared).
    fn send_deletes(
        &mut self,
        expired: &[Arc<crate::feature::Feature>],
    ) -> Vec<(Subscriber, CloseCause)> {
        if expired.is_empty() {
            return Vec::new();
        }
        self.snapshots.clear();
        let track_field = self.schema.track_id_field();
        let mut gone = Vec::new();
        for group in self.groups.values() {
            let subscription = &group.subscription;
            let track_ids: Vec<&crate::feature::FieldValue> = expired
                .iter()
                .filter(|feature| subscription.is_unfiltered() || subscription.matches(feature))
                .map(|feature| &feature.attributes[track_field])
                .collect();
            if track_ids.is_empty() {
                continue;
            }
            let message = crate::protocol::feature_result::delete_message(&track_ids);
            let frame = if subscription.mode.is_sse() {
                crate::protocol::sse::event("delete", &message)
            } else {
                let frame = crate::protocol::ws_frame::text_frame(&message);
                subscription.mode.deflate().apply(frame)
            };
            for member in &group.members {
                match member.queue.push_control(frame.clone()) {
                    Push::Queued | Push::Conflated => self.stats.delete_frames += 1,
                    Push::Full => gone.push((member.id, CloseCause::SlowConsumer)),
                    Push::Closed => gone.push((member.id, CloseCause::Normal)),
                }
            }
        }
        gone.into_iter()
            .filter_map(|(id, cause)| Some((self.remove(id)?, cause)))
            .collect()
    }

    /// The snapshot of a group, named once per change of the state however many sessions
    /// join it (`None`: the state is empty). Naming it costs nothing: the sessions' writers
    /// build it as their queues drain (`broker::snapshot`).
    fn snapshot(&mut self, key: &GroupKey) -> Option<Arc<Snapshot>> {
        if let Some(snapshot) = self.snapshots.get(key) {
            return Some(snapshot.clone());
        }
        let subscription = &self.groups.get(key)?.subscription;
        if self.latest.is_empty() {
            return None;
        }
        let snapshot = Arc::new(Snapshot::new(
            self.latest.cell(),
            self.latest.reserve_resend_ids(),
            self.schema.object_id_field(),
            subscription.clone(),
            self.encoders[&subscription.view].clone(),
            self.deflate_bytes.clone(),
        ));
        self.snapshots.insert(key.clone(), snapshot.clone());
        Some(snapshot)
    }

    /// Switches a session to a new subscription and queues its filter reply first, so that
    /// every later frame of this session follows the new filter (docs/protocol.md §3.3).
    /// Returns the session when the reply did not fit its queue: the broker ends it.
    pub fn update(
        &mut self,
        id: SessionId,
        subscription: Subscription,
        reply: Bytes,
    ) -> Option<Subscriber> {
        let subscriber = self.remove(id)?;
        match subscriber.queue.push_control(reply) {
            Push::Closed => None,
            Push::Full => Some(subscriber),
            Push::Queued | Push::Conflated => {
                self.subscribe(subscriber, subscription);
                None
            }
        }
    }

    /// Removes a session; returns its handle if it was present.
    pub fn remove(&mut self, id: SessionId) -> Option<Subscriber> {
        let key = self.members.remove(&id)?;
        self.behind.remove(&id);
        let group = self.groups.get_mut(&key)?;
        let position = group.members.iter().position(|member| member.id == id)?;
        let subscriber = group.members.swap_remove(position);
        if group.members.is_empty() {
            if group.subscription.envelope.is_some() {
                self.envelope_index.mark_dirty();
            }
            let view = group.subscription.view.clone();
            self.groups.remove(&key);
            if !self
                .groups
                .values()
                .any(|group| group.subscription.view == view)
            {
                self.encoders.remove(&view);
            }
        }
        Some(subscriber)
    }

    /// Removes every session, for shutdown.
    pub fn drain(&mut self) -> Vec<Subscriber> {
        self.members.clear();
        self.behind.clear();
        self.encoders.clear();
        self.groups
            .drain()
            .flat_map(|(_, group)| group.members)
            .collect()
    }

    /// Records one batch received at `received_ms` in the latest state (which numbers its
    /// observations) and fans out what it recorded; returns the sessions that must end (slow
    /// consumers) and what recording did (stale and refused observations).
    pub fn publish(
        &mut self,
        batch: &mut Batch,
        received: crate::latest::Received<'_>,
    ) -> (Vec<(Subscriber, CloseCause)>, Recorded) {
        let recorded = self.latest.record(batch, received, self.max_tracks);
        self.snapshots.clear();
        if let crate::latest::Received::Here(_) = received {
            // Read again after a reconnect, a replicated duplicate is not a stale observation.
            self.stats.stale += recorded.stale.len() as u64;
        }
        self.stats.tracks_refused += recorded.refused.len() as u64;
        if recorded.is_clean() {
            return (self.fan_out(batch), recorded);
        }
        let fresh = Batch {
            features: batch
                .features
                .iter()
                .enumerate()
                .filter(|(index, _)| {
                    recorded.stale.binary_search(index).is_err()
                        && recorded.refused.binary_search(index).is_err()
                })
                .map(|(_, feature)| feature.clone())
                .collect(),
            observed_ms: batch.observed_ms,
        };
        (self.fan_out(&fresh), recorded)
    }

    fn fan_out(&mut self, batch: &Batch) -> Vec<(Subscriber, CloseCause)> {
        self.stats.batches += 1;
        self.stats.features_in += batch.features.len() as u64;
        let mut encoded: HashMap<&View, EncodedBatch> = HashMap::with_capacity(self.encoders.len());
        let mut frames: HashMap<u64, Vec<CachedFrame<'_>>> = HashMap::new();
        let mut ended = Vec::new();
        let mut ended_ids = Vec::new();
        let mut gone_ids = Vec::new();
        if self.envelope_index.is_dirty() {
            let mut envelopes = Vec::new();
            for group in self.groups.values_mut() {
                group.envelope_slot = group.subscription.envelope.map(|(envelope, _)| {
                    envelopes.push((envelopes.len(), envelope));
                    envelopes.len() - 1
                });
            }
            self.envelope_index.rebuild(envelopes.into_iter());
        }
        self.envelope_index.collect(&batch.features);
        for group in self.groups.values() {
            let subscription = &group.subscription;
            let encoded = encoded.entry(&subscription.view).or_insert_with(|| {
                let encoder = &self.encoders[&subscription.view];
                encoder.encode_batch(&batch.features)
            });
            let selection = if subscription.is_unfiltered() {
                Selection::All
            } else {
                self.selection.clear();
                match group.envelope_slot {
                    // Only the index's candidates can pass; check the exact relation and the
                    // where clause on those.
                    Some(slot) => self.selection.extend(
                        self.envelope_index
                            .hits(slot)
                            .iter()
                            .copied()
                            .filter(|index| subscription.matches(&batch.features[*index as usize])),
                    ),
                    None => self.selection.extend(
                        batch
                            .features
                            .iter()
                            .enumerate()
                            .filter(|(_, feature)| subscription.matches(feature))
                            .map(|(index, _)| index as u32),
                    ),
                }
                Selection::Only(&self.selection)
            };
            let selected = match selection {
                Selection::All => batch.features.len(),
                Selection::Only(indexes) => indexes.len(),
            };
            if selected == 0 {
                continue;
            }
            // Groups with different filters often select the same features (`speed > 61` and
            // `speed > 62` over one batch): frame each distinct selection once per view and mode.
            let frame_key = selection_hash(&subscription.view, subscription.mode, selection);
            let candidates = frames.entry(frame_key).or_default();
            let cached = candidates.iter().find(|cached| {
                cached.view == &subscription.view
                    && cached.mode == subscription.mode
                    && cached.selection.matches(selection)
            });
            let (frame, plain_len) = match cached {
                Some(cached) => (cached.frame.clone(), cached.plain_len),
                None => {
                    // A compressed frame starts as the plain one: compressed once, here.
                    let plain = frame_for(encoded, subscription.mode, selection);
                    let plain_len = plain.len();
                    let frame = subscription.mode.deflate().apply(plain);
                    candidates.push(CachedFrame {
                        view: &subscription.view,
                        mode: subscription.mode,
                        selection: OwnedSelection::from(selection),
                        frame: frame.clone(),
                        plain_len,
                    });
                    (frame, plain_len)
                }
            };
            let deflated = subscription.mode.deflate() != Deflate::Off;
            for member in &group.members {
                match member.queue.push_data(frame.clone()) {
                    Push::Queued => {
                        self.stats.features_out += selected as u64;
                        if deflated {
                            self.deflate_bytes.add(plain_len, frame.len());
                        }
                    }
                    Push::Conflated => {
                        self.stats.frames_conflated += 1;
                        self.behind.insert(member.id);
                        if member.queue.behind_for(self.slow_consumer_after) {
                            ended_ids.push(member.id);
                        }
                    }
                    Push::Closed | Push::Full => gone_ids.push(member.id),
                }
            }
        }
        for id in ended_ids {
            if let Some(subscriber) = self.remove(id) {
                ended.push((subscriber, CloseCause::SlowConsumer));
            }
        }
        // The connection is gone (its queue closed): unregister, and tell the session.
        for id in gone_ids {
            if let Some(subscriber) = self.remove(id) {
                ended.push((subscriber, CloseCause::Normal));
            }
        }
        ended
    }
}

/// A frame built in this batch, reusable by any group with the same view, mode and selection.
struct CachedFrame<'a> {
    view: &'a View,
    mode: WireMode,
    selection: OwnedSelection,
    frame: Bytes,
    /// The frame's length before compression.
    plain_len: usize,
}

enum OwnedSelection {
    All,
    Only(Vec<u32>),
}

impl OwnedSelection {
    fn from(selection: Selection<'_>) -> OwnedSelection {
        match selection {
            Selection::All => OwnedSelection::All,
            Selection::Only(indexes) => OwnedSelection::Only(indexes.to_vec()),
        }
    }

    fn matches(&self, selection: Selection<'_>) -> bool {
        match (self, selection) {
            (OwnedSelection::All, Selection::All) => true,
            (OwnedSelection::Only(mine), Selection::Only(theirs)) => mine.as_slice() == theirs,
            _ => false,
        }
    }
}

fn selection_hash(view: &View, mode: WireMode, selection: Selection<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    view.hash(&mut hasher);
    mode.hash(&mut hasher);
    match selection {
        Selection::All => u32::MAX.hash(&mut hasher),
        Selection::Only(indexes) => indexes.hash(&mut hasher),
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use actix::{Actor, Context, Handler};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::broker::SessionEnded;
    use crate::broker::queue::OutboundQueue;
    use crate::feature::{FieldValue, GeometryType};
    use crate::filter::{FilterLimits, FilterState, FilterUpdate, Patch};
    use crate::geometry::{EnvelopeInput, Wkid};
    use crate::service::vehicles_schema;
    use crate::simulator::Fleet;

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Sink>;
    }
    impl Handler<SessionEnded> for Sink {
        type Result = ();
        fn handle(&mut self, _: SessionEnded, _: &mut Context<Sink>) {}
    }

    /// Object ids in a queued custom-mode frame (header skipped).
    fn object_ids(frame: &Bytes) -> BTreeSet<i64> {
        crate::broker::snapshot::tests::features_of(frame)
            .iter()
            .map(|f| f["attributes"]["OBJECTID"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn the_envelope_index_selects_exactly_what_brute_force_matching_selects() {
        let system = actix::System::new();
        system.block_on(async {
            let sink = Sink.start();
            let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
            let mut fleet = Fleet::new(schema.clone(), 300, 9, 4);
            let mut batch = fleet.step(1.0, 1_795_420_842_492);
            let mut fanout = Fanout::new(schema.clone(), Duration::from_secs(60), usize::MAX);
            let mut rng = StdRng::seed_from_u64(3);
            let mut sessions = Vec::new();
            for session in 0..400u64 {
                let mut state = FilterState::default();
                let (x, y) = (
                    rng.random_range(-117.30..-117.10),
                    rng.random_range(34.03..34.11),
                );
                let (width, height) = (rng.random_range(0.0..0.08), rng.random_range(0.0..0.04));
                let geometry = Patch::Set(EnvelopeInput {
                    corners: [x, y, x + width, y + height],
                    wkid: None,
                });
                let where_clause = if session % 3 == 0 {
                    Patch::Set(format!("speed > {}", session % 90))
                } else {
                    Patch::Keep
                };
                let update = FilterUpdate::Parts {
                    where_clause,
                    geometry,
                    spatial_rel: Patch::Keep,
                    out_fields: Patch::Keep,
                };
                state
                    .apply(update, &schema, Wkid::Wgs84, FilterLimits::default())
                    .expect("valid");
                let subscription =
                    Subscription::new(WireMode::Custom(Deflate::Off), Wkid::Wgs84, &state, &schema);
                let queue = OutboundQueue::new(1 << 30);
                let subscriber = Subscriber {
                    id: SessionId(session),
                    queue: queue.clone(),
                    control: sink.clone().recipient(),
                };
                fanout.subscribe(subscriber, subscription.clone());
                sessions.push((subscription, queue));
            }
            assert!(
                fanout
                    .publish(&mut batch, crate::latest::Received::Here(0))
                    .0
                    .is_empty()
            );
            let mut non_empty = 0;
            for (subscription, queue) in &sessions {
                let expected: BTreeSet<i64> = batch
                    .features
                    .iter()
                    .filter(|feature| subscription.matches(feature))
                    .map(|feature| match feature.attributes[0] {
                        FieldValue::Integer(id) => id,
                        _ => unreachable!("object ids are integers"),
                    })
                    .collect();
                let received = match queue.queued_bytes() {
                    0 => BTreeSet::new(),
                    _ => {
                        let frame = queue_front(queue);
                        object_ids(&frame)
                    }
                };
                assert_eq!(received, expected);
                non_empty += usize::from(!expected.is_empty());
            }
            assert!(
                non_empty > 50,
                "only {non_empty} sessions received anything"
            );
        });
    }

    /// Sessions joining one group after a batch get its snapshot, built once: the same bytes.
    #[test]
    fn the_snapshot_of_a_group_is_built_once_and_shared() {
        let system = actix::System::new();
        system.block_on(async {
            let sink = Sink.start();
            let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
            let mut fleet = Fleet::new(schema.clone(), 20, 9, 4);
            let mut fanout = Fanout::new(schema.clone(), Duration::from_secs(60), usize::MAX);
            assert!(
                fanout
                    .publish(
                        &mut fleet.step(1.0, 1_000),
                        crate::latest::Received::Here(1_000)
                    )
                    .0
                    .is_empty()
            );
            let subscription = Subscription::new(
                WireMode::Custom(Deflate::Off),
                Wkid::Wgs84,
                &FilterState::default(),
                &schema,
            );
            let queues: Vec<_> = (0..3u64)
                .map(|session| {
                    let queue = OutboundQueue::new(1 << 20);
                    fanout.subscribe(
                        Subscriber {
                            id: SessionId(session),
                            queue: queue.clone(),
                            control: sink.clone().recipient(),
                        },
                        subscription.clone(),
                    );
                    queue
                })
                .collect();
            let frames: Vec<Bytes> = queues.iter().map(|queue| queue_front(queue)).collect();
            assert_eq!(object_ids(&frames[0]).len(), 20, "every track");
            assert!(
                frames
                    .iter()
                    .all(|frame| frame.as_ptr() == frames[0].as_ptr()),
                "one frame shared"
            );
            assert_eq!(fanout.stats().snapshot_frames, 3);
        });
    }

    /// The one frame a queue holds after one batch.
    fn queue_front(queue: &OutboundQueue) -> Bytes {
        queue.take_front_for_tests().expect("a frame")
    }
}
