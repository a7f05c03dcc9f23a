//! `SimulatorActor`: moves a service's fleet once per tick and hands each batch to the
//! service's broker. The movement itself is the pure `Fleet`.

mod fleet;
mod routes;
mod routes_file;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Actor, AsyncContext, Context};

use crate::broker::BatchSink;
use crate::source::Lease;
pub use fleet::Fleet;
pub use routes_file::{NamedRoutes, load_routes, parse_routes};

/// The routes embedded in the binary, WGS84.
pub fn embedded_routes() -> NamedRoutes {
    routes::ROUTES
        .iter()
        .map(|(name, vertices)| ((*name).to_owned(), vertices.to_vec()))
        .collect()
}

/// Ticks a fleet and publishes each batch while it holds the service's simulator lease (a
/// node alone always does; in a cluster one node at a time, see `source::Lease`). The fleet
/// moves on every node, so that a node taking over continues a moving fleet.
pub struct SimulatorActor {
    fleet: Fleet,
    interval: Duration,
    sink: BatchSink,
    lease: Arc<Lease>,
}

impl SimulatorActor {
    /// A simulator ticking every `interval`.
    pub fn new(
        fleet: Fleet,
        interval: Duration,
        sink: BatchSink,
        lease: Arc<Lease>,
    ) -> SimulatorActor {
        SimulatorActor {
            fleet,
            interval,
            sink,
            lease,
        }
    }

    fn tick(&mut self) {
        let observed_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        let batch = self.fleet.step(self.interval.as_secs_f64(), observed_ms);
        if self.lease.is_held() {
            self.sink.publish(batch);
        }
    }
}

impl Actor for SimulatorActor {
    type Context = Context<SimulatorActor>;

    fn started(&mut self, ctx: &mut Context<SimulatorActor>) {
        self.tick();
        ctx.run_interval(self.interval, |simulator, _| simulator.tick());
    }
}
