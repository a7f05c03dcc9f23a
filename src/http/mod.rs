//! HTTP: the one list of endpoints, and shared application state. Only this module knows
//! URLs and query strings.

pub mod debug_page;
pub mod error;
pub mod metadata;
pub mod subscribe;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_cors::Cors;
use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::broker::{GetStats, SessionId};
use crate::config::Config;
use crate::server::ServiceRuntime;
use crate::service::DEFAULT_SERVICE;

/// What every handler can reach.
pub struct AppState {
    /// Services by name.
    pub services: BTreeMap<String, Arc<ServiceRuntime>>,
    /// The configuration.
    pub config: Arc<Config>,
    next_session: AtomicU64,
}

impl AppState {
    /// State over the running services.
    pub fn new(services: BTreeMap<String, Arc<ServiceRuntime>>, config: Arc<Config>) -> AppState {
        AppState {
            services,
            config,
            next_session: AtomicU64::new(1),
        }
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

/// CORS for the REST endpoints the SDK reads from another origin (PROTOCOL.md §2.1).
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

/// Every endpoint.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(debug_page::index))
        .route(
            "/healthz",
            web::get()
                .to(|| async { HttpResponse::Ok().json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/api/stats", web::get().to(stats))
        .service(
            web::scope("/arcgis/rest/services")
                .wrap(rest_cors())
                .route("", web::get().to(metadata::catalog))
                .route("/", web::get().to(metadata::catalog))
                .route(
                    "/{name}/StreamServer",
                    web::get().to(metadata::stream_server),
                ),
        )
        .route(
            "/arcgis/ws/services/{name}/StreamServer/subscribe",
            web::get().to(subscribe::subscribe),
        )
        .route(
            "/arcgis/ws/services/{name}/custom",
            web::get().to(subscribe::custom),
        );
}

/// `GET /api/stats`: sessions and counters per service.
async fn stats(state: web::Data<AppState>) -> HttpResponse {
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
                "framesDropped": stats.fanout.frames_dropped,
            }),
        );
    }
    HttpResponse::Ok().json(serde_json::json!({ "services": services }))
}
