//! The admin API for server-initiated messages (seed 001, seed 002's broadcast):
//! `POST /api/sessions/{id}/messages` to one browser session's connections and
//! `POST /api/messages` to everyone or one service. Delivered as
//! `{"type":"message","message":<body>}`, a frame both SDK modes pass to `message-received`
//! without disturbing the stream (PROTOCOL.md §3.2, §4.2). Needs an admin token when auth is
//! on, and a loopback caller when it is off.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::{AuthDecision, Role};
use crate::protocol::metadata::error_body;
use crate::session::registry::{Audience, ServerMessage};

/// The admin check: 401 without a token, 403 with a token that is not an admin's.
fn check_admin(req: &HttpRequest, state: &AppState) -> Result<(), HttpResponse> {
    if !state.config.auth.is_enabled() {
        let local = req.peer_addr().is_some_and(|addr| addr.ip().is_loopback());
        return if local {
            Ok(())
        } else {
            Err(HttpResponse::Forbidden().json(error_body(
                403,
                "The admin API needs auth configured, or a loopback caller",
                &[],
            )))
        };
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let token = bearer.or_else(|| AppState::token(req));
    match state.config.auth.check(token.as_deref(), None) {
        AuthDecision::Allowed(Role::Admin) => Ok(()),
        AuthDecision::Missing => {
            Err(HttpResponse::Unauthorized().json(error_body(401, "Admin token required", &[])))
        }
        _ => Err(HttpResponse::Forbidden().json(error_body(403, "Not an admin token", &[]))),
    }
}

fn message(body: &[u8]) -> Result<ServerMessage, HttpResponse> {
    let payload: Value = serde_json::from_slice(body).map_err(|err| {
        HttpResponse::BadRequest().json(error_body(
            400,
            &format!("The body is not JSON: {err}"),
            &[],
        ))
    })?;
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
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(response) = check_admin(&req, &state) {
        return response;
    }
    let message = match message(&body) {
        Ok(message) => message,
        Err(response) => return response,
    };
    match state
        .registry
        .send(Audience::BrowserSession(&path), &message)
    {
        0 => HttpResponse::NotFound().json(error_body(404, "No connection of that session", &[])),
        delivered => HttpResponse::Ok().json(json!({ "delivered": delivered })),
    }
}

/// `POST /api/messages` with `{"message": .., "service": optional}`: broadcast.
pub async fn broadcast(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(response) = check_admin(&req, &state) {
        return response;
    }
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
        return HttpResponse::NotFound().json(error_body(
            404,
            &format!("Service \"{service}\" not found"),
            &[],
        ));
    }
    let message = match message(&body) {
        Ok(message) => message,
        Err(response) => return response,
    };
    let audience = match &service {
        Some(service) => Audience::Service(service),
        None => Audience::Everyone,
    };
    HttpResponse::Ok().json(json!({ "delivered": state.registry.send(audience, &message) }))
}
