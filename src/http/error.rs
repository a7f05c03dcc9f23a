//! `HttpError`: every refusal before an upgrade or on REST, as an HTTP status with an ArcGIS
//! style JSON body. One variant per cause the client sees.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::protocol::metadata::error_body;

/// A refused request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No service of that name (seed 003's 4404, refused before the upgrade).
    #[error("Service \"{0}\" not found")]
    UnknownService(String),
    /// A URL parameter is invalid (seed 003's 4400); one entry per problem.
    #[error("Invalid URL parameters: {}", .0.join(" "))]
    InvalidParameters(Vec<String>),
    /// The server is shutting down: come back later (503 with Retry-After). The ArcGIS SDK
    /// retries a refused upgrade with backoff, which carries it across a restart.
    #[error("The server is shutting down; retry shortly")]
    ShuttingDown,
    /// Auth is on and no token was given (seed 003's 4401, refused before the upgrade).
    #[error("Token required")]
    TokenRequired,
    /// The token is invalid, expired or not allowed for the service (seed 003's 4403).
    #[error("Token not allowed: {0}")]
    TokenForbidden(String),
    /// Past the connection cap (seed 002): 503 with Retry-After.
    #[error("Too many connections; retry later")]
    OverCapacity,
    /// Too many connection attempts from this address: 429 with Retry-After.
    #[error("Too many connection attempts; slow down")]
    RateLimited,
    /// A browser page from an origin that is not allowed.
    #[error("Origin {0} is not allowed to connect")]
    OriginRefused(String),
    /// No SSE session of this service holds that handle (or it has ended).
    #[error("SSE session not found")]
    SseSessionNotFound,
    /// The session may be on another node, and the NATS backbone is unavailable.
    #[error("The NATS backbone is unavailable; retry shortly")]
    BackboneUnavailable,
    /// The request names a host this server does not serve (DNS rebinding, a stray name).
    #[error("Host \"{0}\" is not served here (see FEATURESTREAM_ALLOWED_HOSTS)")]
    HostNotAllowed(String),
    /// `Upgrade: websocket` on a route that is not a WebSocket endpoint.
    #[error("WebSocket upgrades are accepted on WebSocket endpoints only")]
    UpgradeNotAllowed,
    /// The request body is too large, or did not arrive in time.
    #[error("{0}")]
    Body(#[from] BodyError),
    /// A plain request to a WebSocket-only endpoint.
    #[error("This endpoint accepts WebSocket connections only ({0})")]
    NotWebSocket(String),
}

/// Why a request body could not be read.
#[derive(Clone, Copy, Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the endpoint's limit.
    #[error("The request body is larger than {max_bytes} bytes")]
    TooLarge {
        /// The limit.
        max_bytes: usize,
    },
    /// Not all of it arrived within the body timeout.
    #[error("The request body did not arrive in time")]
    Timeout,
    /// The connection broke or the body was malformed.
    #[error("The request body is incomplete")]
    Incomplete,
}

impl BodyError {
    /// The status answering it.
    pub fn status(self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::Incomplete => StatusCode::BAD_REQUEST,
        }
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::UnknownService(_) | HttpError::SseSessionNotFound => StatusCode::NOT_FOUND,
            HttpError::InvalidParameters(_)
            | HttpError::NotWebSocket(_)
            | HttpError::UpgradeNotAllowed => StatusCode::BAD_REQUEST,
            HttpError::Body(error) => error.status(),
            HttpError::ShuttingDown | HttpError::OverCapacity | HttpError::BackboneUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            HttpError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            HttpError::OriginRefused(_)
            | HttpError::TokenForbidden(_)
            | HttpError::HostNotAllowed(_) => StatusCode::FORBIDDEN,
            HttpError::TokenRequired => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let details = match self {
            HttpError::InvalidParameters(problems) => problems.clone(),
            _ => Vec::new(),
        };
        let mut response = HttpResponse::build(status);
        match self {
            HttpError::ShuttingDown | HttpError::OverCapacity | HttpError::BackboneUnavailable => {
                response.insert_header(("Retry-After", "5"));
            }
            HttpError::RateLimited => {
                response.insert_header(("Retry-After", "1"));
            }
            _ => {}
        }
        response.json(error_body(status.as_u16(), &self.to_string(), &details))
    }
}
