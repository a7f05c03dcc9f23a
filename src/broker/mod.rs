//! `BrokerActor`: one per service. Owns the sessions registry and the fan-out; for each batch
//! it does the batch-level work once and hands each session ready bytes. It never awaits a
//! session: a full queue is a slow consumer, a closed queue means unregister.

mod envelope_index;
mod fanout;
pub mod messages;

use std::time::Duration;

use actix::{Actor, Context, Handler, MessageResult};

pub use fanout::{Fanout, FanoutStats};
pub use messages::{
    CloseAll, FeatureBatch, SessionEnded, SessionId, Subscribe, Subscriber, Unsubscribe,
    UpdateSubscription,
};

use crate::feature::Schema;
use crate::protocol::close::CloseCause;

/// The broker of one service.
pub struct BrokerActor {
    fanout: Fanout,
}

impl BrokerActor {
    /// A broker for a service's schema.
    pub fn new(schema: Schema, slow_consumer_after: Duration) -> BrokerActor {
        BrokerActor {
            fanout: Fanout::new(schema, slow_consumer_after),
        }
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

impl Handler<FeatureBatch> for BrokerActor {
    type Result = ();

    fn handle(&mut self, message: FeatureBatch, _: &mut Context<BrokerActor>) {
        for (subscriber, cause) in self.fanout.publish(&message.batch) {
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
    /// Counters since start.
    pub fanout: FanoutStats,
}

impl Handler<GetStats> for BrokerActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<BrokerActor>) -> MessageResult<GetStats> {
        MessageResult(BrokerStats {
            sessions: self.fanout.session_count(),
            groups: self.fanout.group_count(),
            fanout: self.fanout.stats(),
        })
    }
}
