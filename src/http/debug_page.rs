//! `GET /`: the debug page (embedded from `static/`, never read from the working directory),
//! or, with `Upgrade: websocket`, a custom-mode stream of the default service (the Esri
//! sample's `ws://localhost:8000`).

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::subscribe::admit_custom;
use crate::session::transport;

const INDEX_HTML: &str = include_str!("../../static/index.html");
const EXAMPLE_HTML: &str = include_str!("../../static/examples/streamlayer.html");
const EXAMPLE_JS: &str = include_str!("../../static/examples/streamlayer.js");
const MAPLIBRE_HTML: &str = include_str!("../../static/examples/maplibre.html");
const MAPLIBRE_JS: &str = include_str!("../../static/examples/maplibre.js");

/// `GET /examples/{file}`: the StreamLayer example page (SDK from Esri's CDN), the MapLibre
/// GL JS example page (from unpkg), and their logic.
pub async fn example(path: web::Path<String>) -> HttpResponse {
    let script = |body: &'static str| {
        HttpResponse::Ok()
            .content_type("text/javascript; charset=utf-8")
            .insert_header(("Access-Control-Allow-Origin", "*"))
            .body(body)
    };
    match path.as_str() {
        "streamlayer.html" => HttpResponse::Ok()
            .content_type(ContentType::html())
            .body(EXAMPLE_HTML),
        "streamlayer.js" => script(EXAMPLE_JS),
        "maplibre.html" => HttpResponse::Ok()
            .content_type(ContentType::html())
            .body(MAPLIBRE_HTML),
        "maplibre.js" => script(MAPLIBRE_JS),
        _ => HttpResponse::NotFound().json(crate::protocol::metadata::error_body(
            404,
            "Not found",
            &[],
        )),
    }
}

/// `GET /api/services/{name}/routes`: the simulator's routes as a GeoJSON FeatureCollection of
/// LineStrings (WGS84, `name` in properties), which the debug page draws faintly; 404 for a
/// service without a simulator.
pub async fn routes(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let not_found = |message: String| {
        HttpResponse::NotFound().json(crate::protocol::metadata::error_body(404, &message, &[]))
    };
    let Some(runtime) = state.services.get(path.as_str()) else {
        return not_found(format!("Service \"{path}\" not found"));
    };
    let Some(simulator) = &runtime.service.simulator else {
        return not_found(format!("Service \"{path}\" is not simulated"));
    };
    let features: Vec<serde_json::Value> = simulator
        .routes_wgs84()
        .into_iter()
        .map(|(name, vertices)| {
            serde_json::json!({
                "type": "Feature",
                "properties": { "name": name },
                "geometry": { "type": "LineString", "coordinates": vertices },
            })
        })
        .collect();
    HttpResponse::Ok()
        .json(serde_json::json!({ "type": "FeatureCollection", "features": features }))
}

/// `GET /`.
pub async fn index(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if transport::is_upgrade(&req)
        && let Some(runtime) = state.default_service()
    {
        let outcome = state
            .check_accepting()
            .and_then(|()| state.admission.screen(&req, &state.client(&req)))
            .and_then(|()| state.check_token(&req, &runtime.service.name));
        return match outcome.and_then(|()| admit_custom(req, payload, &state, runtime)) {
            Ok(response) => response,
            Err(err) => {
                let response = actix_web::ResponseError::error_response(&err);
                state.count_attempt::<()>(&Err(err));
                response
            }
        };
    }
    // The page sets the browser session cookie that its sockets then carry (seed 001).
    let browser = super::cookie::browser_session(&req);
    let mut response = HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(INDEX_HTML);
    super::cookie::remember(&req, &mut response, &browser);
    response
}
