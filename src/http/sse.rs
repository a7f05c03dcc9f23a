//! SSE endpoints (seed 002): `GET /api/services/{name}/events` with the same query parameters
//! and filter semantics as `/subscribe`, and `POST .../events/{session}/filter`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::{Actor, Addr};
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::admission::Admitted;
use super::error::HttpError;
use super::subscribe::{SubscribeQuery, lookup, validate};
use crate::broker::SessionId;
use crate::protocol::metadata::error_body;
use crate::session::sse_stream::{ApplyFilter, SseSessionActor};
use crate::session::transport::{self, OutboundQueue};

/// Live SSE sessions by id, for filter updates.
pub type SseRegistry = Arc<Mutex<HashMap<SessionId, Addr<SseSessionActor>>>>;

/// `GET /api/services/{name}/events`.
pub async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    state.check_accepting()?;
    state.admission.screen(&req)?;
    let runtime = lookup(&state, &path)?;
    state.check_token(&req, &runtime.service.name)?;
    let query = SubscribeQuery::parse(req.query_string())?;
    let (out_sr, filter_state) = validate(&query, &runtime, &state)?;
    let Admitted::Slot(slot) = state.admission.acquire()? else {
        return Err(HttpError::OverCapacity);
    };
    let settings = state.config.session.clone();
    let queue = OutboundQueue::new(settings.queue_bytes);
    let id = state.next_session_id();
    let registry = state.sse_sessions.clone();
    let unregister = {
        let registry = registry.clone();
        Box::new(move |id: SessionId| {
            registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&id);
        })
    };
    let session = SseSessionActor::new(
        id,
        runtime,
        settings,
        queue.clone(),
        out_sr,
        filter_state,
        slot,
        unregister,
    );
    let address = session.start();
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(id, address);
    Ok(transport::event_stream(queue))
}

/// `POST /api/services/{name}/events/{session}/filter` with `{"filter": ...}`.
pub async fn filter(
    path: web::Path<(String, u64)>,
    body: String,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (_, session) = path.into_inner();
    let address = state
        .sse_sessions
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&SessionId(session))
        .cloned();
    let Some(address) = address else {
        return HttpResponse::NotFound().json(error_body(
            404,
            &format!("SSE session {session} not found"),
            &[],
        ));
    };
    match address.send(ApplyFilter { text: body }).await {
        Ok(reply) => HttpResponse::Ok()
            .content_type("application/json")
            .body(reply),
        Err(_) => HttpResponse::NotFound().json(error_body(
            404,
            &format!("SSE session {session} has ended"),
            &[],
        )),
    }
}
