//! The two WebSocket endpoints: ArcGIS `/subscribe` (every URL parameter validated before the
//! upgrade, so that a refusal is an HTTP status the SDK backs off from, docs/protocol.md §6) and
//! custom mode (`/` and `/arcgis/ws/services/{name}/custom`, seed 000).

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::admission::Admitted;
use super::admission::ConnectionSlot;
use super::cookie::{browser_session, remember};
use super::error::HttpError;
use crate::broker::ServiceRuntime;
use crate::broker::queue::OutboundQueue;
use crate::broker::subscription::{Deflate, WireMode};
use crate::filter::WherePermit;
use crate::filter::{FilterError, FilterState, FilterUpdate, OutFields, OutFieldsInput, Patch};
use crate::geometry::{SUPPORTED_WKIDS, SpatialRel, Wkid};
use crate::protocol::close::CloseCause;
use crate::protocol::envelope_json;
use crate::protocol::feature_result::Format;
use crate::session::transport;
use crate::session::{SessionActor, SessionParts};
use std::sync::atomic::Ordering;

/// The subscribe URL's parameters, names matched case-insensitively as ArcGIS does.
pub(crate) struct SubscribeQuery {
    pairs: Vec<(String, String)>,
}

impl SubscribeQuery {
    pub(crate) fn parse(query: &str) -> Result<SubscribeQuery, HttpError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query).map_err(|err| {
            HttpError::InvalidParameters(vec![format!("the query string cannot be decoded: {err}")])
        })?;
        Ok(SubscribeQuery {
            pairs: pairs.into_inner(),
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What a stream's URL calls its envelope and its attribute selection.
pub(crate) struct ParameterNames {
    /// The envelope filter (`geometry`; a GeoJSON stream's `bbox`).
    pub geometry: &'static str,
    /// The attributes sent (`outFields`; a GeoJSON stream's `properties`).
    pub out_fields: &'static str,
}

/// The ArcGIS streams' names (`/subscribe`, `/events`).
pub(crate) const ARCGIS: ParameterNames = ParameterNames {
    geometry: "geometry",
    out_fields: "outFields",
};

/// Validates outSR, where, the envelope, spatialRel and the attribute selection (named as
/// `names` says); every problem is prefixed with the parameter it came from.
pub(crate) fn validate(
    query: &SubscribeQuery,
    runtime: &ServiceRuntime,
    state: &AppState,
    names: &ParameterNames,
) -> Result<(Wkid, FilterState, Option<WherePermit>), HttpError> {
    let schema = &runtime.service.schema;
    let limits = state.config.session.filter_limits;
    let mut problems = Vec::new();
    let blame = |problems: &mut Vec<String>, parameter: &str, errors: Vec<FilterError>| {
        problems.extend(errors.iter().map(|err| format!("{parameter}: {err}")));
    };
    let out_sr = match query
        .get("outSR")
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        None => schema.wkid,
        Some(text) => match text.parse::<i64>() {
            Ok(number) => Wkid::from_number(number).unwrap_or_else(|err| {
                problems.push(format!("outSR: {err}"));
                Wkid::Wgs84
            }),
            Err(_) => {
                problems.push(format!(
                    "outSR: \"{text}\" is not a wkid; supported wkids: {SUPPORTED_WKIDS}."
                ));
                Wkid::Wgs84
            }
        },
    };
    let where_clause = match query.get("where") {
        Some(text) => {
            if let Err(errors) =
                FilterState::default().apply(only_where(text), schema, out_sr, limits)
            {
                blame(&mut problems, "where", errors);
            }
            Patch::Set(text.to_owned())
        }
        None => Patch::Keep,
    };
    let geometry = match query.get(names.geometry).map(envelope_json::decode_text) {
        None | Some(Ok(None)) => Patch::Keep,
        Some(Ok(Some(input))) => {
            if let Err(err) = input.resolve(out_sr) {
                blame(&mut problems, names.geometry, vec![err.into()]);
            }
            Patch::Set(input)
        }
        Some(Err(err)) => {
            blame(&mut problems, names.geometry, vec![err]);
            Patch::Keep
        }
    };
    let spatial_rel = match query
        .get("spatialRel")
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        None => Patch::Keep,
        Some(text) => match SpatialRel::parse(text) {
            Some(relation) => Patch::Set(relation),
            None => {
                blame(
                    &mut problems,
                    "spatialRel",
                    vec![FilterError::InvalidSpatialRel(
                        text.chars().take(64).collect(),
                    )],
                );
                Patch::Keep
            }
        },
    };
    let out_fields = match query.get(names.out_fields) {
        Some(text) => {
            if let Err(errors) = OutFields::parse_list(schema, text) {
                blame(&mut problems, names.out_fields, errors);
            }
            Patch::Set(OutFieldsInput::List(text.to_owned()))
        }
        None => Patch::Keep,
    };
    if !problems.is_empty() {
        return Err(HttpError::InvalidParameters(problems));
    }
    let update = FilterUpdate::Parts {
        where_clause,
        geometry,
        spatial_rel,
        out_fields,
    };
    let mut filter_state = FilterState::default();
    filter_state
        .apply(update, schema, out_sr, limits)
        .map_err(|errors| {
            HttpError::InvalidParameters(errors.iter().map(ToString::to_string).collect())
        })?;
    let permit = crate::session::admit(runtime, &filter_state)
        .map_err(|err| HttpError::InvalidParameters(vec![format!("where: {err}")]))?;
    Ok((out_sr, filter_state, permit))
}

/// What every stream with URL filters checks before it starts, in order: the server takes
/// sessions, the client is admitted, the service exists, the token may read it, and the
/// parameters (named as `names` says) are valid; the service, output reference, filter state
/// and the where clause's share of the service's budget.
pub(crate) fn admit_stream(
    req: &HttpRequest,
    state: &AppState,
    service: &str,
    names: &ParameterNames,
) -> Result<(Arc<ServiceRuntime>, Wkid, FilterState, Option<WherePermit>), HttpError> {
    state.check_accepting()?;
    state.admission.screen(req, &state.client(req))?;
    let runtime = lookup(state, service)?;
    state.check_token(req, &runtime.service.name)?;
    let query = SubscribeQuery::parse(req.query_string())?;
    let (out_sr, filter_state, permit) = validate(&query, &runtime, state, names)?;
    Ok((runtime, out_sr, filter_state, permit))
}

fn only_where(text: &str) -> FilterUpdate {
    FilterUpdate::Parts {
        where_clause: Patch::Set(text.to_owned()),
        geometry: Patch::Keep,
        spatial_rel: Patch::Keep,
        out_fields: Patch::Keep,
    }
}

pub(crate) fn lookup(state: &AppState, name: &str) -> Result<Arc<ServiceRuntime>, HttpError> {
    state
        .services
        .get(name)
        .cloned()
        .ok_or_else(|| HttpError::UnknownService(name.chars().take(64).collect()))
}

/// What every new session starts with, WebSocket or SSE: an id, its bounded queue, limits.
pub(crate) fn session_parts(
    req: &HttpRequest,
    state: &AppState,
    runtime: Arc<ServiceRuntime>,
    slot: ConnectionSlot,
    cookie: Option<String>,
) -> SessionParts {
    let settings = state.config.session.clone();
    // Compressed frames for a client that offers permessage-deflate in a form we honour.
    let offers = req
        .headers()
        .get_all(actix_web::http::header::SEC_WEBSOCKET_EXTENSIONS)
        .filter_map(|value| value.to_str().ok());
    let deflate = match settings.compression {
        Deflate::Level(_) if crate::protocol::deflate::accepts(offers) => settings.compression,
        _ => Deflate::Off,
    };
    SessionParts {
        deflate,
        id: state.next_session_id(),
        service: runtime,
        queue: OutboundQueue::new(settings.queue_bytes),
        settings,
        peer: peer(req),
        slot,
        cookie,
        registry: state.registry.clone(),
    }
}

fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown peer".to_owned(), |addr| addr.to_string())
}

/// `GET /arcgis/ws/services/{name}/StreamServer/subscribe`.
pub async fn subscribe(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let outcome = accept_subscribe(req, path, payload, &state);
    if let Err(err) = &outcome {
        state.count_attempt(&outcome);
        log::info!("subscribe refused: {err}");
    }
    outcome
}

fn accept_subscribe(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    let (runtime, out_sr, filter_state, permit) = admit_stream(&req, state, &path, &ARCGIS)?;
    if let Some(err) = transport::upgrade_error(&req) {
        return Err(HttpError::NotWebSocket(err));
    }
    start_session(
        req,
        payload,
        state,
        runtime,
        Start::Subscribed(Format::Esri, out_sr, Box::new(filter_state), permit),
    )
}

/// How a new WebSocket session begins.
pub(crate) enum Start {
    /// Server mode (Esri JSON) or a GeoJSON stream: URL parameters already validated.
    Subscribed(Format, Wkid, Box<FilterState>, Option<WherePermit>),
    /// Custom mode: waits for the handshake.
    Custom,
    /// The broadcast endpoint: a publisher.
    Publish {
        /// Acknowledge every message.
        acknowledge: bool,
    },
}

/// Takes a connection slot, starts the session actor on the request's frames and answers 101
/// (setting the browser session cookie when it is new).
pub(crate) fn start_session(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    runtime: Arc<ServiceRuntime>,
    start: Start,
) -> Result<HttpResponse, HttpError> {
    let slot = match state.admission.acquire()? {
        Admitted::Slot(slot) => slot,
        Admitted::CloseOverCap => return Ok(close_over_cap(&req, state)),
    };
    state.connections.accepted.fetch_add(1, Ordering::Relaxed);
    let browser = browser_session(&req);
    let mut parts = session_parts(&req, state, runtime, slot, Some(browser.id.clone()));
    if let Start::Publish { .. } = start {
        // A publisher's messages are documents of observations, limited as ingest requests
        // are (size, features, rate), not as filter messages.
        parts.settings.max_frame_bytes = state.config.ingest.max_body_bytes;
        parts.settings.message_rate = None;
    }
    let deflate = parts.deflate != Deflate::Off;
    let frames = transport::inbound_frames(payload, parts.settings.max_frame_bytes, deflate);
    let queue = parts.queue.clone();
    let session = match start {
        Start::Subscribed(format, out_sr, filter_state, permit) => {
            let mode = match format {
                Format::Esri => WireMode::Server(parts.deflate),
                Format::GeoJson => WireMode::GeoJson(parts.deflate),
            };
            SessionActor::subscribed(parts, mode, out_sr, *filter_state, permit)
        }
        Start::Custom => SessionActor::custom(parts),
        Start::Publish { acknowledge } => {
            let ingest = &state.config.ingest;
            SessionActor::publisher(
                parts,
                crate::session::Publishing {
                    acknowledge,
                    sequence: 0,
                    budget: crate::session::MessageBudget::new(state.config.admission.ingest_rate),
                    max_features: ingest.max_features,
                    max_tracks: ingest.max_tracks,
                },
            )
        }
    };
    SessionActor::create(|ctx| {
        ctx.add_stream(frames);
        session
    });
    let mut response = transport::switching_protocols(&req, queue, deflate);
    remember(&req, &mut response, &browser);
    Ok(response)
}

/// Seed 002's over-cap behaviour: accept the upgrade, then close with 1013 at once.
fn close_over_cap(req: &HttpRequest, state: &AppState) -> HttpResponse {
    state
        .connections
        .over_capacity
        .fetch_add(1, Ordering::Relaxed);
    let queue = OutboundQueue::new(4096);
    queue.close(Some(CloseCause::TryAgainLater.frame()));
    transport::switching_protocols(req, queue, false)
}

/// Custom mode for a named service.
pub async fn custom(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let outcome = state
        .check_accepting()
        .and_then(|()| state.admission.screen(&req, &state.client(&req)))
        .and_then(|()| lookup(&state, &path))
        .and_then(|runtime| {
            state
                .check_token(&req, &runtime.service.name)
                .map(|()| runtime)
        })
        .and_then(|runtime| match transport::upgrade_error(&req) {
            Some(err) => Err(HttpError::NotWebSocket(err)),
            None => Ok(runtime),
        })
        .and_then(|runtime| admit_custom(req, payload, &state, runtime));
    if let Err(err) = &outcome {
        state.count_attempt(&outcome);
        log::info!("custom-mode upgrade refused: {err}");
    }
    outcome
}

/// Admits and starts a custom-mode session on an acceptable upgrade request.
pub fn admit_custom(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    runtime: Arc<ServiceRuntime>,
) -> Result<HttpResponse, HttpError> {
    start_session(req, payload, state, runtime, Start::Custom)
}

/// `GET /arcgis/ws/services/{name}/StreamServer/broadcast` (the ArcGIS endpoint's path): a
/// publisher's WebSocket. Admitted like any upgrade, plus the publish right (docs/protocol.md
/// §9); `ack=true` asks for an acknowledgement of every message.
pub async fn broadcast(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, super::ingest::PublishError> {
    state.check_accepting()?;
    state.admission.screen(&req, &state.client(&req))?;
    let runtime = lookup(&state, &path)?;
    super::ingest::check_publisher(&req, &state, &runtime.service.name)?;
    let query = SubscribeQuery::parse(req.query_string())?;
    let acknowledge = match query.get("ack").map(str::trim) {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(HttpError::InvalidParameters(vec![format!(
                "ack: \"{}\" is not true or false.",
                other.chars().take(40).collect::<String>()
            )])
            .into());
        }
    };
    if let Some(err) = transport::upgrade_error(&req) {
        return Err(HttpError::NotWebSocket(err).into());
    }
    Ok(start_session(
        req,
        payload,
        &state,
        runtime,
        Start::Publish { acknowledge },
    )?)
}
