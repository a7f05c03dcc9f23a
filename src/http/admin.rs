//! The admin API for server-initiated messages (seed 001, seed 002's broadcast):
//! `POST /api/sessions/{id}/messages` to one browser session's connections and
//! `POST /api/messages` to everyone or one service. Delivered as
//! `{"type":"message","message":<body>}`, a frame both SDK modes pass to `message-received`
//! without disturbing the stream (docs/protocol.md §3.2, §4.2). Needs an admin token when auth is
//! on, and a caller on this machine reaching it directly when it is off; cross-site browser
//! requests are refused either way.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;
use serde_json::{Value, json};

use super::AppState;
use super::body;
use super::client::Client;
use super::error::BodyError;

/// Largest admin request body.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
use crate::auth::{AuthDecision, Role};
use crate::cluster::control::Audience as To;
use crate::protocol::metadata::error_body;
use crate::session::registry::{Audience, ServerMessage};

/// Why an admin request is refused; each maps to one status and message.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A browser page of another site (Origin, Sec-Fetch-Site) calls the admin API.
    #[error("Cross-site requests to the admin API are refused")]
    CrossSite,
    /// Auth is off and the caller is not on this machine.
    #[error("The admin API needs auth configured, or a loopback caller")]
    NotLoopback,
    /// Auth is on and no token was given.
    #[error("Admin token required")]
    TokenRequired,
    /// The token is valid but not an admin's, or invalid.
    #[error("Not an admin token")]
    NotAdmin,
    /// The body is too large or too slow.
    #[error("{0}")]
    Body(#[from] BodyError),
    /// The body is not JSON.
    #[error("The body is not JSON: {0}")]
    NotJson(String),
    /// The broadcast names a service that does not exist.
    #[error("Service \"{0}\" not found")]
    UnknownService(String),
    /// No connection of that browser session is open.
    #[error("No connection of that session")]
    NoSuchSession,
    /// No live track has that id (or it cannot be one of this service's).
    #[error("No live track \"{0}\" in this service")]
    NoSuchTrack(String),
    /// In a cluster: the log did not take the change (NATS unavailable).
    #[error("The NATS backbone did not store the change; retry shortly")]
    NotStored,
    /// The service's broker is gone (shutting down).
    #[error("The service is not running")]
    Unavailable,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::NotLoopback | AdminError::NotAdmin | AdminError::CrossSite => {
                StatusCode::FORBIDDEN
            }
            AdminError::TokenRequired => StatusCode::UNAUTHORIZED,
            AdminError::NotJson(_) => StatusCode::BAD_REQUEST,
            AdminError::Body(error) => error.status(),
            AdminError::UnknownService(_)
            | AdminError::NoSuchSession
            | AdminError::NoSuchTrack(_) => StatusCode::NOT_FOUND,
            AdminError::Unavailable | AdminError::NotStored => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        HttpResponse::build(status).json(error_body(status.as_u16(), &self.to_string(), &[]))
    }
}

/// A browser says where a request comes from: any page open in a browser on this machine
/// could otherwise post to a loopback admin API (a `text/plain` form needs no preflight).
/// Non-browser callers send neither header.
pub(crate) fn check_same_site(req: &HttpRequest, client: &Client) -> Result<(), AdminError> {
    let header_text = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    if let Some(site) = header_text("sec-fetch-site")
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return Err(AdminError::CrossSite);
    }
    if let Some(origin) = header_text("origin") {
        let own = format!("{}://{}", client.scheme, client.host);
        if !origin.eq_ignore_ascii_case(&own) {
            return Err(AdminError::CrossSite);
        }
    }
    Ok(())
}

/// The admin check: 401 without a token, 403 with a token that is not an admin's.
pub fn check_admin(req: &HttpRequest, state: &AppState) -> Result<(), AdminError> {
    let client = state.client(req);
    check_same_site(req, &client)?;
    if !state.config.auth.is_enabled() {
        return if client.local {
            Ok(())
        } else {
            Err(AdminError::NotLoopback)
        };
    }
    match state
        .config
        .auth
        .check(AppState::token(req).as_deref(), None)
    {
        AuthDecision::Allowed(Role::Admin) => Ok(()),
        AuthDecision::Missing => Err(AdminError::TokenRequired),
        _ => Err(AdminError::NotAdmin),
    }
}

fn message(body: &[u8]) -> Result<ServerMessage, AdminError> {
    let payload: Value =
        serde_json::from_slice(body).map_err(|err| AdminError::NotJson(err.to_string()))?;
    let payload = payload.get("message").cloned().unwrap_or(payload);
    let frame = json!({ "type": "message", "message": payload }).to_string();
    Ok(ServerMessage {
        json: Bytes::from(frame),
    })
}

/// `POST /api/sessions/{id}/messages`: to every connection of one browser session.
pub async fn to_browser_session(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    check_admin(&req, &state)?;
    let body = body::read(payload, MAX_MESSAGE_BYTES).await?;
    let message = message(&body)?;
    let mut delivered = state
        .registry
        .send(Audience::BrowserSession(&path), &message);
    if let Some(control) = &state.control {
        delivered += control
            .deliver_elsewhere(To::BrowserSession(path.clone()), &message.json)
            .await;
    }
    match delivered {
        0 => Err(AdminError::NoSuchSession),
        delivered => Ok(HttpResponse::Ok().json(json!({ "delivered": delivered }))),
    }
}

/// `POST /api/messages` with `{"message": .., "service": optional}`: broadcast.
pub async fn broadcast(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    check_admin(&req, &state)?;
    let body = body::read(payload, MAX_MESSAGE_BYTES).await?;
    let service = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| {
            value
                .get("service")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if let Some(service) = &service
        && !state.services.contains_key(service)
    {
        return Err(AdminError::UnknownService(service.clone()));
    }
    let message = message(&body)?;
    let audience = match &service {
        Some(service) => Audience::Service(service),
        None => Audience::Everyone,
    };
    let mut delivered = state.registry.send(audience, &message);
    if let Some(control) = &state.control {
        let audience = match service {
            Some(service) => To::Service(service),
            None => To::Everyone,
        };
        delivered += control.deliver_elsewhere(audience, &message.json).await;
    }
    Ok(HttpResponse::Ok().json(json!({ "delivered": delivered })))
}

/// `DELETE /api/services/{name}/tracks/{trackId}`: removes a track from the latest state now;
/// every session that selected it gets its `delete` message. An admin's.
pub async fn delete_track(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    check_admin(&req, &state)?;
    let (name, track) = path.into_inner();
    let shown = || track.chars().take(64).collect::<String>();
    let runtime = state
        .services
        .get(&name)
        .ok_or_else(|| AdminError::UnknownService(name.chars().take(64).collect()))?;
    let key = crate::latest::TrackKey::parse(&runtime.service.schema, &track)
        .ok_or_else(|| AdminError::NoSuchTrack(shown()))?;
    let removed = runtime
        .sink
        .remove_track(key)
        .await
        .map_err(|err| match err {
            crate::broker::RemoveError::Stopped => AdminError::Unavailable,
            crate::broker::RemoveError::NotStored => AdminError::NotStored,
        })?;
    if !removed {
        return Err(AdminError::NoSuchTrack(shown()));
    }
    Ok(HttpResponse::Ok().json(json!({ "deleted": track })))
}
