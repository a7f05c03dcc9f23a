//! `BrokerActor`: one per service. Owns the sessions registry and the fan-out; for each batch
//! it does the batch-level work once and hands each session ready bytes. It never awaits a
//! session: a full queue is a slow consumer, a closed queue means unregister.

pub mod archive;
mod envelope_index;
mod fanout;
mod inbox;
pub mod messages;
pub mod queue;
pub mod snapshot;
pub mod subscription;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message, MessageResult};
use tokio::sync::oneshot;

pub use fanout::{Fanout, FanoutStats};
pub use inbox::BatchInbox;
pub use messages::{
    CloseAll, SessionEnded, SessionId, Subscribe, Subscriber, Unsubscribe, UpdateSubscription,
};

use crate::feature::Schema;
use crate::filter::WhereLedger;
use crate::protocol::close::CloseCause;
use crate::service::Service;
use crate::source::{Batch, Receipt};

/// A running service: its definition and its broker.
pub struct ServiceRuntime {
    /// The definition.
    pub service: Service,
    /// Its broker.
    pub broker: Addr<BrokerActor>,
    /// Where its sources publish.
    pub sink: BatchSink,
    /// What ingest accepted and refused.
    pub ingest: IngestCounters,
    /// What its distinct where clauses cost per feature, against its budget.
    pub where_ledger: Arc<WhereLedger>,
    /// Where its simulator may publish (`None`: not simulated).
    pub simulator_lease: Option<Arc<crate::source::Lease>>,
    /// Its latest state as the feature layer queries it (off the broker's thread).
    pub archive: Arc<archive::Archive>,
    /// How making its latest state durable fares (`None`: memory only).
    pub store: Option<Arc<crate::latest::StoreHealth>>,
    /// How its outside feed fares (`None`: it has none).
    pub feed: Option<Arc<crate::source::FeedHealth>>,
}

/// How a broker treats what its sources publish.
#[derive(Clone, Copy, Debug)]
pub struct BrokerSettings {
    /// Time a session may stay behind before it is closed (1008).
    pub slow_consumer_after: Duration,
    /// Shortest time between two fan-outs: what arrives in between is coalesced into one
    /// batch (newest per track), so that many small publishes cost one fan-out.
    pub coalesce: Duration,
    /// A track that has not reported for this long is removed (`None`: kept forever).
    pub max_feature_age: Option<Duration>,
    /// Most tracks the service holds; a new track past it is refused.
    pub max_tracks: usize,
    /// Where the ids of resent copies start, when not at [`crate::latest::RESEND_IDS`] (a node
    /// of a cluster takes a range of its own: a client may reconnect to another node).
    pub first_resend_id: Option<i64>,
}

impl Default for BrokerSettings {
    fn default() -> BrokerSettings {
        BrokerSettings {
            slow_consumer_after: Duration::from_secs(10),
            coalesce: Duration::ZERO,
            max_feature_age: None,
            max_tracks: usize::MAX,
            first_resend_id: None,
        }
    }
}

/// Where a broker keeps its latest state durable (`latest::store`).
#[derive(Clone, Debug)]
pub struct StateStore {
    /// The service's files.
    pub layout: crate::latest::Layout,
    /// Bytes the journal grows to before it is compacted.
    pub max_journal_bytes: u64,
}

/// What a broker was started with.
pub struct Started {
    /// Its address.
    pub broker: Addr<BrokerActor>,
    /// Where its sources publish.
    pub sink: BatchSink,
    /// Its latest state as the feature layer queries it.
    pub archive: Arc<archive::Archive>,
    /// How its journal fares (`None`: memory only).
    pub store: Option<Arc<crate::latest::StoreHealth>>,
}

/// How often sessions that fell behind are offered their snapshot.
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(100);

/// The service's broker has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the service's broker has stopped")]
pub struct BrokerGone;

impl ServiceRuntime {
    /// Why what is accepted now could not be made durable, while so: ingest is refused.
    pub fn durability_fault(&self) -> Option<crate::latest::Fault> {
        self.store.as_ref()?.fault()
    }

    /// Counts what a parsed document refused and publishes what it accepted (the features go
    /// to the broker, their indexes stay); resolves to the broker's receipt, `None` when
    /// nothing was valid.
    pub fn publish(
        &self,
        ingested: &mut crate::ingest::Ingested,
        received_ms: i64,
    ) -> Option<oneshot::Receiver<Receipt>> {
        for rejection in &ingested.rejected {
            self.ingest.reject(&rejection.reason);
        }
        if ingested.features.is_empty() {
            return None;
        }
        let features = std::mem::take(&mut ingested.features);
        Some(self.sink.publish_confirmed(Batch {
            features,
            observed_ms: received_ms,
        }))
    }

    /// Takes one message from a source (a NATS subject, an MQTT topic, a feed): parses it as
    /// `parse` says, publishes what is valid and waits until it is recorded. Its report, and
    /// why it was refused whole (counted in the ingest metrics).
    pub async fn take_message(
        &self,
        parse: impl FnOnce(
            &crate::feature::Schema,
            i64,
        ) -> Result<crate::ingest::Ingested, crate::ingest::IngestError>,
    ) -> (crate::ingest::Report, Option<crate::ingest::IngestError>) {
        let mut report = crate::ingest::Report::default();
        let received_ms = now_ms();
        let mut ingested = match parse(&self.service.schema, received_ms) {
            Ok(ingested) => ingested,
            Err(err) => {
                self.ingest
                    .refused_requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return (report, Some(err));
            }
        };
        let receipt = self.publish(&mut ingested, received_ms);
        // A broker gone (shutting down) leaves the report as it stands: nothing recorded.
        let _ = self
            .settle(&mut report, ingested, receipt, usize::MAX)
            .await;
        (report, None)
    }

    /// Adds a published document's outcome to `report` once the broker has recorded it.
    pub async fn settle(
        &self,
        report: &mut crate::ingest::Report,
        ingested: crate::ingest::Ingested,
        receipt: Option<oneshot::Receiver<Receipt>>,
        max_tracks: usize,
    ) -> Result<(), BrokerGone> {
        let receipt = match receipt {
            Some(receipt) => receipt.await.map_err(|_| BrokerGone)?,
            None => Receipt::default(),
        };
        for _ in &receipt.refused {
            self.ingest
                .reject(&crate::ingest::Reason::TooManyTracks(max_tracks));
        }
        for _ in &receipt.unstored {
            self.ingest.reject(&crate::ingest::Reason::Unstored);
        }
        let accepted = ingested.indexes.len()
            - receipt.stale.len()
            - receipt.refused.len()
            - receipt.unstored.len();
        self.ingest
            .accepted
            .fetch_add(accepted as u64, std::sync::atomic::Ordering::Relaxed);
        report.add(ingested, &receipt, max_tracks);
        Ok(())
    }
}

/// Observations ingested into a service (HTTP, WebSocket broadcast), for `/api/stats` and
/// `/metrics`.
#[derive(Default)]
pub struct IngestCounters {
    /// Observations accepted (valid; stale ones included, counted by the broker as stale).
    pub accepted: std::sync::atomic::AtomicU64,
    /// Observations refused, by [`crate::ingest::Reason::CODES`] position.
    pub rejected: [std::sync::atomic::AtomicU64; crate::ingest::Reason::CODES.len()],
    /// Requests or messages refused whole (not JSON, too many features, too large).
    pub refused_requests: std::sync::atomic::AtomicU64,
}

impl IngestCounters {
    /// Counts a refused observation.
    pub fn reject(&self, reason: &crate::ingest::Reason) {
        let code = reason.code();
        if let Some(slot) = crate::ingest::Reason::CODES.iter().position(|c| *c == code) {
            self.rejected[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Refused observations by reason code.
    pub fn rejected_by_reason(&self) -> Vec<(&'static str, u64)> {
        crate::ingest::Reason::CODES
            .iter()
            .zip(&self.rejected)
            .map(|(code, count)| (*code, count.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }
}

/// The broker of one service.
pub struct BrokerActor {
    fanout: Fanout,
    inbox: Arc<BatchInbox>,
    settings: BrokerSettings,
    /// Where what is recorded is made durable before it is acknowledged (`None`: memory only).
    journal: Option<crate::latest::Journal>,
    /// A fan-out waits for object ids to be reserved.
    waiting_for_ids: bool,
    /// When the last fan-out started.
    last_fan_out: Option<Instant>,
    /// A fan-out is scheduled for the end of the coalescing interval.
    fan_out_scheduled: bool,
    /// Batches merged into a later one because they arrived while the broker was busy.
    batches_merged: u64,
    /// From the newest observation's time to the start of its fan-out, last batch.
    lag_ms: u64,
    /// In a cluster: the backbone's log position the state is at (`Replicated`).
    replicated_through: u64,
}

/// Where sources hand a service's batches (see [`BatchInbox`]): to its broker on a node alone,
/// to the backbone's publisher in a cluster (`cluster`), which stores them for every node.
#[derive(Clone)]
pub struct BatchSink {
    inbox: Arc<BatchInbox>,
    taker: Taker,
}

/// Who takes a sink's batches, and how it is told.
#[derive(Clone)]
enum Taker {
    Broker(Addr<BrokerActor>),
    Backbone {
        ready: Arc<tokio::sync::Notify>,
        deletes: tokio::sync::mpsc::UnboundedSender<TrackDelete>,
    },
}

/// An operator's delete of a track, for the backbone to append to the log. The answer is
/// whether the track was live where the log applied it; dropped unanswered, the log did not
/// take it.
pub struct TrackDelete {
    /// The track.
    pub key: crate::latest::TrackKey,
    /// Where the answer goes.
    pub answer: oneshot::Sender<bool>,
}

/// Why a track could not be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveError {
    /// The service's broker is gone (shutting down).
    Stopped,
    /// In a cluster: the log did not take the delete (NATS unavailable).
    NotStored,
}

impl BatchSink {
    /// A sink whose batches the backbone's publisher takes from `inbox` when rung, and whose
    /// deletes it appends from `deletes`.
    pub fn to_backbone(
        inbox: Arc<BatchInbox>,
        ready: Arc<tokio::sync::Notify>,
        deletes: tokio::sync::mpsc::UnboundedSender<TrackDelete>,
    ) -> BatchSink {
        BatchSink {
            inbox,
            taker: Taker::Backbone { ready, deletes },
        }
    }

    fn wake(&self) {
        match &self.taker {
            Taker::Broker(broker) => broker.do_send(BatchReady),
            Taker::Backbone { ready, .. } => ready.notify_one(),
        }
    }

    /// Removes a track from the latest state now (an operator's delete): from this node's
    /// broker, or in a cluster through the log, so that every node removes it at the same
    /// place in the log's order. Whether the track was live.
    pub async fn remove_track(&self, key: crate::latest::TrackKey) -> Result<bool, RemoveError> {
        match &self.taker {
            Taker::Broker(broker) => broker
                .send(RemoveTrack(key))
                .await
                .map_err(|_| RemoveError::Stopped),
            Taker::Backbone { deletes, .. } => {
                let (answer, answered) = oneshot::channel();
                deletes
                    .send(TrackDelete { key, answer })
                    .map_err(|_| RemoveError::Stopped)?;
                answered.await.map_err(|_| RemoveError::NotStored)
            }
        }
    }

    /// Leaves a batch, merged with any not taken yet.
    pub fn publish(&self, batch: Batch) {
        if self.inbox.push(batch, None) {
            self.wake();
        }
    }

    /// Leaves a batch and returns what becomes of it: the receipt arrives once the broker has
    /// recorded it in the latest state and queued it to every session that selects it (in a
    /// cluster: once the backbone has stored it).
    pub fn publish_confirmed(&self, batch: Batch) -> oneshot::Receiver<Receipt> {
        let (sender, receiver) = oneshot::channel();
        if self.inbox.push(batch, Some(sender)) {
            self.wake();
        }
        receiver
    }
}

/// Tells the broker its inbox has a batch.
#[derive(Message)]
#[rtype(result = "()")]
struct BatchReady;

impl BrokerActor {
    /// Starts a broker for a service's schema on `arbiter`, with its state read from `store`
    /// first; an error when the store's directory cannot be read or written.
    pub fn start(
        arbiter: &ArbiterHandle,
        schema: Schema,
        settings: BrokerSettings,
        store: Option<StateStore>,
    ) -> Result<Started, crate::latest::StoreError> {
        let recovered = store
            .as_ref()
            .map(|store| crate::latest::store::recover(&store.layout, &schema))
            .transpose()?;
        let inbox = Arc::new(BatchInbox::new(
            schema.track_id_field(),
            schema.start_time_field(),
        ));
        let broker_inbox = inbox.clone();
        let object_id_field = schema.object_id_field();
        let track_id_field = schema.track_id_field();
        let mut fanout = Fanout::new(schema, settings.slow_consumer_after, settings.max_tracks);
        if let Some(first) = settings.first_resend_id {
            fanout.latest_mut().resend_from(first);
        }
        let journal = match (store, recovered) {
            (Some(store), Some(mut recovered)) => {
                let tracks = recovered.observations.len();
                let bounds = recovered.bounds;
                fanout.latest_mut().restore(
                    std::mem::take(&mut recovered.observations),
                    bounds.object_ids,
                    bounds.resend_ids,
                );
                let journal = crate::latest::Journal::open(
                    store.layout.clone(),
                    fanout.schema().clone(),
                    fanout.latest().cell(),
                    &recovered,
                    store.max_journal_bytes,
                )?;
                log::info!(
                    "service {}: {tracks} tracks restored from {}",
                    store.layout.service,
                    store.layout.dir.display()
                );
                Some(journal)
            }
            _ => None,
        };
        let health = journal.as_ref().map(crate::latest::Journal::health);
        let archive = Arc::new(archive::Archive::new(
            fanout.latest().cell(),
            object_id_field,
            track_id_field,
        ));
        let broker = BrokerActor::start_in_arbiter(arbiter, move |_| BrokerActor {
            fanout,
            inbox: broker_inbox,
            settings,
            journal,
            waiting_for_ids: false,
            last_fan_out: None,
            fan_out_scheduled: false,
            batches_merged: 0,
            lag_ms: 0,
            replicated_through: 0,
        });
        let sink = BatchSink {
            inbox,
            taker: Taker::Broker(broker.clone()),
        };
        Ok(Started {
            broker,
            sink,
            archive,
            store: health,
        })
    }
}

impl Actor for BrokerActor {
    type Context = Context<BrokerActor>;

    fn started(&mut self, ctx: &mut Context<BrokerActor>) {
        ctx.run_interval(CATCH_UP_INTERVAL, |broker, _| {
            for (subscriber, cause) in broker.fanout.catch_up() {
                end(&subscriber, cause);
            }
            broker.keep_ids_ahead();
        });
        if let Some(max_age) = self.settings.max_feature_age {
            // Checked ten times per maximum age (at most once a second, at least every 100 ms):
            // a track goes at most a tenth of the age late.
            let every = (max_age / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
            ctx.run_interval(every, move |broker, _| {
                let cutoff = now_ms() - max_age.as_millis() as i64;
                let (ended, expired) = broker.fanout.expire(cutoff);
                broker.journal_removed(&expired);
                for (subscriber, cause) in ended {
                    end(&subscriber, cause);
                }
            });
        }
    }
}

/// Epoch milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

impl BrokerActor {
    /// Takes what the inbox holds and fans it out; with a journal, its publishers are
    /// acknowledged once it is durable.
    fn fan_out(&mut self, ctx: &mut Context<BrokerActor>) {
        if let Some(journal) = &mut self.journal {
            // Every object id handed out is durably reserved first: none is reissued after a
            // crash. A reservation is asked long before it is needed; this waits only when
            // the disk cannot take it.
            let latest = self.fanout.latest();
            let wanted = latest.next_object_id() + self.inbox.pending_len() as i64;
            if wanted > journal.bounds().object_ids {
                journal.keep_ahead(crate::latest::Bounds {
                    object_ids: wanted,
                    resend_ids: latest.next_resend_id(),
                });
                if !self.waiting_for_ids {
                    self.waiting_for_ids = true;
                    ctx.run_later(ID_WAIT, |broker, ctx| {
                        broker.waiting_for_ids = false;
                        broker.fan_out(ctx);
                    });
                }
                return;
            }
        }
        let Some(mut taken) = self.inbox.take() else {
            return;
        };
        self.last_fan_out = Some(Instant::now());
        let now_ms = now_ms();
        self.lag_ms = now_ms.saturating_sub(taken.batch.observed_ms).max(0) as u64;
        self.batches_merged += taken.batches - 1;
        self.fanout.count_stale(taken.stale);
        let (ended, recorded) = self
            .fanout
            .publish(&mut taken.batch, crate::latest::Received::Here(now_ms));
        match &self.journal {
            None => taken.acknowledge(&recorded),
            Some(journal) => {
                let mut frames = Vec::new();
                let kept = kept_positions(taken.batch.features.len(), &recorded);
                if !kept.is_empty() {
                    crate::latest::codec::encode_observations(
                        kept.iter()
                            .map(|&index| (&taken.batch.features[index], now_ms)),
                        &mut frames,
                    );
                }
                let done: crate::latest::journal::Done = Box::new(move |outcome| {
                    let mut recorded = recorded;
                    if outcome.is_err() {
                        // Recorded (and streamed) but not durable: not acknowledged.
                        recorded.unstored = kept;
                    }
                    taken.acknowledge(&recorded);
                });
                journal.append(frames, Some(done));
            }
        }
        self.keep_ids_ahead();
        for (subscriber, cause) in ended {
            log::info!(
                "session {} closed by the broker: {}",
                subscriber.id.0,
                cause.reason()
            );
            end(&subscriber, cause);
        }
    }
}

/// How long a fan-out waits before it looks again for reserved object ids.
const ID_WAIT: Duration = Duration::from_millis(20);

/// Positions of a batch that recording kept (neither stale nor refused), in order.
fn kept_positions(len: usize, recorded: &crate::latest::Recorded) -> Vec<usize> {
    (0..len)
        .filter(|index| {
            recorded.stale.binary_search(index).is_err()
                && recorded.refused.binary_search(index).is_err()
        })
        .collect()
}

impl BrokerActor {
    /// Asks the journal for ids above those in use, once half of its reservation is used.
    fn keep_ids_ahead(&mut self) {
        if let Some(journal) = &mut self.journal {
            let latest = self.fanout.latest();
            journal.keep_ahead(crate::latest::Bounds {
                object_ids: latest.next_object_id() + self.inbox.pending_len() as i64,
                resend_ids: latest.next_resend_id(),
            });
        }
    }

    /// Journals tracks that left the state (expired, removed by an operator).
    fn journal_removed(&self, gone: &[Arc<crate::feature::Feature>]) {
        if let (Some(journal), false) = (&self.journal, gone.is_empty()) {
            let track_field = self.fanout.schema().track_id_field();
            let tracks = gone
                .iter()
                .filter_map(|feature| feature.attributes.get(track_field).cloned())
                .collect();
            let mut frames = Vec::new();
            crate::latest::codec::encode(
                &crate::latest::codec::Record::Removed(tracks),
                &mut frames,
            );
            journal.append(frames, None);
        }
    }
}

/// The broker no longer feeds `subscriber`; its session says why in its transport's terms
/// (a close frame, an SSE `close` event) and ends.
fn end(subscriber: &Subscriber, cause: CloseCause) {
    subscriber.control.do_send(SessionEnded { cause });
}

impl Handler<BatchReady> for BrokerActor {
    type Result = ();

    fn handle(&mut self, _: BatchReady, ctx: &mut Context<BrokerActor>) {
        if self.fan_out_scheduled {
            return;
        }
        let since = self
            .last_fan_out
            .map_or(Duration::MAX, |last| last.elapsed());
        if since >= self.settings.coalesce {
            self.fan_out(ctx);
            return;
        }
        // Coalesce: whatever else arrives before the interval ends goes in the same batch.
        self.fan_out_scheduled = true;
        ctx.run_later(self.settings.coalesce - since, |broker, ctx| {
            broker.fan_out_scheduled = false;
            broker.fan_out(ctx);
        });
    }
}

/// Observations read from the backbone's log (`cluster`), in the log's order (a track may
/// appear more than once), numbered and timed by it. Answers what recording them did, by
/// position, so that the node that accepted them can tell their publishers.
#[derive(actix::Message)]
#[rtype(result = "crate::latest::Recorded")]
pub struct Replicated {
    /// The observations.
    pub features: Vec<crate::feature::Feature>,
    /// When the backbone stored each (epoch ms).
    pub received_ms: Vec<i64>,
    /// The log position the state is at once these are recorded.
    pub through: u64,
}

impl Handler<Replicated> for BrokerActor {
    type Result = MessageResult<Replicated>;

    fn handle(&mut self, message: Replicated, _: &mut Context<BrokerActor>) -> Self::Result {
        let Replicated {
            features,
            received_ms,
            through,
        } = message;
        self.replicated_through = self.replicated_through.max(through);
        let now_ms = now_ms();
        // What expired meanwhile (read again after a reconnect, or behind) stays expired:
        // reported stale, as an observation older than its track's latest is.
        let cutoff = self
            .settings
            .max_feature_age
            .map_or(i64::MIN, |max_age| now_ms - max_age.as_millis() as i64);
        let live: Vec<usize> = (0..features.len())
            .filter(|&index| received_ms[index] >= cutoff)
            .collect();
        let expired: Vec<usize> = (0..features.len())
            .filter(|&index| received_ms[index] < cutoff)
            .collect();
        let (features, received_ms): (Vec<_>, Vec<_>) = if expired.is_empty() {
            (features, received_ms)
        } else {
            live.iter()
                .map(|&index| (features[index].clone(), received_ms[index]))
                .unzip()
        };
        let observed_ms = received_ms.iter().copied().max().unwrap_or(now_ms);
        self.lag_ms = now_ms.saturating_sub(observed_ms).max(0) as u64;
        let mut batch = Batch {
            features,
            observed_ms,
        };
        let (ended, mut recorded) = self.fanout.publish(
            &mut batch,
            crate::latest::Received::Replicated(&received_ms),
        );
        for (subscriber, cause) in ended {
            end(&subscriber, cause);
        }
        if !expired.is_empty() {
            // Back to positions in the message.
            for list in [
                &mut recorded.stale,
                &mut recorded.refused,
                &mut recorded.unstored,
            ] {
                for position in list.iter_mut() {
                    *position = live[*position];
                }
            }
            recorded.stale.extend(expired);
            recorded.stale.sort_unstable();
        }
        MessageResult(recorded)
    }
}

/// A copy of the state as of a log position, for a checkpoint (`cluster`).
#[derive(actix::Message)]
#[rtype(result = "(crate::latest::Frozen, u64)")]
pub struct CheckpointCopy;

impl Handler<CheckpointCopy> for BrokerActor {
    type Result = MessageResult<CheckpointCopy>;

    fn handle(&mut self, _: CheckpointCopy, _: &mut Context<BrokerActor>) -> Self::Result {
        MessageResult((self.fanout.latest().frozen(), self.replicated_through))
    }
}

/// Observations found stale before they reached the broker (by the backbone's publisher).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct CountStale(pub u64);

impl Handler<CountStale> for BrokerActor {
    type Result = ();

    fn handle(&mut self, message: CountStale, _: &mut Context<BrokerActor>) {
        self.fanout.count_stale(message.0);
    }
}

impl Handler<Subscribe> for BrokerActor {
    type Result = ();

    fn handle(&mut self, message: Subscribe, _: &mut Context<BrokerActor>) {
        self.fanout
            .subscribe(message.subscriber, message.subscription);
        self.keep_ids_ahead();
    }
}

impl Handler<UpdateSubscription> for BrokerActor {
    type Result = ();

    fn handle(&mut self, message: UpdateSubscription, _: &mut Context<BrokerActor>) {
        if let Some(subscriber) =
            self.fanout
                .update(message.id, message.subscription, message.reply)
        {
            end(&subscriber, CloseCause::SlowConsumer);
        }
        self.keep_ids_ahead();
    }
}

impl Handler<Unsubscribe> for BrokerActor {
    type Result = ();

    fn handle(&mut self, message: Unsubscribe, _: &mut Context<BrokerActor>) {
        self.fanout.remove(message.id);
    }
}

impl Handler<CloseAll> for BrokerActor {
    type Result = ();

    fn handle(&mut self, message: CloseAll, _: &mut Context<BrokerActor>) {
        for subscriber in self.fanout.drain() {
            end(&subscriber, message.cause.clone());
        }
    }
}

/// Compacts the journal into a checkpoint and stops it (shutdown), if the broker has one;
/// answers when written.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct CloseStore;

impl Handler<CloseStore> for BrokerActor {
    type Result = actix::ResponseFuture<()>;

    fn handle(&mut self, _: CloseStore, _: &mut Context<BrokerActor>) -> Self::Result {
        // Kept: what is recorded after this (a publisher during the drain) goes to a writer
        // that has stopped, and is not acknowledged.
        let Some(journal) = &self.journal else {
            return Box::pin(async {});
        };
        let closed = journal.close();
        let tracks = self.fanout.tracks();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || closed.recv()).await {
                Ok(Ok(Ok(()))) => log::info!("the latest state ({tracks} tracks) is checkpointed"),
                Ok(Ok(Err(fault))) => log::error!(
                    "checkpointing the latest state at shutdown failed: {}; what was acknowledged is in the journal",
                    fault.message
                ),
                _ => log::error!("the journal writer stopped before shutdown"),
            }
        })
    }
}

/// Removes one track from the latest state now (an operator's delete: a track frozen by a
/// bad clock, a vehicle taken out of service); answers whether it was live.
#[derive(actix::Message)]
#[rtype(result = "bool")]
pub struct RemoveTrack(pub crate::latest::TrackKey);

impl Handler<RemoveTrack> for BrokerActor {
    type Result = bool;

    fn handle(&mut self, message: RemoveTrack, _: &mut Context<BrokerActor>) -> bool {
        self.remove_track(&message.0)
    }
}

/// A track removed by a cluster's log (an operator's delete taken by any node) at log
/// position `through`; answers whether it was live.
#[derive(actix::Message)]
#[rtype(result = "bool")]
pub struct ReplicatedRemoval {
    /// The track.
    pub key: crate::latest::TrackKey,
    /// The delete's position in the log.
    pub through: u64,
}

impl Handler<ReplicatedRemoval> for BrokerActor {
    type Result = bool;

    fn handle(&mut self, message: ReplicatedRemoval, _: &mut Context<BrokerActor>) -> bool {
        self.replicated_through = self.replicated_through.max(message.through);
        self.remove_track(&message.key)
    }
}

impl BrokerActor {
    /// Removes a track now; whether it was live.
    fn remove_track(&mut self, key: &crate::latest::TrackKey) -> bool {
        match self.fanout.remove_track(key) {
            Some((ended, removed)) => {
                self.journal_removed(&[removed]);
                for (subscriber, cause) in ended {
                    end(&subscriber, cause);
                }
                true
            }
            None => false,
        }
    }
}

/// Asks for the broker's counters and session count.
#[derive(actix::Message)]
#[rtype(result = "BrokerStats")]
pub struct GetStats;

/// The broker's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerStats {
    /// Sessions now.
    pub sessions: usize,
    /// Distinct subscriptions now.
    pub groups: usize,
    /// Tracks in the latest state.
    pub tracks: usize,
    /// Counters since start.
    pub fanout: FanoutStats,
    /// Batches merged into a later one because the broker was busy, since start.
    pub batches_merged: u64,
    /// From the newest observation's time to the start of its fan-out, last batch (ms).
    pub lag_ms: u64,
}

impl Handler<GetStats> for BrokerActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<BrokerActor>) -> MessageResult<GetStats> {
        MessageResult(BrokerStats {
            sessions: self.fanout.session_count(),
            groups: self.fanout.group_count(),
            tracks: self.fanout.tracks(),
            fanout: self.fanout.stats(),
            batches_merged: self.batches_merged,
            lag_ms: self.lag_ms,
        })
    }
}
