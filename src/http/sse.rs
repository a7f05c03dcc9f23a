//! SSE endpoints (seed 002): `GET /api/services/{name}/events` with the same query parameters,
//! token check and filter semantics as `/subscribe`, and
//! `POST /api/services/{name}/events/{handle}/filter` behind the same token check, for the
//! session of that service holding that random handle only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::{Actor, Addr};
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::admission::Admitted;
use super::body;
use super::error::HttpError;
use super::subscribe::{ARCGIS, admit_stream, lookup, session_parts};
use crate::broker::subscription::WireMode;
use crate::session::sse_stream::{ApplyFilter, SseHandle, SseSessionActor};
use crate::session::transport;

/// A live SSE session: the service it streams and its actor.
struct SseEntry {
    service: String,
    address: Addr<SseSessionActor>,
}

/// Live SSE sessions by handle, for filter updates.
#[derive(Clone, Default)]
pub struct SseRegistry(Arc<Mutex<HashMap<SseHandle, SseEntry>>>);

impl SseRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SseHandle, SseEntry>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session holding `handle` (as a client sent it), if it streams `service`.
    pub fn find_for(&self, service: &str, handle: &str) -> Option<Addr<SseSessionActor>> {
        self.find(service, &SseHandle::from_client(handle))
    }

    /// The session holding `handle`, if it streams `service`.
    fn find(&self, service: &str, handle: &SseHandle) -> Option<Addr<SseSessionActor>> {
        self.lock()
            .get(handle)
            .filter(|entry| entry.service == service)
            .map(|entry| entry.address.clone())
    }
}

/// `GET /api/services/{name}/events`.
pub async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (runtime, out_sr, filter_state, permit) = admit_stream(&req, &state, &path, &ARCGIS)?;
    start(
        &req,
        &state,
        runtime,
        WireMode::Sse,
        out_sr,
        filter_state,
        permit,
    )
}

/// Starts an SSE session in `mode` whose parameters were validated: takes a connection slot,
/// registers its handle and answers with its event stream.
pub(crate) fn start(
    req: &HttpRequest,
    state: &AppState,
    runtime: Arc<crate::broker::ServiceRuntime>,
    mode: WireMode,
    out_sr: crate::geometry::Wkid,
    filter_state: crate::filter::FilterState,
    permit: Option<crate::filter::WherePermit>,
) -> Result<HttpResponse, HttpError> {
    let Admitted::Slot(slot) = state.admission.acquire()? else {
        return Err(HttpError::OverCapacity);
    };
    let service = runtime.service.name.clone();
    let parts = session_parts(req, state, runtime, slot, None);
    let queue = parts.queue.clone();
    let handle = match &state.control {
        // In a cluster, the handle names its node, so that any node can pass an update on.
        Some(control) => SseHandle::tagged(control.tag()),
        None => SseHandle::random(),
    };
    let unregister = {
        let registry = state.sse_sessions.clone();
        Box::new(move |handle: &SseHandle| {
            registry.lock().remove(handle);
        })
    };
    let address = SseSessionActor::new(
        parts,
        mode,
        handle.clone(),
        out_sr,
        filter_state,
        permit,
        unregister,
    )
    .start();
    state
        .sse_sessions
        .lock()
        .insert(handle, SseEntry { service, address });
    Ok(transport::event_stream(queue))
}

/// `POST /api/services/{name}/events/{handle}/filter` with `{"filter": ...}`: 200 with the
/// filter reply, 429 with it when over the session's filter-message rate.
pub async fn filter(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (name, handle) = path.into_inner();
    let runtime = lookup(&state, &name)?;
    state.check_token(&req, &runtime.service.name)?;
    let body = body::read(payload, state.config.session.max_frame_bytes).await?;
    // Not UTF-8: answered like any undecodable filter message.
    let body = String::from_utf8_lossy(&body).into_owned();
    let address = state
        .sse_sessions
        .find(&runtime.service.name, &SseHandle::from_client(&handle));
    let answer = match (address, &state.control) {
        (Some(address), _) => address
            .send(ApplyFilter { text: body })
            .await
            .map_err(|_| HttpError::SseSessionNotFound)?,
        (None, None) => return Err(HttpError::SseSessionNotFound),
        // Held by another node of the cluster, maybe.
        (None, Some(control)) => {
            use crate::cluster::control::ControlError;
            let answer = control
                .update_sse_filter_elsewhere(&runtime.service.name, &handle, body)
                .await
                .map_err(|err| match err {
                    ControlError::NotFound => HttpError::SseSessionNotFound,
                    ControlError::Unavailable => HttpError::BackboneUnavailable,
                })?;
            crate::session::sse_stream::FilterAnswer {
                reply: answer.reply,
                rate_limited: answer.rate_limited,
            }
        }
    };
    let mut response = if answer.rate_limited {
        let mut response = HttpResponse::TooManyRequests();
        response.insert_header(("Retry-After", "1"));
        response
    } else {
        HttpResponse::Ok()
    };
    Ok(response.content_type("application/json").body(answer.reply))
}
