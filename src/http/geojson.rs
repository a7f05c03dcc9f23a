//! The GeoJSON stream, for maps that are not built with the ArcGIS SDK (MapLibre, OpenLayers,
//! Leaflet, deck.gl): `GET /api/services/{name}/geojson` is a WebSocket when the request asks
//! for the upgrade and server-sent events otherwise. The same latest state, filters, limits
//! and replies as the ArcGIS streams; features in WGS84 as RFC 7946 `FeatureCollection`s whose
//! features carry the track id as `id` (docs/geojson.md).

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::error::HttpError;
use super::subscribe::{ParameterNames, Start, admit_stream, start_session};
use crate::broker::subscription::WireMode;
use crate::geometry::Wkid;
use crate::protocol::feature_result::Format;
use crate::session::transport;

/// The GeoJSON stream's names: `bbox` for the envelope (`minx,miny,maxx,maxy` in WGS84, or
/// any envelope form), `properties` for the attributes sent.
pub(crate) const GEOJSON: ParameterNames = ParameterNames {
    geometry: "bbox",
    out_fields: "properties",
};

/// `GET /api/services/{name}/geojson`.
pub async fn stream(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let outcome = accept(req, path, payload, &state);
    if let Err(err) = &outcome {
        state.count_attempt(&outcome);
        log::info!("GeoJSON stream refused: {err}");
    }
    outcome
}

fn accept(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    let (runtime, out_sr, filter_state, permit) = admit_stream(&req, state, &path, &GEOJSON)?;
    if out_sr != Wkid::Wgs84 {
        return Err(HttpError::InvalidParameters(vec![
            "outSR: a GeoJSON stream is in WGS84 (RFC 7946): leave outSR out or give 4326."
                .to_owned(),
        ]));
    }
    if !asks_for_websocket(&req) {
        return super::sse::start(
            &req,
            state,
            runtime,
            WireMode::GeoJsonSse,
            out_sr,
            filter_state,
            permit,
        );
    }
    if let Some(err) = transport::upgrade_error(&req) {
        return Err(HttpError::NotWebSocket(err));
    }
    start_session(
        req,
        payload,
        state,
        runtime,
        Start::Subscribed(Format::GeoJson, out_sr, Box::new(filter_state), permit),
    )
}

/// Whether the request asks to upgrade to a WebSocket (`Upgrade: websocket`); a broken
/// handshake is then answered as one, not as an event stream.
fn asks_for_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
}
