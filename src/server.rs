//! `listen` opens the listening socket; `start` builds every service's broker and simulator,
//! then the HTTP server on it. `main` and the integration tests call the same functions.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::rc::Rc;

use actix::{Actor, Arbiter, ArbiterHandle};
use actix_http::HttpService;
use actix_server::ServerHandle;
use actix_service::{
    IntoServiceFactory, Service as _, ServiceFactory, ServiceFactoryExt, fn_factory, fn_service,
    map_config,
};
use actix_web::dev::AppConfig;
use actix_web::{App, web};
use futures_util::future::Either;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

use crate::broker::{
    BatchInbox, BatchSink, BrokerActor, BrokerSettings, CloseAll, CloseStore, ServiceRuntime,
    StateStore,
};
use crate::cluster::{Backbone, LEASE_TTL, ServiceLink};
use crate::config::Config;
use crate::filter::WhereLedger;
use crate::http::gate::{ConnectionGate, GatePass, GateRefusal};
use crate::http::{self, AppState};
use crate::protocol::close::CloseCause;
use crate::simulator::{Fleet, SimulatorActor};
use crate::source::Lease;

/// How long a connection refused by the gate may take to close its side after the answer.
const REFUSAL_DRAIN: Duration = Duration::from_millis(500);

/// How long shutdown keeps answering HTTP (refusing upgrades) after closing the sessions.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(1500);

/// A started server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Resolves when the server has stopped; must be awaited or spawned.
    pub server: actix_server::Server,
    /// Stops it gracefully.
    pub stopper: Stopper,
}

/// Stops a running server.
#[derive(Clone)]
pub struct Stopper {
    handle: ServerHandle,
    draining: Arc<AtomicBool>,
    services: Vec<Arc<ServiceRuntime>>,
    arbiters: Vec<ArbiterHandle>,
}

impl Stopper {
    /// Stops accepting sessions (upgrades get 503 + Retry-After), closes every session with
    /// 1001 "server shutting down" (seed 003), drains, then stops. The HTTP endpoints keep
    /// answering while draining: the ArcGIS SDK reconnects at once after a close and, in
    /// server mode, gives up for good if that reconnect's metadata request cannot connect;
    /// a 503 on the upgrade instead puts it into its backoff, which carries it across a restart.
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for runtime in &self.services {
            runtime.broker.do_send(CloseAll {
                cause: CloseCause::ShuttingDown,
            });
        }
        actix_web::rt::time::sleep(SHUTDOWN_DRAIN).await;
        for runtime in &self.services {
            // What a restart reads is one checkpoint (FEATURESTREAM_STATE_DIR).
            let _ = runtime.broker.send(CloseStore).await;
        }
        self.handle.stop(true).await;
        self.stop_arbiters();
    }

    /// Stops at once, without closing sessions first (tests' drop).
    pub fn stop_now(&self) {
        // `stop` sends the command when called; the returned future only awaits completion.
        drop(self.handle.stop(false));
        self.stop_arbiters();
    }

    fn stop_arbiters(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// The HTTP service behind the connection gate (`http::gate`): each accepted connection takes
/// a place for its whole life (the upgraded WebSocket included), or is answered 429/503 and
/// closed before any of its request is read.
fn gated<S>(
    http: S,
    gate: Arc<ConnectionGate>,
    send_buffer_bytes: Option<usize>,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = S::Error, InitError = S::InitError>
where
    S: ServiceFactory<
            (TcpStream, actix_http::Protocol, Option<SocketAddr>),
            Config = (),
            Response = (),
        > + 'static,
    S::Service: 'static,
{
    let http = Rc::new(http);
    fn_factory(move || {
        let (http, gate) = (http.clone(), gate.clone());
        async move {
            let service = Rc::new(http.new_service(()).await?);
            Ok(fn_service(move |mut io: TcpStream| {
                let (service, gate) = (service.clone(), gate.clone());
                async move {
                    let peer = io.peer_addr().ok();
                    let entered = match gate.enter(peer.map(|peer| peer.ip())) {
                        Err(GateRefusal::PerAddress) => match health_check(&io, &gate).await {
                            Some(pass) => Ok(pass),
                            None => Err(GateRefusal::PerAddress),
                        },
                        entered => entered,
                    };
                    let pass = match entered {
                        Ok(pass) => pass,
                        Err(refusal) => {
                            use tokio::io::AsyncWriteExt;
                            if io.write_all(refusal.response()).await.is_ok() {
                                let _ = io.shutdown().await;
                                crate::session::socket::drain(&mut io, REFUSAL_DRAIN, 64 * 1024)
                                    .await;
                            }
                            return Ok(());
                        }
                    };
                    // Bounds what the kernel holds for a client that does not read (Linux
                    // grows a socket's buffer to megabytes otherwise: 2.3 GB for 1,000 such
                    // sessions); 128 KiB is still 10 Mbit/s at 100 ms round trip.
                    if let Some(bytes) = send_buffer_bytes {
                        let _ = socket2::SockRef::from(&io).set_send_buffer_size(bytes);
                    }
                    let served = service.call((io, actix_http::Protocol::Http1, peer)).await;
                    drop(pass);
                    served
                }
            }))
        }
    })
}

/// A place for a connection over its address's limit that is a health check (its first
/// bytes, peeked within `gate::PROBE_WAIT`): health checks always get through.
async fn health_check(io: &TcpStream, gate: &Arc<ConnectionGate>) -> Option<GatePass> {
    let probe = gate.probe()?;
    let mut head = [0u8; 16];
    let deadline = tokio::time::Instant::now() + crate::http::gate::PROBE_WAIT;
    loop {
        let peeked = tokio::time::timeout_at(deadline, io.peek(&mut head))
            .await
            .ok()?
            .ok()?;
        if peeked == 0 {
            return None;
        }
        if crate::http::gate::is_health_check(&head[..peeked]) {
            return Some(probe.admit());
        }
        if !crate::http::gate::may_be_health_check(&head[..peeked]) {
            return None;
        }
        // A head still arriving: look again shortly.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A listening socket on `addr` whose kernel queue holds `backlog` connections not yet
/// accepted (the kernel caps it at `net.core.somaxconn`). `std::net::TcpListener::bind` asks
/// for 128: when thousands of viewers connect at once (a ramp, a reconnect after a restart),
/// the rest would have their SYNs dropped and retry a second or more later.
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Starts brokers, simulators and the HTTP server. Must run inside an actix `System`.
pub fn start(config: Config, listener: TcpListener) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let config = Arc::new(config);
    if let Some(dir) = &config.state.dir {
        std::fs::create_dir_all(dir).map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("state directory {}: {err}", dir.display()),
            )
        })?;
    }
    let mut runtimes = BTreeMap::new();
    let mut arbiters: Vec<ArbiterHandle> = Vec::new();
    let mut feeds_arbiter: Option<ArbiterHandle> = None;
    let mut links = Vec::new();
    if config.cluster.is_some() && config.state.dir.is_some() {
        log::warn!(
            "FEATURESTREAM_STATE_DIR is not used with FEATURESTREAM_NATS_URL: the latest state lives in JetStream"
        );
    }
    for service in &config.services {
        let schema = service.schema.clone();
        let settings = BrokerSettings {
            slow_consumer_after: config.session.slow_consumer_after,
            coalesce: config.ingest.coalesce,
            max_feature_age: service.max_feature_age,
            max_tracks: config.ingest.max_tracks,
            // Nodes of a cluster resend under ranges of their own: 2^22 ranges of 2^30 ids
            // above RESEND_IDS, all below 2^53.
            first_resend_id: config.cluster.as_ref().map(|_| {
                crate::latest::RESEND_IDS + i64::from(rand::random::<u32>() >> 10) * (1 << 30)
            }),
        };
        let store = match config.cluster {
            Some(_) => None,
            None => config.state.dir.as_ref().map(|dir| StateStore {
                layout: crate::latest::Layout {
                    dir: dir.clone(),
                    service: service.name.clone(),
                },
                max_journal_bytes: config.state.max_journal_bytes,
            }),
        };
        // Each broker gets its own thread: fan-out never competes with socket writes.
        let arbiter = Arbiter::new().handle();
        let started = BrokerActor::start(&arbiter, schema, settings, store).map_err(|error| {
            arbiter.stop();
            std::io::Error::other(format!(
                "the latest state of service {} cannot be kept in FEATURESTREAM_STATE_DIR: {error}",
                service.name
            ))
        });
        let started = match started {
            Ok(started) => started,
            Err(error) => {
                for arbiter in &arbiters {
                    arbiter.stop();
                }
                return Err(error);
            }
        };
        let (broker, local_sink, archive) = (started.broker, started.sink, started.archive);
        arbiters.push(arbiter);
        let (sink, lease) = match &config.cluster {
            None => (local_sink, Lease::alone()),
            Some(cluster) => {
                // Sources hand their batches to the backbone; the broker gets what it stores.
                let outbox = Arc::new(BatchInbox::new(
                    service.schema.track_id_field(),
                    service.schema.start_time_field(),
                ));
                let ready = Arc::new(tokio::sync::Notify::new());
                let (deletes, taken_deletes) = tokio::sync::mpsc::unbounded_channel();
                links.push(ServiceLink {
                    name: service.name.clone(),
                    schema: service.schema.clone(),
                    broker: broker.clone(),
                    outbox: outbox.clone(),
                    outbox_ready: ready.clone(),
                    deletes: std::sync::Mutex::new(Some(taken_deletes)),
                    max_features: config.ingest.max_features,
                    coalesce: config.ingest.coalesce,
                    checkpoint_every: cluster.checkpoint_every,
                    lease: None,
                    ingest_subject: None,
                });
                (
                    BatchSink::to_backbone(outbox, ready, deletes),
                    Lease::new(LEASE_TTL),
                )
            }
        };
        if let Some(settings) = &service.simulator {
            let fleet = Fleet::on_routes(
                service.schema.clone(),
                settings.features,
                settings.seed,
                settings.trail_vertices,
                settings.routes.as_ref(),
            );
            let interval = Duration::from_secs_f64(1.0 / settings.hz);
            SimulatorActor::new(fleet, interval, sink.clone(), lease.clone()).start();
        }
        let feed_health = service.feed.as_ref().map(crate::feeds::health_of);
        let runtime = Arc::new(ServiceRuntime {
            service: service.clone(),
            broker,
            sink,
            ingest: Default::default(),
            where_ledger: WhereLedger::new(config.session.max_service_where_nodes),
            simulator_lease: service.simulator.as_ref().map(|_| lease.clone()),
            archive,
            store: started.store,
            feed: feed_health.clone(),
        });
        if let (Some(feed), Some(health)) = (&service.feed, feed_health) {
            // Feeds run on a thread of their own (parsing a large GTFS feed delays no broker).
            let arbiter = feeds_arbiter.get_or_insert_with(|| Arbiter::new().handle());
            crate::feeds::start(
                arbiter,
                feed.clone(),
                runtime.clone(),
                lease.clone(),
                health,
                config.ingest.max_features,
            );
        }
        if let Some(link) = links.last_mut().filter(|link| link.name == service.name) {
            // One lease per service for what runs once per cluster: the simulator, the feed.
            link.lease = (service.simulator.is_some() || service.feed.is_some()).then_some(lease);
            link.ingest_subject = service
                .ingest_subject
                .clone()
                .map(|subject| (subject, runtime.clone()));
        }
        runtimes.insert(service.name.clone(), runtime);
    }
    arbiters.extend(feeds_arbiter);
    let control = config
        .cluster
        .as_ref()
        .map(|_| crate::cluster::control::Control::new());
    let backbone = config.cluster.as_ref().map(|cluster| {
        log::info!(
            "node {} joins the cluster on NATS {} (state copies: {})",
            cluster.node_name,
            cluster.nats_url,
            cluster.replicas
        );
        Backbone::start(
            &cluster.nats_url,
            cluster.node_name.clone(),
            cluster.replicas,
            links,
            control.clone().expect("a cluster has a control end"),
        )
    });
    let health = backbone.as_ref().map(|backbone| backbone.health.clone());
    if let Some(backbone) = backbone {
        arbiters.push(backbone.arbiter());
    }
    let services: Vec<Arc<ServiceRuntime>> = runtimes.values().cloned().collect();
    let draining = Arc::new(AtomicBool::new(false));
    let mut state = AppState::new(runtimes, config.clone(), draining.clone(), addr);
    state.backbone = health;
    if let Some(control) = &control {
        control.serve_sessions(Arc::new(http::NodeSessions::of(&state)));
    }
    state.control = control;
    let state = web::Data::new(state);
    // actix-web's HttpServer, plus an upgrade service: every WebSocket upgrade is answered
    // by the same application, then its connection is driven by `session::socket`, which
    // writes the shared frames to the socket without copying them (README, "Transport").
    let gate = state.admission.gate();
    let teardown = state.teardown.clone();
    let app = move || {
        App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(http::check_host))
            .configure(http::routes)
    };
    // actix-web's public default: its host and address are placeholders this server never
    // reads (`http::metadata::websocket_base` falls back to the listening address itself).
    let app_config = AppConfig::default;
    let request_timeout = config.request_timeout;
    let send_buffer_bytes = config.send_buffer_bytes;
    let mut builder = actix_server::Server::build()
        .shutdown_timeout(5)
        .disable_signals()
        .listen("featurestream", listener, move || {
            let upgrade_app = app.clone();
            let teardown = teardown.clone();
            let upgrade = fn_factory(move || {
                let factory = upgrade_app().into_factory();
                let teardown = teardown.clone();
                async move {
                    let service = Rc::new(factory.new_service(app_config()).await?);
                    Ok::<_, ()>(fn_service(
                        move |(req, framed): (actix_http::Request, _)| {
                            // Only WebSocket endpoints take the upgrade path: any other
                            // handler would wait for a body fed only after a 101. This future
                            // lives as long as the connection: keep it small (no async block
                            // holding copies of what the session's future holds).
                            if http::is_websocket_route(req.path()) {
                                Either::Left(crate::session::socket::serve(
                                    service.clone(),
                                    req,
                                    framed,
                                    teardown.clone(),
                                ))
                            } else {
                                let refusal = http::upgrade_refusal();
                                Either::Right(crate::session::socket::answer(framed, refusal))
                            }
                        },
                    ))
                }
            });
            let http = HttpService::build()
                .client_request_timeout(request_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .upgrade(upgrade)
                .finish(map_config(
                    app().into_factory().map_err(|err| err.error_response()),
                    move |()| app_config(),
                ));
            gated(http, gate.clone(), send_buffer_bytes)
        })?;
    if config.workers > 0 {
        builder = builder.workers(config.workers);
    }
    let server = builder.run();
    let stopper = Stopper {
        handle: server.handle(),
        draining,
        services,
        arbiters,
    };
    Ok(Running {
        addr,
        server,
        stopper,
    })
}
