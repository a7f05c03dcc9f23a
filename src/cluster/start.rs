//! Connecting to NATS and starting each service's tasks on the backbone's own thread.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Arbiter, ArbiterHandle};
use async_nats::connection::State;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Notify, watch};

use super::Health;
use crate::broker::{BatchInbox, BrokerActor, ServiceRuntime, TrackDelete};
use crate::feature::Schema;
use crate::source::Lease;

/// What the backbone needs of one service.
pub struct ServiceLink {
    /// The service's name.
    pub name: String,
    /// Its schema.
    pub schema: Schema,
    /// Its broker (fed by the replica).
    pub broker: Addr<BrokerActor>,
    /// Where its sources leave batches for the publisher.
    pub outbox: Arc<BatchInbox>,
    /// Rung when the outbox has a batch.
    pub outbox_ready: Arc<Notify>,
    /// Operators' deletes of tracks, for the publisher (which takes the receiver once).
    pub deletes: std::sync::Mutex<Option<UnboundedReceiver<TrackDelete>>>,
    /// Most features per ingest document (a subject's message).
    pub max_features: usize,
    /// Longest wait gathering what was published together into one batch (the coalescing
    /// interval of a node alone).
    pub coalesce: Duration,
    /// How often the node holding the checkpoint lease writes the state as a checkpoint.
    pub checkpoint_every: Duration,
    /// The simulator's lease, when the service is simulated.
    pub lease: Option<Arc<Lease>>,
    /// A subject other systems publish observations to, and the runtime that takes them.
    pub ingest_subject: Option<(crate::service::IngestSubject, Arc<ServiceRuntime>)>,
}

/// A node's place on the backbone.
pub struct Backbone {
    /// Readiness and counters.
    pub health: Arc<Health>,
    arbiter: ArbiterHandle,
}

/// Everything a service's tasks share.
pub(super) struct Shared {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub health: Arc<Health>,
    /// Bumped on every (re)connect and gap: replicas read the whole state again.
    pub epoch: watch::Receiver<u64>,
    pub node: String,
    pub replicas: usize,
}

/// How long a NATS request (a store, a lookup) may take; JetStream pauses writes for about
/// five seconds while a clustered stream elects a new leader.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Backbone {
    /// Connects to `url` in the background (retrying until it answers) and starts every
    /// service's replica, publisher, lease and subject ingest on a thread of their own.
    /// `replicas` is the stream replication (the number of NATS servers that hold each
    /// service's state).
    pub fn start(
        url: &str,
        node: String,
        replicas: usize,
        links: Vec<ServiceLink>,
        control: Arc<super::control::Control>,
    ) -> Backbone {
        let health = Arc::new(Health::new(links.iter().map(|link| link.name.as_str())));
        let arbiter = Arbiter::new().handle();
        let url = url.to_owned();
        let task_health = health.clone();
        arbiter.spawn(async move {
            let (epoch_sender, epoch) = watch::channel(0u64);
            let epoch_sender = Arc::new(epoch_sender);
            let events_health = task_health.clone();
            let last_warning = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
            let options = async_nats::ConnectOptions::new()
                .name(format!("featurestream {node}"))
                .retry_on_initial_connect()
                .max_reconnects(None)
                .request_timeout(Some(REQUEST_TIMEOUT))
                .event_callback(move |event| {
                    let (health, last_warning) = (events_health.clone(), last_warning.clone());
                    async move {
                        match event {
                            async_nats::Event::SlowConsumer(subscription) => {
                                // Only that subscription lost messages: a subject ingest's
                                // (at most once, as core NATS is), or a state stream
                                // consumer's, which sees the gap in its sequence and
                                // recreates itself from where it was. Nothing to re-read;
                                // counted, and logged at most every 10 s.
                                let total = health
                                    .slow_consumers
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                                    + 1;
                                let mut last = last_warning
                                    .lock()
                                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                                if last.is_none_or(|at| at.elapsed() >= SLOW_CONSUMER_LOG_EVERY) {
                                    *last = Some(std::time::Instant::now());
                                    log::warn!(
                                        "NATS: subscription {subscription} fell behind and dropped messages ({total} slow-consumer reports since start)"
                                    );
                                }
                            }
                            other => log::info!("NATS: {other}"),
                        }
                    }
                });
            let servers: Vec<&str> = url.split(',').map(str::trim).collect();
            // Credentials in a URL (`nats://user:password@host:4222`) are the node's user.
            let options = match servers.iter().find_map(|server| credentials(server)) {
                Some((user, password)) => options.user_and_password(user, password),
                None => options,
            };
            let client = match options.connect(servers).await {
                Ok(client) => client,
                Err(err) => {
                    log::error!("NATS {url}: {err}; this node will not serve");
                    return;
                }
            };
            let mut jetstream = async_nats::jetstream::new(client.clone());
            jetstream.set_timeout(REQUEST_TIMEOUT);
            let shared = Arc::new(Shared {
                jetstream,
                client: client.clone(),
                health: task_health.clone(),
                epoch,
                node,
                replicas,
            });
            actix::spawn(super::control::serve(shared.clone(), control));
            for link in links {
                let link = Arc::new(link);
                let fates = Arc::new(super::publisher::Fates::default());
                actix::spawn(super::replica::follow(
                    shared.clone(),
                    link.clone(),
                    fates.clone(),
                ));
                actix::spawn(super::publisher::run(shared.clone(), link.clone(), fates));
                let checkpoints = Lease::new(super::LEASE_TTL);
                actix::spawn(super::lease::hold(
                    checkpoints.clone(),
                    shared.clone(),
                    link.name.clone(),
                    super::lease::Role::Checkpoints,
                ));
                actix::spawn(super::checkpoint::write(
                    shared.clone(),
                    link.clone(),
                    checkpoints,
                ));
                if let Some(lease) = link.lease.clone() {
                    actix::spawn(super::lease::hold(
                        lease,
                        shared.clone(),
                        link.name.clone(),
                        super::lease::Role::Simulator,
                    ));
                }
                if let Some((subject, runtime)) = link.ingest_subject.clone() {
                    actix::spawn(super::subject_ingest::serve(
                        shared.clone(),
                        subject,
                        runtime,
                        link.max_features,
                    ));
                }
            }
            watch_connection(client, task_health, epoch_sender, url).await;
        });
        Backbone { health, arbiter }
    }

    /// The thread its tasks run on (stopped at shutdown).
    pub fn arbiter(&self) -> ArbiterHandle {
        self.arbiter.clone()
    }
}

/// The user and password a server URL carries (`nats://user:password@host:port`), if any.
fn credentials(server: &str) -> Option<(String, String)> {
    let rest = server.split_once("://").map_or(server, |(_, rest)| rest);
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Shortest time between two log lines about subscriptions that fell behind.
const SLOW_CONSUMER_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Follows the connection: ready only while connected; every reconnect starts a new epoch
/// (replicas read the whole state again, whatever they missed while it was down).
async fn watch_connection(
    client: async_nats::Client,
    health: Arc<Health>,
    epoch: Arc<watch::Sender<u64>>,
    url: String,
) {
    let mut connected = false;
    loop {
        let now = client.connection_state() == State::Connected;
        if now != connected {
            connected = now;
            health.set_all_lagging();
            health.set_connected(now);
            match now {
                true => {
                    log::info!("NATS {url}: connected; reading the latest state");
                    epoch.send_modify(|epoch| *epoch += 1);
                }
                false => log::warn!(
                    "NATS {url}: connection lost; serving what this node holds, reconnecting"
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
