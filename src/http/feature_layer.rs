//! The latest state as an ArcGIS feature layer (docs/protocol.md §10):
//! `.../FeatureServer`, `.../FeatureServer/0` and `.../FeatureServer/0/query` (GET, or POST
//! form). The stream metadata's `keepLatestArchive.featuresUrl` points here, so a server-mode
//! `StreamLayer` draws every live track before its socket opens. Errors are ArcGIS REST error
//! bodies naming the parameter (HTTP 200, as ArcGIS answers them).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::{Value, json};

use super::AppState;
use super::error::HttpError;
use crate::auth::AuthDecision;
use crate::broker::ServiceRuntime;
use crate::broker::archive::{Answer, ArchiveQuery, ArchiveResult, ClientKey, MAX_SORT_KEYS};
use crate::broker::subscription::{Subscription, WireMode};
use crate::filter::{FilterState, FilterUpdate, OutFields, OutFieldsInput, Patch};
use crate::geometry::{SpatialRel, Wkid};
use crate::protocol::envelope_json;
use crate::protocol::feature_layer;
use crate::protocol::metadata::error_body;
use std::sync::Arc;

/// Largest POST form body of a query (long `objectIds` lists, long where clauses).
const MAX_FORM_BYTES: usize = 1 << 20;
/// Most a `maxRecordCountFactor` may multiply `maxRecordCount` by (as ArcGIS).
const MAX_FACTOR: usize = 5;

/// Why a feature layer request is refused; each is an ArcGIS REST error body (HTTP 200, as
/// ArcGIS answers them: `{"error":{"code","message","details"}}`).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// No such service (404).
    #[error("{0}")]
    UnknownService(String),
    /// Auth is on and no token came (499).
    #[error("Token Required")]
    TokenRequired,
    /// The token is not valid for this service (498).
    #[error("Invalid Token")]
    InvalidToken,
    /// A layer id other than 0 (400).
    #[error("Invalid or missing input parameters.")]
    NoSuchLayer(String),
    /// Parameters that cannot be used, each naming its parameter (400).
    #[error("Unable to complete operation.")]
    InvalidParameters(Vec<String>),
    /// The form body is too large or too slow (413, 408, 400).
    #[error("{0}")]
    Body(super::error::BodyError),
    /// The service's broker is gone (shutting down) (500).
    #[error("The service is not running.")]
    Unavailable,
    /// The client asks faster than `FEATURESTREAM_QUERY_RATE` (HTTP 429, Retry-After).
    #[error("Too many requests: this client is over its query rate; retry after a second.")]
    RateLimited,
}

impl LayerError {
    fn code(&self) -> u16 {
        match self {
            LayerError::UnknownService(_) => 404,
            LayerError::TokenRequired => 499,
            LayerError::InvalidToken => 498,
            LayerError::NoSuchLayer(_) | LayerError::InvalidParameters(_) => 400,
            LayerError::Body(error) => error.status().as_u16(),
            LayerError::Unavailable => 500,
            LayerError::RateLimited => 429,
        }
    }
}

impl actix_web::ResponseError for LayerError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            // Not a request error but load: clients and proxies back off on a real 429.
            LayerError::RateLimited => actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            _ => actix_web::http::StatusCode::OK,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let LayerError::RateLimited = self {
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "1"))
                .json(error_body(self.code(), &self.to_string(), &[]));
        }
        let details = match self {
            LayerError::InvalidParameters(details) => details.clone(),
            LayerError::NoSuchLayer(layer) => {
                vec![format!(
                    "Layer {layer} does not exist; this service has layer 0."
                )]
            }
            _ => Vec::new(),
        };
        HttpResponse::Ok().json(error_body(self.code(), &self.to_string(), &details))
    }
}

fn check_layer(layer: &str) -> Result<(), LayerError> {
    if layer == feature_layer::LAYER_ID.to_string() {
        Ok(())
    } else {
        Err(LayerError::NoSuchLayer(layer.chars().take(20).collect()))
    }
}

/// The service, if the request may read it (unknown service, token).
pub(crate) fn admit(
    req: &HttpRequest,
    state: &AppState,
    name: &str,
) -> Result<Arc<ServiceRuntime>, LayerError> {
    state
        .admission
        .check_query_rate(&state.client(req))
        .map_err(|_| LayerError::RateLimited)?;
    let Some(runtime) = state.services.get(name) else {
        let error = HttpError::UnknownService(name.chars().take(64).collect());
        return Err(LayerError::UnknownService(error.to_string()));
    };
    // The SDK does not put the layer's token on this request: a client attaches its
    // credentials itself (docs/protocol.md §10): `token` parameter or `Authorization: Bearer`.
    match state
        .config
        .auth
        .check(AppState::token(req).as_deref(), Some(&runtime.service.name))
    {
        AuthDecision::Allowed(_) => Ok(runtime.clone()),
        AuthDecision::Missing => Err(LayerError::TokenRequired),
        AuthDecision::Forbidden(_) => Err(LayerError::InvalidToken),
    }
}

pub(crate) async fn extent(
    state: &AppState,
    runtime: &Arc<ServiceRuntime>,
) -> Result<Option<crate::geometry::Envelope>, LayerError> {
    let query = ArchiveQuery {
        filter: unfiltered(runtime),
        object_ids: None,
        order_by: Vec::new(),
        answer: Answer::Extent,
    };
    match run(state, runtime, query, None, |result| result).await? {
        ArchiveResult::Extent(extent) => Ok(extent),
        _ => Ok(None),
    }
}

/// Runs a query of the latest state in the query pool (`AppState::query_slots`), never on
/// the broker's thread, and turns its result into what `answer` makes of it there too.
pub(crate) async fn run<T: Send + 'static>(
    state: &AppState,
    runtime: &Arc<ServiceRuntime>,
    query: ArchiveQuery,
    client: ClientKey,
    answer: impl FnOnce(ArchiveResult) -> T + Send + 'static,
) -> Result<T, LayerError> {
    let _slot = state
        .query_slots
        .acquire()
        .await
        .map_err(|_| LayerError::Unavailable)?;
    let archive = runtime.archive.clone();
    let result = web::block(move || {
        archive
            .run(&query, client, std::time::Instant::now())
            .map(answer)
    })
    .await
    .map_err(|_| LayerError::Unavailable)?;
    result.map_err(|expired| LayerError::InvalidParameters(vec![expired.to_string()]))
}

fn unfiltered(runtime: &ServiceRuntime) -> Subscription {
    let schema = &runtime.service.schema;
    Subscription::new(
        WireMode::Custom(Default::default()),
        schema.wkid,
        &FilterState::default(),
        schema,
    )
}

/// `GET /arcgis/rest/services/{name}/FeatureServer`.
pub async fn feature_server(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, LayerError> {
    let runtime = admit(&req, &state, &path)?;
    let extent = extent(&state, &runtime).await?;
    Ok(HttpResponse::Ok().json(feature_layer::feature_server(
        &runtime.service,
        state.config.ingest.max_record_count,
        extent,
    )))
}

/// `GET /arcgis/rest/services/{name}/FeatureServer/{layer}`.
pub async fn layer(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, LayerError> {
    let (name, layer) = path.into_inner();
    let runtime = admit(&req, &state, &name)?;
    check_layer(&layer)?;
    let extent = extent(&state, &runtime).await?;
    Ok(HttpResponse::Ok().json(feature_layer::layer(
        &runtime.service,
        state.config.ingest.max_record_count,
        extent,
    )))
}

/// The answer's format.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    GeoJson,
}

/// `.../FeatureServer/{layer}/query`, GET or POST (form).
pub async fn query(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, LayerError> {
    let (name, layer) = path.into_inner();
    let mut pairs: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default();
    if req.method() == actix_web::http::Method::POST {
        let form = super::body::read(body, MAX_FORM_BYTES)
            .await
            .map_err(LayerError::Body)?;
        let more = serde_urlencoded_pairs(&form).ok_or_else(|| {
            LayerError::InvalidParameters(vec!["The form body cannot be decoded.".into()])
        })?;
        pairs.extend(more);
    }
    let runtime = admit(&req, &state, &name)?;
    check_layer(&layer)?;
    let parsed = parse(&pairs, &runtime, &state).map_err(LayerError::InvalidParameters)?;
    let client = state.client(&req).ip;
    let schema = runtime.service.schema.clone();
    let Parsed {
        query,
        format,
        out_sr,
        out_fields,
        return_geometry,
    } = parsed;
    // The page is encoded in the pool too: up to maxRecordCount x 5 features.
    let (body, content_type) = run(&state, &runtime, query, client, move |result| {
        let object_id_name = &schema.fields()[schema.object_id_field()].name;
        match result {
            ArchiveResult::Count(count) => (
                json!({ "count": count }).to_string().into_bytes(),
                "application/json",
            ),
            ArchiveResult::Ids(ids) => (
                json!({ "objectIdFieldName": object_id_name, "objectIds": ids })
                    .to_string()
                    .into_bytes(),
                "application/json",
            ),
            ArchiveResult::Page { features, exceeded } => match format {
                Format::Json => (
                    feature_layer::query_json(
                        &schema,
                        out_sr,
                        &out_fields,
                        &features,
                        exceeded,
                        return_geometry,
                    ),
                    "application/json",
                ),
                Format::GeoJson => (
                    feature_layer::query_geojson(
                        &schema,
                        &out_fields,
                        &features,
                        exceeded,
                        return_geometry,
                    ),
                    "application/geo+json",
                ),
            },
            ArchiveResult::Extent(_) | ArchiveResult::Keyset(_) => {
                unreachable!("a layer query asks for neither the extent nor a keyset page")
            }
        }
    })
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(Bytes::from(body)))
}

fn serde_urlencoded_pairs(form: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(form).ok()?;
    web::Query::<Vec<(String, String)>>::from_query(text)
        .ok()
        .map(web::Query::into_inner)
}

struct Parsed {
    query: ArchiveQuery,
    format: Format,
    out_sr: Wkid,
    out_fields: OutFields,
    return_geometry: bool,
}

/// Every parameter, checked; each problem names its parameter.
fn parse(
    pairs: &[(String, String)],
    runtime: &ServiceRuntime,
    state: &AppState,
) -> Result<Parsed, Vec<String>> {
    let schema = &runtime.service.schema;
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    };
    let mut problems = Vec::new();
    let format = match get("f").map(str::to_ascii_lowercase).as_deref() {
        None | Some("json" | "pjson") => Format::Json,
        Some("geojson") => Format::GeoJson,
        Some(other) => {
            problems.push(format!(
                "f: \"{}\" is not supported; use json or geojson.",
                other.chars().take(20).collect::<String>()
            ));
            Format::Json
        }
    };
    let boolean = |problems: &mut Vec<String>, name: &str, default: bool| match get(name)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => default,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            problems.push(format!(
                "{name}: \"{}\" is not true or false.",
                other.chars().take(20).collect::<String>()
            ));
            default
        }
    };
    let return_geometry = boolean(&mut problems, "returnGeometry", true);
    let count_only = boolean(&mut problems, "returnCountOnly", false);
    let ids_only = boolean(&mut problems, "returnIdsOnly", false);
    let wkid_parameter = |problems: &mut Vec<String>, name: &str| -> Option<Wkid> {
        let text = get(name)?;
        let number = if text.starts_with('{') {
            serde_json::from_str::<Value>(text).ok().and_then(|value| {
                value
                    .get("latestWkid")
                    .or_else(|| value.get("wkid"))
                    .and_then(Value::as_i64)
            })
        } else {
            text.parse::<i64>().ok()
        };
        match number.map(Wkid::from_number) {
            Some(Ok(wkid)) => Some(wkid),
            Some(Err(err)) => {
                problems.push(format!("{name}: {err}"));
                None
            }
            None => {
                problems.push(format!(
                    "{name}: \"{}\" is not a wkid or a spatial reference.",
                    text.chars().take(40).collect::<String>()
                ));
                None
            }
        }
    };
    let out_sr = wkid_parameter(&mut problems, "outSR").unwrap_or(schema.wkid);
    let in_sr = wkid_parameter(&mut problems, "inSR").unwrap_or(schema.wkid);
    if let Some(kind) = get("geometryType")
        && !kind.eq_ignore_ascii_case("esriGeometryEnvelope")
    {
        problems.push(format!(
            "geometryType: only esriGeometryEnvelope is supported, not \"{}\".",
            kind.chars().take(40).collect::<String>()
        ));
    }
    let geometry = match get("geometry").map(envelope_json::decode_text) {
        None | Some(Ok(None)) => Patch::Keep,
        Some(Ok(Some(input))) => Patch::Set(input),
        Some(Err(err)) => {
            problems.push(format!("geometry: {err}"));
            Patch::Keep
        }
    };
    let spatial_rel = match get("spatialRel") {
        None => Patch::Keep,
        Some(text) => match SpatialRel::parse(text) {
            Some(relation) => Patch::Set(relation),
            None => {
                problems.push(format!(
                    "spatialRel: \"{}\" is not a supported spatial relation.",
                    text.chars().take(60).collect::<String>()
                ));
                Patch::Keep
            }
        },
    };
    let out_fields = match get("outFields") {
        None => OutFields::parse_list(schema, &schema.fields()[schema.object_id_field()].name)
            .unwrap_or(OutFields::All),
        Some(text) => match OutFields::parse_list(schema, text) {
            Ok(fields) => fields,
            Err(errors) => {
                problems.extend(errors.iter().map(|err| format!("outFields: {err}")));
                OutFields::All
            }
        },
    };
    let where_clause = match get("where") {
        Some(text) => Patch::Set(text.to_owned()),
        None => Patch::Keep,
    };
    let mut filter_state = FilterState::default();
    if let Err(errors) = filter_state.apply(
        FilterUpdate::Parts {
            where_clause,
            geometry,
            spatial_rel,
            out_fields: Patch::<OutFieldsInput>::Keep,
        },
        schema,
        in_sr,
        state.config.session.filter_limits,
    ) {
        for err in errors {
            let text = err.to_string();
            let parameter = if text.contains("geometry") || text.contains("envelope") {
                "geometry"
            } else {
                "where"
            };
            problems.push(format!("{parameter}: {text}"));
        }
    }
    let object_ids = get("objectIds").map(|text| {
        let mut ids = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            match part.parse::<i64>() {
                Ok(id) => ids.push(id),
                Err(_) => problems.push(format!(
                    "objectIds: \"{}\" is not an object id.",
                    part.chars().take(30).collect::<String>()
                )),
            }
        }
        ids.sort_unstable();
        ids
    });
    let mut order_by: Vec<(usize, bool)> = Vec::new();
    if let Some(text) = get("orderByFields") {
        let parts: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .take(MAX_SORT_KEYS + 1)
            .collect();
        if parts.len() > MAX_SORT_KEYS {
            problems.push(format!(
                "orderByFields: at most {MAX_SORT_KEYS} sort keys are supported."
            ));
        }
        for part in parts.into_iter().take(MAX_SORT_KEYS) {
            let mut words = part.split_whitespace();
            let name = words.next().unwrap_or("");
            let descending = match words.next().map(str::to_ascii_uppercase).as_deref() {
                None | Some("ASC") => false,
                Some("DESC") => true,
                Some(other) => {
                    problems.push(format!("orderByFields: \"{other}\" is not ASC or DESC."));
                    false
                }
            };
            match schema.field_index(name) {
                // A field already sorted on decides nothing more (as in SQL): kept once.
                Some(index) if order_by.iter().any(|(field, _)| *field == index) => {}
                Some(index) => order_by.push((index, descending)),
                None => problems.push(format!(
                    "orderByFields: field \"{}\" does not exist.",
                    name.chars().take(64).collect::<String>()
                )),
            }
        }
    }
    let number = |problems: &mut Vec<String>, name: &str| -> Option<usize> {
        let text = get(name)?;
        match text.parse::<usize>() {
            Ok(value) => Some(value),
            Err(_) => {
                problems.push(format!(
                    "{name}: \"{}\" is not a whole number.",
                    text.chars().take(30).collect::<String>()
                ));
                None
            }
        }
    };
    let offset = number(&mut problems, "resultOffset").unwrap_or(0);
    let factor = number(&mut problems, "maxRecordCountFactor")
        .unwrap_or(1)
        .clamp(1, MAX_FACTOR);
    let most = state.config.ingest.max_record_count.saturating_mul(factor);
    let count = number(&mut problems, "resultRecordCount")
        .unwrap_or(most)
        .min(most);
    if !problems.is_empty() {
        return Err(problems);
    }
    let answer = if count_only {
        Answer::Count
    } else if ids_only {
        Answer::Ids
    } else {
        let key = format!(
            "{:?}|{:?}|{:?}|{:?}",
            filter_state
                .filter
                .where_clause
                .as_ref()
                .map(|clause| clause.canonical()),
            filter_state
                .filter
                .geometry
                .as_ref()
                .map(|geometry| (geometry.envelope, geometry.relation)),
            object_ids,
            order_by
        );
        Answer::Page { offset, count, key }
    };
    Ok(Parsed {
        query: ArchiveQuery {
            filter: Subscription::new(
                WireMode::Custom(Default::default()),
                in_sr,
                &filter_state,
                schema,
            ),
            object_ids,
            order_by,
            answer,
        },
        format,
        out_sr,
        out_fields,
        return_geometry,
    })
}
