//! REST endpoints: the catalog and a stream service's metadata. `streamUrls` is built from the
//! request's host and scheme (honouring `Forwarded` / `X-Forwarded-*` from trusted proxies),
//! so the SDK opens the socket where it reached the metadata.

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::client::Client;
use super::error::HttpError;
use crate::auth::AuthDecision;
use crate::protocol::metadata;

/// `GET /arcgis/rest/services?f=json`.
pub async fn catalog(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(metadata::catalog(
        state.services.values().map(|runtime| &runtime.service),
    ))
}

/// `GET /arcgis/rest/services/{name}/StreamServer?f=json`.
pub async fn stream_server(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let runtime = state
        .services
        .get(path.as_str())
        .ok_or_else(|| HttpError::UnknownService(path.chars().take(64).collect()))?;
    let stream_url = format!(
        "{}/arcgis/ws/services/{}/StreamServer",
        websocket_base(&state.client(&req)),
        runtime.service.name
    );
    // ArcGIS REST convention: token errors are a JSON body with HTTP 200 (499 required,
    // 498 invalid). An accepted token is handed back in streamUrls[0].token, which the SDK
    // appends to the subscribe URL (docs/protocol.md §7).
    let token = AppState::token(&req);
    match state
        .config
        .auth
        .check(token.as_deref(), Some(&runtime.service.name))
    {
        AuthDecision::Missing => {
            return Ok(HttpResponse::Ok().json(metadata::error_body(499, "Token Required", &[])));
        }
        AuthDecision::Forbidden(_) => {
            return Ok(HttpResponse::Ok().json(metadata::error_body(498, "Invalid Token", &[])));
        }
        AuthDecision::Allowed(_) => {}
    }
    let echoed = token.filter(|_| state.config.auth.is_enabled());
    let client = state.client(&req);
    let archive = metadata::Archive {
        features_url: format!(
            "{}://{}/arcgis/rest/services/{}/FeatureServer/0",
            client.scheme, client.host, runtime.service.name
        ),
        update_interval_ms: state.config.ingest.coalesce.as_millis() as u64,
    };
    Ok(HttpResponse::Ok().json(metadata::stream_server(
        &runtime.service,
        &stream_url,
        echoed.as_deref(),
        &archive,
    )))
}

/// `ws://host` or `wss://host` as the client reached this server: the host it named, or the
/// one a trusted proxy forwarded (`http::client`).
pub fn websocket_base(client: &Client) -> String {
    let scheme = if client.scheme == "https" {
        "wss"
    } else {
        "ws"
    };
    format!("{scheme}://{}", client.host)
}
