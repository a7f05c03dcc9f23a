//! `Fanout`: the broker's plain state and the per-batch work (DESIGN.md "The hot path").
//! Each batch is encoded once per view in use, each group of identical subscriptions
//! evaluates its filter once per feature and builds its frame once, and every member gets a
//! clone of the same `Bytes`. Cost grows with distinct subscriptions, not with sessions.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::messages::{SessionId, Subscriber};
use crate::feature::Schema;
use crate::protocol::close::CloseCause;
use crate::protocol::feature_result::{EncodedBatch, FeatureEncoder, Selection, View};
use crate::protocol::sse;
use crate::session::subscription::{GroupKey, Subscription, WireMode};
use crate::session::transport::Push;
use crate::simulator::Batch;

struct Group {
    subscription: Subscription,
    members: Vec<Subscriber>,
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
    /// Frames refused because a session's queue was full.
    pub frames_dropped: u64,
}

/// The sessions of one service, grouped by subscription.
pub struct Fanout {
    schema: Schema,
    slow_consumer_after: Duration,
    encoders: HashMap<View, FeatureEncoder>,
    groups: HashMap<GroupKey, Group>,
    members: HashMap<SessionId, GroupKey>,
    stats: FanoutStats,
    selection: Vec<u32>,
}

impl Fanout {
    /// An empty fan-out for a service's schema.
    pub fn new(schema: Schema, slow_consumer_after: Duration) -> Fanout {
        Fanout {
            schema,
            slow_consumer_after,
            encoders: HashMap::new(),
            groups: HashMap::new(),
            members: HashMap::new(),
            stats: FanoutStats::default(),
            selection: Vec::new(),
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
        self.stats
    }

    /// Adds a session (or moves it, if already present).
    pub fn subscribe(&mut self, subscriber: Subscriber, subscription: Subscription) {
        self.remove(subscriber.id);
        let key = subscription.key.clone();
        self.members.insert(subscriber.id, key.clone());
        self.encoders
            .entry(subscription.view.clone())
            .or_insert_with(|| FeatureEncoder::new(&self.schema, &subscription.view));
        self.groups
            .entry(key)
            .or_insert_with(|| Group {
                subscription,
                members: Vec::new(),
            })
            .members
            .push(subscriber);
    }

    /// Switches a session to a new subscription and queues its filter reply first, so that
    /// every later frame of this session follows the new filter (PROTOCOL.md §3.3).
    pub fn update(&mut self, id: SessionId, subscription: Subscription, reply: Bytes) {
        let Some(subscriber) = self.remove(id) else {
            return;
        };
        if subscriber.queue.push_control(reply) == Push::Closed {
            return;
        }
        self.subscribe(subscriber, subscription);
    }

    /// Removes a session; returns its handle if it was present.
    pub fn remove(&mut self, id: SessionId) -> Option<Subscriber> {
        let key = self.members.remove(&id)?;
        let group = self.groups.get_mut(&key)?;
        let position = group.members.iter().position(|member| member.id == id)?;
        let subscriber = group.members.swap_remove(position);
        if group.members.is_empty() {
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
        self.encoders.clear();
        self.groups
            .drain()
            .flat_map(|(_, group)| group.members)
            .collect()
    }

    /// Publishes one batch; returns the sessions that must end (slow consumers) and why.
    pub fn publish(&mut self, batch: &Batch) -> Vec<(Subscriber, CloseCause)> {
        self.stats.batches += 1;
        self.stats.features_in += batch.features.len() as u64;
        let mut encoded: HashMap<&View, EncodedBatch> = HashMap::with_capacity(self.encoders.len());
        let mut ended = Vec::new();
        let mut ended_ids = Vec::new();
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
                let matching = batch
                    .features
                    .iter()
                    .enumerate()
                    .filter(|(_, feature)| subscription.matches(feature));
                self.selection
                    .extend(matching.map(|(index, _)| index as u32));
                Selection::Only(&self.selection)
            };
            let selected = match selection {
                Selection::All => batch.features.len(),
                Selection::Only(indexes) => indexes.len(),
            };
            if selected == 0 {
                continue;
            }
            let frame = match subscription.mode {
                WireMode::Custom => encoded.custom_frame(selection),
                WireMode::Server => encoded.server_frames(selection),
                WireMode::Sse => sse::features_event(&encoded.json_array(selection)),
            };
            for member in &group.members {
                match member.queue.push_data(frame.clone()) {
                    Push::Queued => self.stats.features_out += selected as u64,
                    Push::Full => {
                        self.stats.frames_dropped += 1;
                        let behind = member.queue.full_since().map(|since| since.elapsed());
                        if behind.is_some_and(|behind| behind >= self.slow_consumer_after) {
                            ended_ids.push(member.id);
                        }
                    }
                    Push::Closed => ended_ids.push(member.id),
                }
            }
        }
        for id in ended_ids {
            if let Some(subscriber) = self.remove(id) {
                ended.push((subscriber, CloseCause::SlowConsumer));
            }
        }
        ended
    }
}
