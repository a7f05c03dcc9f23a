//! `GET /`: the debug page (embedded from `static/`, never read from the working directory),
//! or, with `Upgrade: websocket`, a custom-mode stream of the default service (the Esri
//! sample's `ws://localhost:8000`).

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::subscribe::start_custom;
use crate::session::transport;

const INDEX_HTML: &str = include_str!("../../static/index.html");

/// `GET /`.
pub async fn index(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if transport::is_upgrade(&req)
        && let Some(runtime) = state.default_service()
    {
        return start_custom(req, payload, &state, runtime);
    }
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(INDEX_HTML)
}
