//! Ingest over HTTP and the broadcast WebSocket's admission (docs/protocol.md §9):
//! `POST /api/services/{name}/features` takes Esri JSON or GeoJSON (one document) or NDJSON
//! (one document per line, read and published line by line as a long body streams in), and
//! answers once every accepted feature is in the latest state and queued to the sessions that
//! select it. Publishing needs a publisher's (or an admin's) token for the service when auth
//! is on, and a caller on this machine when it is off.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::Value;

use super::AppState;
use super::body::BODY_TIMEOUT;
use super::error::{BodyError, HttpError};
use crate::auth::AuthDecision;
use crate::broker::ServiceRuntime;
use crate::ingest::{self, IngestError, NdjsonPosition, Report};
use crate::protocol::ingest_report::report_json;
use crate::protocol::metadata::error_body;

/// Why an ingest request is refused whole; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Admission, service lookup, body limits: as on every endpoint.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// A browser page of another site posts observations.
    #[error("Cross-site requests may not publish")]
    CrossSite,
    /// Auth is off and the caller is not on this machine.
    #[error("Publishing needs auth configured (a publisher token), or a caller on this machine")]
    NotLoopback,
    /// The body's content type is not JSON, GeoJSON or NDJSON.
    #[error(
        "Content-Type {0} is not accepted: send application/json, application/geo+json or application/x-ndjson"
    )]
    UnsupportedMediaType(String),
    /// The body (or an NDJSON line) is not features at all, or holds too many.
    #[error("{}{error}", line.map(|line| format!("line {line}: ")).unwrap_or_default())]
    Document {
        /// The NDJSON line, from 1.
        line: Option<usize>,
        /// What is wrong.
        error: IngestError,
        /// What the lines before it came to (they were published).
        report: Box<Report>,
    },
    /// The service's broker is gone (the server is stopping).
    #[error("The service is not taking observations now; retry shortly")]
    Unavailable,
    /// This node of a cluster has lost the NATS backbone, where observations are stored.
    #[error("The NATS backbone is unavailable, nothing can be stored; retry shortly")]
    BackboneUnavailable,
    /// The service's state directory cannot be written (FEATURESTREAM_STATE_DIR): nothing
    /// would be durable.
    #[error(
        "The latest state cannot be made durable ({}), nothing is accepted until it can; retry shortly",
        .0.message
    )]
    StateUnavailable(crate::latest::Fault),
}

impl ResponseError for PublishError {
    fn status_code(&self) -> StatusCode {
        match self {
            PublishError::Http(error) => error.status_code(),
            PublishError::CrossSite | PublishError::NotLoopback => StatusCode::FORBIDDEN,
            PublishError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PublishError::Document {
                error: IngestError::TooManyFeatures { .. },
                ..
            } => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::Document { .. } => StatusCode::BAD_REQUEST,
            PublishError::StateUnavailable(fault) if fault.no_space => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            PublishError::Unavailable
            | PublishError::BackboneUnavailable
            | PublishError::StateUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let PublishError::Http(error) = self {
            return error.error_response();
        }
        let status = self.status_code();
        let mut body = error_body(status.as_u16(), &self.to_string(), &[]);
        if let PublishError::Document { report, .. } = self
            && report.received > 0
            && let (Value::Object(body), Value::Object(counts)) = (&mut body, report_json(report))
        {
            // What earlier NDJSON lines came to: published, and said so.
            body.extend(counts);
        }
        let mut response = HttpResponse::build(status);
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        ) {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        response.json(body)
    }
}

/// A browser says where a request comes from: a page of another site may not publish (a
/// `text/plain` form needs no preflight). Non-browser callers send neither header.
fn check_same_site(req: &HttpRequest, state: &AppState) -> Result<(), PublishError> {
    super::admin::check_same_site(req, &state.client(req)).map_err(|_| PublishError::CrossSite)
}

/// The publish check for a service: a publisher's or admin's token when auth is on, a caller
/// on this machine when it is off; same-site browsers only; the ingest rate per address.
pub fn check_publisher(
    req: &HttpRequest,
    state: &AppState,
    service: &str,
) -> Result<(), PublishError> {
    check_same_site(req, state)?;
    let client = state.client(req);
    if state.config.auth.is_enabled() {
        match state
            .config
            .auth
            .check_publish(AppState::token(req).as_deref(), service)
        {
            AuthDecision::Allowed(_) => {}
            AuthDecision::Missing => return Err(HttpError::TokenRequired.into()),
            AuthDecision::Forbidden(reason) => {
                return Err(HttpError::TokenForbidden(reason).into());
            }
        }
    } else if !client.local {
        return Err(PublishError::NotLoopback);
    }
    state.admission.check_ingest_rate(&client)?;
    if state
        .backbone
        .as_ref()
        .is_some_and(|health| !health.is_connected())
    {
        return Err(PublishError::BackboneUnavailable);
    }
    Ok(())
}

/// How the body is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// One JSON document (Esri JSON or GeoJSON, told apart by shape).
    Document,
    /// One document per line.
    Lines,
}

fn framing(req: &HttpRequest) -> Result<Framing, PublishError> {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(Framing::Document);
    };
    let text = content_type.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = text.split(';').next().unwrap_or("").trim();
    match essence {
        "application/json" | "application/geo+json" | "text/json" | "" => Ok(Framing::Document),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/geo+json-seq" => Ok(Framing::Lines),
        _ => Err(PublishError::UnsupportedMediaType(
            essence.chars().take(80).collect(),
        )),
    }
}

/// `POST /api/services/{name}/features`.
pub async fn features(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let runtime = super::subscribe::lookup(&state, &path)?;
    check_publisher(&req, &state, &runtime.service.name)?;
    if let Some(fault) = runtime.durability_fault() {
        return Err(PublishError::StateUnavailable(fault));
    }
    let framing = framing(&req)?;
    let limits = &state.config.ingest;
    let mut report = Report::default();
    match framing {
        Framing::Document => {
            let body = super::body::read(payload, limits.max_body_bytes)
                .await
                .map_err(HttpError::from)?;
            let text = std::str::from_utf8(&body).map_err(|_| PublishError::Document {
                line: None,
                error: IngestError::Document(ingest::DocumentError::NotJson(
                    "the body is not UTF-8".into(),
                )),
                report: Box::default(),
            })?;
            let received_ms = crate::broker::now_ms();
            let mut ingested = ingest::parse_document(
                text,
                &runtime.service.schema,
                received_ms,
                0,
                limits.max_features,
            )
            .map_err(|error| refused(&runtime, None, error, &report))?;
            let receipt = runtime.publish(&mut ingested, received_ms);
            runtime
                .settle(&mut report, ingested, receipt, limits.max_tracks)
                .await
                .map_err(|_| PublishError::Unavailable)?;
        }
        Framing::Lines => {
            stream_lines(&runtime, payload, &state, &mut report).await?;
        }
    }
    Ok(HttpResponse::Ok().json(report_json(&report)))
}

fn refused(
    runtime: &ServiceRuntime,
    line: Option<usize>,
    error: IngestError,
    report: &Report,
) -> PublishError {
    runtime
        .ingest
        .refused_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PublishError::Document {
        line,
        error,
        report: Box::new(report.clone()),
    }
}

/// Reads an NDJSON body as it arrives: every complete line is parsed and published at once (a
/// publisher may stream for as long as it sends; each chunk must come within the body
/// timeout), at most `max_body_bytes` and `max_features` per line.
async fn stream_lines(
    runtime: &ServiceRuntime,
    mut payload: web::Payload,
    state: &AppState,
    report: &mut Report,
) -> Result<(), PublishError> {
    let limits = &state.config.ingest;
    let mut buffer = BytesMut::new();
    let mut position = NdjsonPosition::default();
    let mut finished = false;
    let mut pending = std::collections::VecDeque::new();
    // A line must arrive whole within the body timeout (a client that sends a byte now and
    // then holds its connection no longer than a whole body may take).
    let mut line_deadline: Option<tokio::time::Instant> = None;
    while !finished {
        let deadline = line_deadline.unwrap_or_else(|| tokio::time::Instant::now() + BODY_TIMEOUT);
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => return Err(HttpError::Body(BodyError::Timeout).into()),
            Ok(None) => {
                finished = true;
                None
            }
            Ok(Some(Err(_))) => return Err(HttpError::Body(BodyError::Incomplete).into()),
            Ok(Some(Ok(chunk))) => Some(chunk),
        };
        // Only the new bytes are searched: the buffer before them holds no newline.
        let searched_from = buffer.len();
        if let Some(chunk) = chunk {
            buffer.extend_from_slice(&chunk);
        }
        let complete = if finished {
            buffer.len()
        } else {
            match memchr::memrchr(b'\n', &buffer[searched_from..]) {
                Some(end) => {
                    line_deadline = None;
                    searched_from + end + 1
                }
                None if buffer.len() > limits.max_body_bytes => {
                    return Err(HttpError::Body(BodyError::TooLarge {
                        max_bytes: limits.max_body_bytes,
                    })
                    .into());
                }
                None => {
                    line_deadline.get_or_insert(deadline);
                    continue;
                }
            }
        };
        let lines = buffer.split_to(complete);
        let text = std::str::from_utf8(&lines).map_err(|_| {
            refused(
                runtime,
                Some(position.lines + 1),
                IngestError::Document(ingest::DocumentError::NotJson("a line is not UTF-8".into())),
                report,
            )
        })?;
        if text.lines().any(|line| line.len() > limits.max_body_bytes) {
            return Err(HttpError::Body(BodyError::TooLarge {
                max_bytes: limits.max_body_bytes,
            })
            .into());
        }
        let received_ms = crate::broker::now_ms();
        let (mut ingested, stopped) = ingest::parse_ndjson(
            text,
            &runtime.service.schema,
            received_ms,
            limits.max_features,
            &mut position,
        );
        // The lines before a bad one are published either way, and the answer says so.
        let receipt = runtime.publish(&mut ingested, received_ms);
        pending.push_back((ingested, receipt));
        // Reading goes on while the broker records (a line does not wait for the previous
        // one's fan-out); past a bound the oldest receipt is awaited first.
        let must_settle = if stopped.is_some() || finished {
            pending.len()
        } else {
            pending.len().saturating_sub(MAX_UNSETTLED)
        };
        for _ in 0..must_settle {
            let Some((ingested, receipt)) = pending.pop_front() else {
                break;
            };
            runtime
                .settle(report, ingested, receipt, limits.max_tracks)
                .await
                .map_err(|_| PublishError::Unavailable)?;
        }
        if let Some((line, error)) = stopped {
            return Err(refused(runtime, Some(line), error, report));
        }
    }
    Ok(())
}

/// Chunks of a streamed NDJSON body published but not yet confirmed by the broker.
const MAX_UNSETTLED: usize = 64;
