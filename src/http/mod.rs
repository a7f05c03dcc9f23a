//! HTTP: the one list of endpoints, and shared application state. Only this module knows
//! URLs and query strings.

pub mod admin;
pub mod admission;
pub mod body;
pub mod client;
pub mod cookie;
pub mod debug_page;
pub mod error;
pub mod feature_layer;
pub mod gate;
pub mod geojson;
pub mod ingest;
pub mod metadata;
pub mod metrics;
pub mod ogc;
pub mod sse;
pub mod subscribe;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use crate::broker::ServiceRuntime;
use crate::broker::{GetStats, SessionId};
use crate::config::Config;
use crate::service::DEFAULT_SERVICE;

/// Connection attempts by outcome, for `/api/stats` (and for counting reconnect storms).
#[derive(Default)]
pub struct ConnectionCounters {
    /// Upgrades answered with 101.
    pub accepted: AtomicU64,
    /// Refused: unknown service (404).
    pub unknown_service: AtomicU64,
    /// Refused: invalid URL parameters (400).
    pub invalid_parameters: AtomicU64,
    /// Refused: not a WebSocket request (400).
    pub not_websocket: AtomicU64,
    /// Refused: shutting down (503).
    pub shutting_down: AtomicU64,
    /// Refused: over the connection cap (503, or accepted and closed with 1013).
    pub over_capacity: AtomicU64,
    /// Refused: too many attempts from one address (429).
    pub rate_limited: AtomicU64,
    /// Refused: origin not allowed (403).
    pub origin_refused: AtomicU64,
    /// Refused: token missing (401) or not allowed (403).
    pub token_refused: AtomicU64,
}

/// What every handler can reach.
pub struct AppState {
    /// Services by name.
    pub services: BTreeMap<String, Arc<ServiceRuntime>>,
    /// The configuration.
    pub config: Arc<Config>,
    /// Connection attempts by outcome.
    pub connections: ConnectionCounters,
    /// Connection cap, rate limit, origins.
    pub admission: admission::Admission,
    /// Every live connection, for server-initiated messages.
    pub registry: Arc<crate::session::registry::Registry>,
    /// Live SSE sessions, for filter updates over HTTP.
    pub sse_sessions: sse::SseRegistry,
    /// Set when shutdown begins: upgrades are refused with 503 from then on.
    pub draining: Arc<AtomicBool>,
    /// The listening address (the host a request that names none reached).
    pub local_addr: SocketAddr,
    /// Upgraded connections reset because their client did not read its last frames.
    pub teardown: Arc<crate::session::socket::TeardownStats>,
    /// How the node stands with the NATS backbone (`None`: alone).
    pub backbone: Option<Arc<crate::cluster::Health>>,
    /// Sessions held by other nodes (`None`: alone).
    pub control: Option<Arc<crate::cluster::control::Control>>,
    /// Feature layer queries running at once, all services together: one core less than the
    /// machine has (at least one), so that brokers and sockets always keep a core.
    pub query_slots: Arc<tokio::sync::Semaphore>,
    next_session: AtomicU64,
}

impl AppState {
    /// State over the running services.
    pub fn new(
        services: BTreeMap<String, Arc<ServiceRuntime>>,
        config: Arc<Config>,
        draining: Arc<AtomicBool>,
        local_addr: SocketAddr,
    ) -> AppState {
        let admission = admission::Admission::new(config.admission.clone());
        AppState {
            services,
            config,
            connections: ConnectionCounters::default(),
            admission,
            registry: Arc::default(),
            sse_sessions: sse::SseRegistry::default(),
            draining,
            local_addr,
            teardown: Arc::default(),
            backbone: None,
            control: None,
            query_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, |cores| cores.get().saturating_sub(1))
                    .max(1),
            )),
            next_session: AtomicU64::new(1),
        }
    }

    /// Counts an upgrade attempt's outcome.
    pub fn count_attempt<T>(&self, outcome: &Result<T, error::HttpError>) {
        let counter = match outcome {
            // Not an upgrade attempt.
            Err(
                error::HttpError::SseSessionNotFound
                | error::HttpError::BackboneUnavailable
                | error::HttpError::HostNotAllowed(_)
                | error::HttpError::UpgradeNotAllowed
                | error::HttpError::Body(_),
            ) => return,
            Ok(_) => &self.connections.accepted,
            Err(error::HttpError::UnknownService(_)) => &self.connections.unknown_service,
            Err(error::HttpError::InvalidParameters(_)) => &self.connections.invalid_parameters,
            Err(error::HttpError::NotWebSocket(_)) => &self.connections.not_websocket,
            Err(error::HttpError::ShuttingDown) => &self.connections.shutting_down,
            Err(error::HttpError::OverCapacity) => &self.connections.over_capacity,
            Err(error::HttpError::RateLimited) => &self.connections.rate_limited,
            Err(error::HttpError::OriginRefused(_)) => &self.connections.origin_refused,
            Err(error::HttpError::TokenRequired | error::HttpError::TokenForbidden(_)) => {
                &self.connections.token_refused
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The request's token: the `token` query parameter (where ArcGIS puts it,
    /// docs/protocol.md §7), else `Authorization: Bearer ..` or `X-Esri-Authorization: Bearer ..`
    /// (the scheme in any case). Every endpoint that takes a token reads it here.
    pub fn token(req: &actix_web::HttpRequest) -> Option<String> {
        let from_query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .ok()
            .and_then(|query| {
                query
                    .into_inner()
                    .into_iter()
                    .rev()
                    .find(|(key, _)| key.eq_ignore_ascii_case("token"))
                    .map(|(_, value)| value)
            });
        from_query.or_else(|| {
            [header::AUTHORIZATION.as_str(), "x-esri-authorization"]
                .iter()
                .find_map(|name| bearer(req.headers().get(*name)?.to_str().ok()?))
        })
    }

    /// Checks the request's token for a service before the upgrade: 401 or 403.
    pub fn check_token(
        &self,
        req: &actix_web::HttpRequest,
        service: &str,
    ) -> Result<(), error::HttpError> {
        match self
            .config
            .auth
            .check(AppState::token(req).as_deref(), Some(service))
        {
            crate::auth::AuthDecision::Allowed(_) => Ok(()),
            crate::auth::AuthDecision::Missing => Err(error::HttpError::TokenRequired),
            crate::auth::AuthDecision::Forbidden(reason) => {
                Err(error::HttpError::TokenForbidden(reason))
            }
        }
    }

    /// Refuses new sessions while shutting down.
    pub fn check_accepting(&self) -> Result<(), error::HttpError> {
        if self.draining.load(Ordering::SeqCst) {
            Err(error::HttpError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// The request's client, trusting forwarding headers from configured proxies only.
    pub fn client(&self, req: &actix_web::HttpRequest) -> client::Client {
        client::Client::of(req, &self.config.admission.trusted_proxies, self.local_addr)
    }

    /// The operator endpoints (`/api/stats`, `/metrics`): open when auth is off; with auth on
    /// they tell who is connected and how much, so they need an admin token.
    pub fn check_operator(&self, req: &actix_web::HttpRequest) -> Result<(), admin::AdminError> {
        if self.config.auth.is_enabled() {
            admin::check_admin(req, self)?;
        }
        Ok(())
    }

    /// A new session id.
    pub fn next_session_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// The service served at `/`: `vehicles`, or the first declared.
    pub fn default_service(&self) -> Option<Arc<ServiceRuntime>> {
        self.services
            .get(DEFAULT_SERVICE)
            .or_else(|| self.services.values().next())
            .cloned()
    }
}

/// The credentials of `Bearer <token>`, the scheme matched in any case (RFC 9110).
fn bearer(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// CORS for the REST endpoints the SDK reads from another origin (docs/protocol.md §2.1).
fn rest_cors() -> Cors {
    Cors::default()
        .allow_any_origin()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-esri-authorization"),
        ])
        .max_age(3600)
}

/// This node's sessions, for the requests of other nodes (`cluster::control`).
pub struct NodeSessions {
    registry: Arc<crate::session::registry::Registry>,
    sse_sessions: sse::SseRegistry,
}

impl NodeSessions {
    /// The sessions `state` holds.
    pub fn of(state: &AppState) -> NodeSessions {
        NodeSessions {
            registry: state.registry.clone(),
            sse_sessions: state.sse_sessions.clone(),
        }
    }
}

impl crate::cluster::control::LocalSessions for NodeSessions {
    fn deliver(&self, audience: &crate::cluster::control::Audience, frame: bytes::Bytes) -> usize {
        use crate::cluster::control::Audience as To;
        use crate::session::registry::Audience;
        let audience = match audience {
            To::BrowserSession(cookie) => Audience::BrowserSession(cookie),
            To::Service(service) => Audience::Service(service),
            To::Everyone => Audience::Everyone,
        };
        self.registry.send(
            audience,
            &crate::session::registry::ServerMessage { json: frame },
        )
    }

    fn update_sse_filter(
        &self,
        service: String,
        handle: String,
        body: String,
    ) -> futures_util::future::BoxFuture<'static, Option<crate::cluster::control::SseAnswer>> {
        let address = self.sse_sessions.find_for(&service, &handle);
        Box::pin(async move {
            let answer = address?
                .send(crate::session::sse_stream::ApplyFilter { text: body })
                .await
                .ok()?;
            Some(crate::cluster::control::SseAnswer {
                reply: answer.reply,
                rate_limited: answer.rate_limited,
            })
        })
    }
}

/// `GET /readyz`: 200 when this node serves complete data: alone, always (until shutdown
/// begins); in a cluster, while connected to NATS and caught up with every service's latest
/// state. 503 otherwise, with what it waits for. `/healthz` stays liveness.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "shutting down" }));
    }
    let failing: serde_json::Map<String, serde_json::Value> = state
        .services
        .iter()
        .filter_map(|(name, runtime)| {
            let fault = runtime.store.as_ref()?.fault()?;
            Some((name.clone(), serde_json::Value::String(fault.message)))
        })
        .collect();
    if !failing.is_empty() {
        // Streaming goes on, but what is accepted would not survive a restart: a balancer
        // should send publishers to a node that can keep it.
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "cannot make the latest state durable",
            "stateStoreErrors": failing,
        }));
    }
    // Outside feeds are shown, not waited for: a node whose MQTT broker is away still serves
    // its viewers and its other sources, so a balancer should keep it.
    let feeds: serde_json::Map<String, serde_json::Value> = state
        .services
        .iter()
        .filter_map(|(name, runtime)| {
            let feed = runtime.feed.as_ref()?;
            let status = match (feed.is_running_here(), feed.is_connected()) {
                (false, _) => "another node runs it",
                (true, true) => "connected",
                (true, false) => "disconnected",
            };
            let mut entry =
                serde_json::json!({ "kind": feed.kind, "origin": feed.origin, "status": status });
            if let Some(error) = feed.last_error() {
                entry["error"] = error.into();
            }
            Some((name.clone(), entry))
        })
        .collect();
    let ready = |mut body: serde_json::Value| {
        if !feeds.is_empty() {
            body["feeds"] = feeds.clone().into();
        }
        HttpResponse::Ok().json(body)
    };
    match &state.backbone {
        Some(health) if !health.is_connected() => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "waiting for NATS", "nats": "disconnected" })),
        Some(health) if !health.is_ready() => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "status": "reading the latest state",
                "nats": "connected",
                "catchingUp": health.lagging_services(),
            }))
        }
        Some(_) => ready(serde_json::json!({ "status": "ready", "nats": "connected" })),
        None => ready(serde_json::json!({ "status": "ready" })),
    }
}

/// Every endpoint.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(debug_page::index))
        .route("/examples/{file}", web::get().to(debug_page::example))
        .route(
            "/healthz",
            web::get()
                .to(|| async { HttpResponse::Ok().json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", web::get().to(readyz))
        .route("/api/stats", web::get().to(stats))
        .route("/metrics", web::get().to(metrics::metrics))
        .route(
            "/api/sessions/{session}/messages",
            web::post().to(admin::to_browser_session),
        )
        .route("/api/messages", web::post().to(admin::broadcast))
        .route(
            "/api/services/{name}/tracks/{track}",
            web::delete().to(admin::delete_track),
        )
        .service(
            web::scope("/arcgis/rest/services")
                .wrap(rest_cors())
                .route("", web::get().to(metadata::catalog))
                .route("/", web::get().to(metadata::catalog))
                .route(
                    "/{name}/StreamServer",
                    web::get().to(metadata::stream_server),
                )
                .route(
                    "/{name}/FeatureServer",
                    web::get().to(feature_layer::feature_server),
                )
                .route(
                    "/{name}/FeatureServer/{layer}",
                    web::get().to(feature_layer::layer),
                )
                .route(
                    "/{name}/FeatureServer/{layer}/query",
                    web::route()
                        .guard(
                            actix_web::guard::Any(actix_web::guard::Get())
                                .or(actix_web::guard::Post()),
                        )
                        .to(feature_layer::query),
                ),
        )
        .route(
            "/arcgis/ws/services/{name}/StreamServer/subscribe",
            web::get().to(subscribe::subscribe),
        )
        .route(
            "/arcgis/ws/services/{name}/custom",
            web::get().to(subscribe::custom),
        )
        .route(
            "/api/services/{name}/features",
            web::post().to(ingest::features),
        )
        .route(
            "/arcgis/ws/services/{name}/StreamServer/broadcast",
            web::get().to(subscribe::broadcast),
        )
        .route(
            "/api/services/{name}/routes",
            web::get().to(debug_page::routes),
        )
        .service(ogc::scope())
        .route("/api/services/{name}/events", web::get().to(sse::events))
        .route(
            "/api/services/{name}/events/{handle}/filter",
            web::post().to(sse::filter),
        )
        .route(
            "/api/services/{name}/geojson",
            web::get().to(geojson::stream),
        )
        .route(
            "/api/services/{name}/geojson/{handle}/filter",
            web::post().to(sse::filter),
        );
}

/// Refuses requests naming a host that is not allowed (against DNS rebinding: a page of
/// `rebind.attacker.example` resolved to 127.0.0.1 names its own host). Wraps every route.
pub async fn check_host(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refused = req.app_data::<web::Data<AppState>>().and_then(|state| {
        let allowed = state.config.admission.allowed_hosts.as_ref()?;
        let client = state.client(req.request());
        let hostname = client.hostname();
        (!allowed.contains(&hostname)).then_some(hostname)
    });
    match refused {
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Some(host) => {
            let host: String = host.chars().take(100).collect();
            let response = error::HttpError::HostNotAllowed(host).error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// Whether `path` is a WebSocket endpoint: only these may take the upgrade path (`server`
/// answers an `Upgrade: websocket` request for any other route with
/// [`error::HttpError::UpgradeNotAllowed`]).
pub fn is_websocket_route(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    if let Some(name) = path
        .strip_prefix("/api/services/")
        .and_then(|rest| rest.strip_suffix("/geojson"))
    {
        return !name.is_empty() && !name.contains('/');
    }
    let Some(rest) = path.strip_prefix("/arcgis/ws/services/") else {
        return false;
    };
    match rest.split_once('/') {
        Some((name, tail)) => {
            !name.is_empty()
                && matches!(
                    tail,
                    "custom" | "StreamServer/subscribe" | "StreamServer/broadcast"
                )
        }
        None => false,
    }
}

/// The answer to an `Upgrade: websocket` request for a route that is not a WebSocket.
pub fn upgrade_refusal() -> HttpResponse {
    actix_web::ResponseError::error_response(&error::HttpError::UpgradeNotAllowed)
}

/// `GET /api/stats`: sessions and counters per service.
async fn stats(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, admin::AdminError> {
    state.check_operator(&req)?;
    let mut services = serde_json::Map::new();
    for (name, runtime) in &state.services {
        let Ok(stats) = runtime.broker.send(GetStats).await else {
            continue;
        };
        services.insert(
            name.clone(),
            serde_json::json!({
                "sessions": stats.sessions,
                "groups": stats.groups,
                "batches": stats.fanout.batches,
                "featuresIn": stats.fanout.features_in,
                "featuresOut": stats.fanout.features_out,
                "framesConflated": stats.fanout.frames_conflated,
                "batchesMerged": stats.batches_merged,
                "tracksLive": stats.tracks,
                "staleObservations": stats.fanout.stale,
                "snapshotFrames": stats.fanout.snapshot_frames,
                "tracksExpired": stats.fanout.tracks_expired,
                "deleteFrames": stats.fanout.delete_frames,
                "deflate": {
                    "plainBytes": stats.fanout.deflate_plain_bytes,
                    "wireBytes": stats.fanout.deflate_wire_bytes,
                },
                "observationsAccepted": runtime.ingest.accepted.load(Ordering::Relaxed),
                "observationsRejected": runtime.ingest.rejected_by_reason().into_iter().collect::<BTreeMap<_, _>>(),
                "ingestRequestsRefused": runtime.ingest.refused_requests.load(Ordering::Relaxed),
                "lagMs": stats.lag_ms,
                "whereConditions": runtime.where_ledger.usage().0,
                "simulatorHere": runtime.simulator_lease.as_ref().map(|lease| lease.is_held()),
                "stateStore": runtime.store.as_ref().map(|health| serde_json::json!({
                    "commits": health.commits.load(Ordering::Relaxed),
                    "journalBytes": health.bytes.load(Ordering::Relaxed),
                    "failures": health.failures.load(Ordering::Relaxed),
                    "checkpoints": health.checkpoints.load(Ordering::Relaxed),
                    "error": health.fault().map(|fault| fault.message),
                })),
                "feed": runtime.feed.as_ref().map(|feed| serde_json::json!({
                    "kind": feed.kind,
                    "origin": feed.origin,
                    "here": feed.is_running_here(),
                    "connected": feed.is_connected(),
                    "error": feed.last_error(),
                    "events": feed.outcomes().into_iter().collect::<BTreeMap<_, _>>(),
                })),
            }),
        );
    }
    let connections = &state.connections;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let cluster = state
        .config
        .cluster
        .as_ref()
        .zip(state.backbone.as_ref())
        .map(|(settings, health)| {
            let mut cluster = serde_json::json!({
                "node": settings.node_name,
                "natsConnected": health.is_connected(),
                "ready": health.is_ready(),
                "peers": state.control.as_ref().map_or(0, |control| control.live_peers().len()),
            });
            for each in health.counters() {
                cluster[each.key] = each.value.into();
            }
            cluster
        });
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "cluster": cluster,
        "services": services,
        "closes": state.registry.closes().into_iter().map(|(code, count)| (code.to_string(), count)).collect::<BTreeMap<String, u64>>(),
        "filterErrors": state.registry.filter_errors(),
        "activeConnections": state.admission.active(),
        "openConnections": state.admission.gate().counts().0,
        "connectionsReset": state.teardown.reset.load(Ordering::Relaxed),
        "connections": {
            "accepted": load(&connections.accepted),
            "refused": {
                "unknownService": load(&connections.unknown_service),
                "invalidParameters": load(&connections.invalid_parameters),
                "notWebSocket": load(&connections.not_websocket),
                "shuttingDown": load(&connections.shutting_down),
                "overCapacity": load(&connections.over_capacity),
                "rateLimited": load(&connections.rate_limited),
                "originRefused": load(&connections.origin_refused),
                "tokenRefused": load(&connections.token_refused),
                "tooManyFromAddress": state.admission.gate().counts().1,
                "serverFull": state.admission.gate().counts().2,
            },
        },
    })))
}
