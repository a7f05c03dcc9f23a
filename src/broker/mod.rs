//! `BrokerActor`: one per service. Owns the sessions registry and the fan-out; for each batch
//! it does the batch-level work once and hands each session ready bytes. It never awaits a
//! session: a full queue is a slow consumer, a closed queue means unregister.

mod envelope_index;
mod fanout;
mod inbox;
pub mod messages;
pub mod queue;
pub mod subscription;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, Addr, ArbiterHandle, Context, Handler, Message, MessageResult};

pub use fanout::{Fanout, FanoutStats};
pub use inbox::BatchInbox;
pub use messages::{
    CloseAll, SessionEnded, SessionId, Subscribe, Subscriber, Unsubscribe, UpdateSubscription,
};

use crate::feature::Schema;
use crate::filter::WhereLedger;
use crate::protocol::close::CloseCause;
use crate::service::Service;
use crate::source::Batch;

/// A running service: its definition and its broker.
pub struct ServiceRuntime {
    /// The definition.
    pub service: Service,
    /// Its broker.
    pub broker: Addr<BrokerActor>,
    /// What its distinct where clauses cost per feature, against its budget.
    pub where_ledger: Arc<WhereLedger>,
}

/// The broker of one service.
pub struct BrokerActor {
    fanout: Fanout,
    inbox: Arc<BatchInbox>,
    /// Batches merged into a later one because they arrived while the broker was busy.
    batches_merged: u64,
    /// From the newest observation's time to the start of its fan-out, last batch.
    lag_ms: u64,
}

/// Where sources hand a service's broker their batches (see [`BatchInbox`]).
#[derive(Clone)]
pub struct BatchSink {
    inbox: Arc<BatchInbox>,
    broker: Addr<BrokerActor>,
}

impl BatchSink {
    /// Leaves a batch for the broker, merged with any it has not taken yet.
    pub fn publish(&self, batch: Batch) {
        if self.inbox.push(batch) {
            self.broker.do_send(BatchReady);
        }
    }
}

/// Tells the broker its inbox has a batch.
#[derive(Message)]
#[rtype(result = "()")]
struct BatchReady;

impl BrokerActor {
    /// Starts a broker for a service's schema on `arbiter`; returns its address and the sink
    /// its sources publish to.
    pub fn start(
        arbiter: &ArbiterHandle,
        schema: Schema,
        slow_consumer_after: Duration,
    ) -> (Addr<BrokerActor>, BatchSink) {
        let inbox = Arc::new(BatchInbox::new(schema.track_id_field()));
        let broker_inbox = inbox.clone();
        let broker = BrokerActor::start_in_arbiter(arbiter, move |_| BrokerActor {
            fanout: Fanout::new(schema, slow_consumer_after),
            inbox: broker_inbox,
            batches_merged: 0,
            lag_ms: 0,
        });
        let sink = BatchSink {
            inbox,
            broker: broker.clone(),
        };
        (broker, sink)
    }
}

impl Actor for BrokerActor {
    type Context = Context<BrokerActor>;
}

/// The broker no longer feeds `subscriber`; its session says why in its transport's terms
/// (a close frame, an SSE `close` event) and ends.
fn end(subscriber: &Subscriber, cause: CloseCause) {
    subscriber.control.do_send(SessionEnded { cause });
}

impl Handler<BatchReady> for BrokerActor {
    type Result = ();

    fn handle(&mut self, _: BatchReady, _: &mut Context<BrokerActor>) {
        let Some(taken) = self.inbox.take() else {
            return;
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        self.lag_ms = now_ms.saturating_sub(taken.batch.observed_ms).max(0) as u64;
        self.batches_merged += taken.batches - 1;
        for (subscriber, cause) in self.fanout.publish(&taken.batch) {
            log::info!(
                "session {} closed by the broker: {}",
                subscriber.id.0,
                cause.reason()
            );
            end(&subscriber, cause);
        }
    }
}

impl Handler<Subscribe> for BrokerActor {
    type Result = ();

    fn handle(&mut self, message: Subscribe, _: &mut Context<BrokerActor>) {
        self.fanout
            .subscribe(message.subscriber, message.subscription);
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
