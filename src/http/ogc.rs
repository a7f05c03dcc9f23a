//! OGC API - Features over the latest state (docs/ogc.md): `/ogc/` (landing page),
//! `/ogc/conformance`, `/ogc/api` (OpenAPI 3.0), `/ogc/collections` (one per stream service
//! the request may read), `/ogc/collections/{name}`, `.../queryables`, `.../items` and
//! `.../items/{trackId}`. Items are the latest observation of each live track in track id
//! order, paged by key (`after`/`before` in the `next`/`prev` links), so paging stays right
//! while tracks come and go; queries run in the feature layer's pool, never on a broker.
//! Errors are OGC exceptions (`{"code","description"}`) with the standard's statuses.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::AppState;
use super::feature_layer::{LayerError, admit, extent, run};
use crate::broker::ServiceRuntime;
use crate::broker::archive::{Answer, ArchiveQuery, ArchiveResult, Keyset};
use crate::broker::subscription::{Deflate, Subscription, WireMode};
use crate::feature::{FieldType, FieldValue, Schema};
use crate::filter::cql2;
use crate::filter::{FilterState, FilterUpdate, OutFields, Patch};
use crate::geometry::{EnvelopeInput, Wkid};
use crate::protocol::feature_result::{FeatureEncoder, Format, View};
use crate::protocol::ogc;

/// Why an OGC API request is refused: an exception document with the standard's status.
#[derive(Debug, thiserror::Error)]
pub enum OgcError {
    /// A parameter that cannot be used (400 `InvalidParameterValue`), naming it.
    #[error("{0}")]
    InvalidParameter(String),
    /// No such collection or feature (404 `NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// What the feature layer's admission says (token, rate, service gone).
    #[error("{0}")]
    Layer(#[from] LayerError),
}

impl actix_web::ResponseError for OgcError {
    fn status_code(&self) -> StatusCode {
        match self {
            OgcError::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            OgcError::NotFound(_) => StatusCode::NOT_FOUND,
            OgcError::Layer(error) => match error {
                LayerError::UnknownService(_) => StatusCode::NOT_FOUND,
                LayerError::TokenRequired => StatusCode::UNAUTHORIZED,
                LayerError::InvalidToken => StatusCode::FORBIDDEN,
                LayerError::NoSuchLayer(_)
                | LayerError::InvalidParameters(_)
                | LayerError::Body(_) => StatusCode::BAD_REQUEST,
                LayerError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                LayerError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let code = match status {
            StatusCode::BAD_REQUEST => "InvalidParameterValue",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            _ => "ServiceUnavailable",
        };
        let description = match self {
            OgcError::Layer(LayerError::InvalidParameters(problems)) => problems.join(" "),
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(status);
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.insert_header(("Retry-After", "1"));
        }
        response.json(ogc::exception(code, &description))
    }
}

fn invalid(text: impl Into<String>) -> OgcError {
    OgcError::InvalidParameter(text.into())
}

/// Every OGC API route, under `/ogc`.
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/ogc")
        .wrap(super::rest_cors())
        .route("", web::get().to(landing))
        .route("/", web::get().to(landing))
        .route("/conformance", web::get().to(conformance))
        .route("/api", web::get().to(api))
        .route("/collections", web::get().to(collections))
        .route("/collections/{collection}", web::get().to(collection))
        .route(
            "/collections/{collection}/queryables",
            web::get().to(queryables),
        )
        .route("/collections/{collection}/items", web::get().to(items))
        .route(
            "/collections/{collection}/items/{feature}",
            web::get().to(item),
        )
}

/// `scheme://host/ogc` as the client reached it.
fn base(req: &HttpRequest, state: &AppState) -> String {
    let client = state.client(req);
    format!("{}://{}/ogc", client.scheme, client.host)
}

/// Only `f=json` (and its GeoJSON spellings) is served.
fn check_format(pairs: &[(String, String)]) -> Result<(), OgcError> {
    match pairs.iter().rev().find(|(key, _)| key == "f") {
        None => Ok(()),
        Some((_, value))
            if matches!(
                value.as_str(),
                "json" | "geojson" | "application/json" | "application/geo+json"
            ) =>
        {
            Ok(())
        }
        Some((_, value)) => Err(invalid(format!(
            "f: \"{}\" is not served; this API answers f=json (GeoJSON for features).",
            shorten(value)
        ))),
    }
}

fn pairs_of(req: &HttpRequest) -> Result<Vec<(String, String)>, OgcError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|err| invalid(format!("the query string cannot be decoded: {err}")))
}

fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

async fn landing(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, OgcError> {
    check_format(&pairs_of(&req)?)?;
    Ok(HttpResponse::Ok().json(ogc::landing(&base(&req, &state))))
}

async fn conformance(req: HttpRequest) -> Result<HttpResponse, OgcError> {
    check_format(&pairs_of(&req)?)?;
    Ok(HttpResponse::Ok().json(ogc::conformance()))
}

/// The services a request may read, in name order.
fn readable<'a>(req: &HttpRequest, state: &'a AppState) -> Vec<&'a Arc<ServiceRuntime>> {
    let mut services: Vec<&Arc<ServiceRuntime>> = state
        .services
        .values()
        .filter(|runtime| state.check_token(req, &runtime.service.name).is_ok())
        .collect();
    services.sort_by(|a, b| a.service.name.cmp(&b.service.name));
    services
}

async fn api(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, OgcError> {
    let pairs = pairs_of(&req)?;
    if let Some((_, value)) = pairs.iter().rev().find(|(key, _)| key == "f")
        && !matches!(value.as_str(), "json" | "application/vnd.oai.openapi+json")
    {
        return Err(invalid(format!(
            "f: \"{}\" is not served; the API definition is OpenAPI 3.0 JSON.",
            shorten(value)
        )));
    }
    let services: Vec<&crate::service::Service> = readable(&req, &state)
        .into_iter()
        .map(|runtime| &runtime.service)
        .collect();
    Ok(HttpResponse::Ok()
        .content_type(ogc::OPENAPI_TYPE)
        .body(ogc::openapi(&base(&req, &state), &services).to_string()))
}

async fn collections(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OgcError> {
    check_format(&pairs_of(&req)?)?;
    // Each collection's extent is a pass over its state: under the query rate, as a query.
    state
        .admission
        .check_query_rate(&state.client(&req))
        .map_err(|_| LayerError::RateLimited)?;
    let base = base(&req, &state);
    let mut documents = Vec::new();
    for runtime in readable(&req, &state) {
        let extent = extent(&state, runtime).await?;
        documents.push(ogc::collection(&base, &runtime.service, extent));
    }
    Ok(HttpResponse::Ok().json(ogc::collections(&base, documents)))
}

/// The service of `name`, if the request may read it (a 404 names an unknown one).
fn service(
    req: &HttpRequest,
    state: &AppState,
    name: &str,
) -> Result<Arc<ServiceRuntime>, OgcError> {
    admit(req, state, name).map_err(|err| match err {
        LayerError::UnknownService(_) => {
            OgcError::NotFound(format!("There is no collection \"{}\".", shorten(name)))
        }
        other => OgcError::Layer(other),
    })
}

async fn collection(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OgcError> {
    check_format(&pairs_of(&req)?)?;
    let runtime = service(&req, &state, &path)?;
    let extent = extent(&state, &runtime).await?;
    Ok(HttpResponse::Ok().json(ogc::collection(
        &base(&req, &state),
        &runtime.service,
        extent,
    )))
}

async fn queryables(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OgcError> {
    check_format(&pairs_of(&req)?)?;
    let runtime = service(&req, &state, &path)?;
    Ok(HttpResponse::Ok()
        .content_type("application/schema+json")
        .body(ogc::queryables(&base(&req, &state), &runtime.service).to_string()))
}

/// An items request, checked.
struct ItemsRequest {
    /// The where clause and envelope, in WGS84.
    filter: Subscription,
    keyset: Keyset,
    /// The coordinates' CRS.
    crs: Wkid,
    /// The parameters of the request but `after`/`before`, for the paging links.
    kept: Vec<(String, String)>,
}

/// A track id as its field's type: a number for an integer field.
fn track_id_value(schema: &Schema, text: &str) -> Option<FieldValue> {
    let field = &schema.fields()[schema.track_id_field()];
    match field.field_type {
        FieldType::String => Some(FieldValue::String(Arc::from(text))),
        FieldType::Single | FieldType::Double => text.trim().parse().ok().map(FieldValue::Double),
        _ => text.trim().parse().ok().map(FieldValue::Integer),
    }
}

/// A SQL literal of `text` for a property filter on a field of `field_type`.
fn literal(field_type: FieldType, text: &str) -> Option<String> {
    match field_type {
        FieldType::ObjectId
        | FieldType::SmallInteger
        | FieldType::Integer
        | FieldType::BigInteger => text.trim().parse::<i64>().ok().map(|n| n.to_string()),
        FieldType::Single | FieldType::Double => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|n| n.to_string()),
        FieldType::String => Some(format!("'{}'", text.replace('\'', "''"))),
        FieldType::Date => crate::filter::parse_rfc3339(text)
            .map(|ms| format!("TIMESTAMP '{}'", crate::filter::date::format_timestamp(ms))),
        FieldType::Boolean => match text.trim() {
            "true" | "1" => Some("TRUE".to_owned()),
            "false" | "0" => Some("FALSE".to_owned()),
            _ => None,
        },
    }
}

/// `datetime`: an instant, or `start/end` with `..` (or nothing) for an open end.
fn datetime_condition(field: &str, text: &str) -> Result<String, OgcError> {
    let instant = |part: &str| -> Result<Option<i64>, OgcError> {
        let part = part.trim();
        if part.is_empty() || part == ".." {
            return Ok(None);
        }
        crate::filter::parse_rfc3339(part).map(Some).ok_or_else(|| {
            invalid(format!(
                "datetime: \"{}\" is not an RFC 3339 date-time (2026-12-07T10:00:00Z) or date.",
                shorten(part)
            ))
        })
    };
    let literal = |ms: i64| format!("TIMESTAMP '{}'", crate::filter::date::format_timestamp(ms));
    let field = format!("\"{field}\"");
    match text.split_once('/') {
        None => match instant(text)? {
            Some(at) => Ok(format!("{field} = {}", literal(at))),
            None => Err(invalid("datetime: an instant cannot be open (\"..\").")),
        },
        Some((start, end)) => match (instant(start)?, instant(end)?) {
            (None, None) => {
                if start.trim().is_empty() && end.trim().is_empty() {
                    Err(invalid("datetime: \"/\" names no interval."))
                } else {
                    Ok(format!("{field} IS NOT NULL"))
                }
            }
            (Some(start), None) => Ok(format!("{field} >= {}", literal(start))),
            (None, Some(end)) => Ok(format!("{field} <= {}", literal(end))),
            (Some(start), Some(end)) if start > end => {
                Err(invalid("datetime: the interval ends before it starts."))
            }
            (Some(start), Some(end)) => Ok(format!(
                "{field} BETWEEN {} AND {}",
                literal(start),
                literal(end)
            )),
        },
    }
}

/// Four or six numbers: `[xmin, ymin, xmax, ymax]`.
fn parse_bbox(text: &str) -> Result<[f64; 4], OgcError> {
    let numbers: Option<Vec<f64>> = text
        .split(',')
        .map(|part| part.trim().parse::<f64>().ok().filter(|n| n.is_finite()))
        .collect();
    let corners = match numbers.as_deref() {
        Some(&[xmin, ymin, xmax, ymax]) | Some(&[xmin, ymin, _, xmax, ymax, _]) => {
            [xmin, ymin, xmax, ymax]
        }
        _ => {
            return Err(invalid(format!(
                "bbox: \"{}\" is not four (or six) comma-separated numbers: minx,miny,maxx,maxy.",
                shorten(text)
            )));
        }
    };
    if corners[0] > corners[2] {
        return Err(invalid(
            "bbox: a box crossing the antimeridian (minx > maxx) is not supported; ask for its two halves.",
        ));
    }
    if corners[1] > corners[3] {
        return Err(invalid("bbox: miny is greater than maxy."));
    }
    Ok(corners)
}

fn crs_parameter(name: &str, value: &str) -> Result<Wkid, OgcError> {
    ogc::crs_of(value).ok_or_else(|| {
        invalid(format!(
            "{name}: \"{}\" is not served; use {} or {}.",
            shorten(value),
            ogc::CRS84,
            ogc::EPSG_3857
        ))
    })
}

/// A box in `from` as WGS84 (Web Mercator is separable: a box stays a box).
fn to_wgs84(from: Wkid, [xmin, ymin, xmax, ymax]: [f64; 4]) -> [f64; 4] {
    let (xmin, ymin) = from.project(Wkid::Wgs84, xmin, ymin);
    let (xmax, ymax) = from.project(Wkid::Wgs84, xmax, ymax);
    [xmin, ymin, xmax, ymax]
}

fn parse_items(
    pairs: Vec<(String, String)>,
    runtime: &ServiceRuntime,
    state: &AppState,
) -> Result<ItemsRequest, OgcError> {
    check_format(&pairs)?;
    let schema = &runtime.service.schema;
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let mut conditions = Vec::new();
    let mut envelope: Option<[f64; 4]> = None;
    let meet = |envelope: &mut Option<[f64; 4]>, other: [f64; 4]| {
        *envelope = Some(match *envelope {
            None => other,
            Some(box_) => [
                box_[0].max(other[0]),
                box_[1].max(other[1]),
                box_[2].min(other[2]),
                box_[3].min(other[3]),
            ],
        });
    };
    let mut limit = ogc::DEFAULT_LIMIT;
    let mut keyset_key: Option<(bool, FieldValue)> = None;
    for (key, value) in &pairs {
        match key.as_str() {
            // `token`: the credentials of a client that sends them in the URL (kept in the
            // paging links, which it follows with them).
            "f" | "token" | "bbox-crs" | "crs" | "filter-crs" | "filter-lang" | "bbox"
            | "filter" => {}
            "limit" => {
                limit = match value.trim().parse::<usize>() {
                    Ok(0) | Err(_) => {
                        return Err(invalid(format!(
                            "limit: \"{}\" is not a whole number from 1 to {}.",
                            shorten(value),
                            ogc::MAX_LIMIT
                        )));
                    }
                    // Past the most a page holds, a page of the most (Part 1, 7.15.3).
                    Ok(limit) => limit.min(ogc::MAX_LIMIT),
                };
            }
            "datetime" => {
                let Some(field) = schema.start_time_field() else {
                    return Err(invalid(
                        "datetime: this collection has no time field to filter on.",
                    ));
                };
                conditions.push(datetime_condition(&schema.fields()[field].name, value)?);
            }
            "after" | "before" => {
                let id = track_id_value(schema, value).ok_or_else(|| {
                    invalid(format!("{key}: \"{}\" is not a track id.", shorten(value)))
                })?;
                if keyset_key.is_some() {
                    return Err(invalid("after, before: give one of them, once."));
                }
                keyset_key = Some((key == "after", id));
            }
            name => match schema.field_index(name) {
                Some(index) => {
                    let field = &schema.fields()[index];
                    let literal = literal(field.field_type, value).ok_or_else(|| {
                        invalid(format!(
                            "{name}: \"{}\" is not a value of this {} property.",
                            shorten(value),
                            field.field_type.describe()
                        ))
                    })?;
                    conditions.push(format!("\"{}\" = {literal}", field.name));
                }
                None => {
                    return Err(invalid(format!(
                        "{}: no such parameter or property (see {}/queryables).",
                        shorten(name),
                        runtime.service.name
                    )));
                }
            },
        }
    }
    let bbox_crs = get("bbox-crs")
        .map(|value| crs_parameter("bbox-crs", value))
        .transpose()?
        .unwrap_or(Wkid::Wgs84);
    let filter_crs = get("filter-crs")
        .map(|value| crs_parameter("filter-crs", value))
        .transpose()?
        .unwrap_or(Wkid::Wgs84);
    let crs = get("crs")
        .map(|value| crs_parameter("crs", value))
        .transpose()?
        .unwrap_or(Wkid::Wgs84);
    if let Some(text) = get("bbox") {
        meet(&mut envelope, to_wgs84(bbox_crs, parse_bbox(text)?));
    }
    let dialect = match get("filter-lang") {
        None | Some("cql2-text") => cql2::Dialect::Cql2Text,
        Some("cql-text") => cql2::Dialect::CqlText,
        Some(language) => {
            return Err(invalid(format!(
                "filter-lang: \"{}\" is not served; use cql2-text.",
                shorten(language)
            )));
        }
    };
    if let Some(text) = get("filter") {
        let translated = cql2::translate_dialect(text, ogc::GEOMETRY_QUERYABLE, dialect)
            .map_err(|err| invalid(format!("filter: {err}.")))?;
        if let Some(clause) = translated.where_clause {
            conditions.push(clause);
        }
        if let Some(box_) = translated.envelope {
            meet(&mut envelope, to_wgs84(filter_crs, box_));
        }
    }
    let mut nothing = false;
    if let Some([xmin, ymin, xmax, ymax]) = envelope
        && (xmin > xmax || ymin > ymax)
    {
        nothing = true;
        envelope = None;
    }
    if nothing {
        conditions.push("1 = 0".to_owned());
    }
    let where_clause = match conditions.len() {
        0 => Patch::Keep,
        1 => Patch::Set(conditions.remove(0)),
        _ => Patch::Set(
            conditions
                .iter()
                .map(|condition| format!("({condition})"))
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    };
    let geometry = match envelope {
        Some(corners) => Patch::Set(EnvelopeInput {
            corners,
            wkid: None,
        }),
        None => Patch::Keep,
    };
    let mut filter_state = FilterState::default();
    filter_state
        .apply(
            FilterUpdate::Parts {
                where_clause,
                geometry,
                spatial_rel: Patch::Keep,
                out_fields: Patch::Keep,
            },
            schema,
            Wkid::Wgs84,
            state.config.session.filter_limits,
        )
        .map_err(|errors| {
            invalid(
                errors
                    .iter()
                    .map(|err| format!("filter: {err}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })?;
    let keyset = match keyset_key {
        None => Keyset::After(None, limit),
        Some((true, id)) => Keyset::After(Some(id), limit),
        Some((false, id)) => Keyset::Before(id, limit),
    };
    let kept = pairs
        .into_iter()
        .filter(|(key, _)| key != "after" && key != "before")
        .collect();
    Ok(ItemsRequest {
        filter: Subscription::new(
            WireMode::GeoJson(Deflate::Off),
            Wkid::Wgs84,
            &filter_state,
            schema,
        ),
        keyset,
        crs,
        kept,
    })
}

/// `url?pairs` with `extra` appended.
fn url_with(base: &str, pairs: &[(String, String)], extra: Option<(&str, String)>) -> String {
    let query = pairs
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .chain(extra.as_ref().map(|(key, value)| (*key, value.as_str())))
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    if query.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{query}")
    }
}

/// Percent-encodes a query component (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A track id as it goes into a link.
fn key_text(value: &FieldValue) -> String {
    match value {
        FieldValue::Integer(n) | FieldValue::Date(n) => n.to_string(),
        FieldValue::Double(n) => n.to_string(),
        FieldValue::String(text) => text.to_string(),
        FieldValue::Boolean(flag) => flag.to_string(),
        FieldValue::Null => String::new(),
    }
}

fn geojson_response(crs: Wkid, body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ogc::GEOJSON_TYPE)
        .insert_header(("Content-Crs", format!("<{}>", ogc::crs_uri(crs))))
        .body(body)
}

async fn items(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OgcError> {
    let runtime = service(&req, &state, &path)?;
    let request = parse_items(pairs_of(&req)?, &runtime, &state)?;
    let base = base(&req, &state);
    let items_url = format!("{base}/collections/{}/items", runtime.service.name);
    let collection_url = format!("{base}/collections/{}", runtime.service.name);
    let schema = runtime.service.schema.clone();
    let self_url = url_with(
        &items_url,
        &request.kept,
        match &request.keyset {
            Keyset::After(Some(id), _) => Some(("after", key_text(id))),
            Keyset::Before(id, _) => Some(("before", key_text(id))),
            Keyset::After(None, _) => None,
        },
    );
    let ItemsRequest {
        filter,
        keyset,
        crs,
        kept,
    } = request;
    let query = ArchiveQuery {
        filter,
        object_ids: None,
        order_by: Vec::new(),
        answer: Answer::Keyset(keyset),
    };
    let client = state.client(&req).ip;
    let body = run(&state, &runtime, query, client, move |result| {
        let ArchiveResult::Keyset(page) = result else {
            unreachable!("a keyset query answers a keyset page")
        };
        let encoder = FeatureEncoder::new(
            &schema,
            &View::in_format(Format::GeoJson, crs, OutFields::All),
        );
        let encoded = encoder.encode_batch(&page.features);
        let track = schema.track_id_field();
        let mut links = vec![
            ogc::items_link(self_url, "self", "This page"),
            serde_json::json!({"href": collection_url, "rel": "collection", "type": "application/json", "title": "The collection"}),
        ];
        if page.more_after
            && let Some(last) = page.features.last()
        {
            links.push(ogc::items_link(
                url_with(&items_url, &kept, Some(("after", key_text(&last.attributes[track])))),
                "next",
                "The next page",
            ));
        }
        if page.more_before
            && let Some(first) = page.features.first()
        {
            links.push(ogc::items_link(
                url_with(&items_url, &kept, Some(("before", key_text(&first.attributes[track])))),
                "prev",
                "The previous page",
            ));
        }
        ogc::ItemsPage {
            matched: page.matched,
            fragments: (0..encoded.len()).map(|index| encoded.fragment(index)).collect(),
            links,
            time_stamp: crate::filter::format_rfc3339(now_ms()),
        }
        .encode()
    })
    .await?;
    Ok(geojson_response(crs, body))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

async fn item(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OgcError> {
    let (name, id) = path.into_inner();
    let runtime = service(&req, &state, &name)?;
    let pairs = pairs_of(&req)?;
    check_format(&pairs)?;
    let mut crs = Wkid::Wgs84;
    for (key, value) in &pairs {
        match key.as_str() {
            "f" | "token" => {}
            "crs" => crs = crs_parameter("crs", value)?,
            other => {
                return Err(invalid(format!(
                    "{}: no such parameter of a feature.",
                    shorten(other)
                )));
            }
        }
    }
    let schema = runtime.service.schema.clone();
    let not_found = || {
        OgcError::NotFound(format!(
            "No track \"{}\" is live in \"{}\".",
            shorten(&id),
            runtime.service.name
        ))
    };
    let track = track_id_value(&schema, &id).ok_or_else(not_found)?;
    let track_field = &schema.fields()[schema.track_id_field()];
    let condition = match &track {
        FieldValue::String(text) => {
            format!("\"{}\" = '{}'", track_field.name, text.replace('\'', "''"))
        }
        other => format!("\"{}\" = {}", track_field.name, key_text(other)),
    };
    let mut filter_state = FilterState::default();
    filter_state
        .apply(
            FilterUpdate::Parts {
                where_clause: Patch::Set(condition),
                geometry: Patch::Keep,
                spatial_rel: Patch::Keep,
                out_fields: Patch::Keep,
            },
            &schema,
            Wkid::Wgs84,
            state.config.session.filter_limits,
        )
        .map_err(|_| not_found())?;
    let query = ArchiveQuery {
        filter: Subscription::new(
            WireMode::GeoJson(Deflate::Off),
            Wkid::Wgs84,
            &filter_state,
            &schema,
        ),
        object_ids: None,
        order_by: Vec::new(),
        answer: Answer::Keyset(Keyset::After(None, 1)),
    };
    let base = base(&req, &state);
    let self_url = format!(
        "{base}/collections/{}/items/{}",
        runtime.service.name,
        encode(&id)
    );
    let collection_url = format!("{base}/collections/{}", runtime.service.name);
    let client = state.client(&req).ip;
    let body = run(&state, &runtime, query, client, move |result| {
        let ArchiveResult::Keyset(page) = result else {
            unreachable!("a keyset query answers a keyset page")
        };
        let feature = page.features.first()?;
        let encoder = FeatureEncoder::new(
            &schema,
            &View::in_format(Format::GeoJson, crs, OutFields::All),
        );
        let mut fragment = Vec::new();
        encoder.encode_feature(feature, &mut fragment);
        let links: Vec<Value> = vec![
            serde_json::json!({"href": self_url, "rel": "self", "type": ogc::GEOJSON_TYPE, "title": "This feature"}),
            serde_json::json!({"href": collection_url, "rel": "collection", "type": "application/json", "title": "The collection"}),
        ];
        Some(ogc::feature_document(&fragment, links))
    })
    .await?;
    match body {
        Some(body) => Ok(geojson_response(crs, body)),
        None => Err(not_found()),
    }
}
