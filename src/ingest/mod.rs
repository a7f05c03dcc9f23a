//! Ingest: observations pushed in by clients, parsed and checked against a service's schema,
//! feature by feature. Reads Esri JSON (a feature, an array of features, a featureSet with an
//! optional `spatialReference`) and GeoJSON (a Feature or a FeatureCollection, WGS84), one
//! document per request or WebSocket message, or NDJSON (one document per line). A bad feature
//! is reported by its index and reason and the rest go on. Plain Rust: no actors, no HTTP.

mod complaints;
mod document;
mod validate;

use crate::feature::{Feature, Schema};
use crate::source::Receipt;

pub use complaints::Complaints;
pub use document::DocumentError;
pub(crate) use document::Scalar;

/// What a document held: accepted features (with their indexes) and rejected ones.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Valid features, in the service's schema and spatial reference; object ids are still 0
    /// (the broker assigns them).
    pub features: Vec<Feature>,
    /// The index in the request of each valid feature.
    pub indexes: Vec<usize>,
    /// Every invalid feature.
    pub rejected: Vec<Rejection>,
}

impl Ingested {
    /// Appends what a later document (an NDJSON line) held.
    pub fn extend(&mut self, other: Ingested) {
        self.features.extend(other.features);
        self.indexes.extend(other.indexes);
        self.rejected.extend(other.rejected);
    }

    /// Keeps the outcome of the feature at `index`.
    fn take(&mut self, index: usize, outcome: Result<Feature, Reason>) {
        match outcome {
            Ok(feature) => {
                self.features.push(feature);
                self.indexes.push(index);
            }
            Err(reason) => self.rejected.push(Rejection { index, reason }),
        }
    }

    /// Features read, valid or not.
    pub fn total(&self) -> usize {
        self.features.len() + self.rejected.len()
    }
}

/// What a request (or broadcast message) came to, feature by feature.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Features read.
    pub received: usize,
    /// Recorded as their track's latest and streamed.
    pub accepted: usize,
    /// Indexes of valid features older than their track's latest (not errors).
    pub stale: Vec<usize>,
    /// Every refused feature, by index.
    pub errors: Vec<Rejection>,
}

impl Report {
    /// Adds what a document held and what the broker's receipt says became of its valid
    /// features (`max_tracks` names the limit of a refused new track). The features themselves
    /// may have been handed to the broker already: their indexes tell how many were valid.
    pub fn add(&mut self, ingested: Ingested, receipt: &Receipt, max_tracks: usize) {
        self.received += ingested.indexes.len() + ingested.rejected.len();
        self.accepted += ingested.indexes.len()
            - receipt.stale.len()
            - receipt.refused.len()
            - receipt.unstored.len();
        self.stale.extend(
            receipt
                .stale
                .iter()
                .map(|&position| ingested.indexes[position]),
        );
        self.errors.extend(ingested.rejected);
        self.errors
            .extend(receipt.refused.iter().map(|&position| Rejection {
                index: ingested.indexes[position],
                reason: Reason::TooManyTracks(max_tracks),
            }));
        self.errors
            .extend(receipt.unstored.iter().map(|&position| Rejection {
                index: ingested.indexes[position],
                reason: Reason::Unstored,
            }));
        self.errors.sort_by_key(|rejection| rejection.index);
    }
}

/// A feature refused, by its index in the request (counting across NDJSON lines).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// Position in the request, from 0.
    pub index: usize,
    /// Why.
    pub reason: Reason,
}

/// Why a feature is refused. `code` names each for counters and clients.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Reason {
    /// The feature is not an object of the expected shape (a value of the wrong JSON type).
    #[error("the feature is malformed: {0}")]
    Malformed(String),
    /// An attribute the schema does not have.
    #[error("unknown field \"{0}\"")]
    UnknownField(String),
    /// A value of the wrong type.
    #[error("field \"{field}\" expects {expected}, found {found}")]
    WrongType {
        /// The field.
        field: String,
        /// What it takes.
        expected: String,
        /// What was given.
        found: String,
    },
    /// An integer outside its field's range.
    #[error("field \"{field}\" takes integers from {min} to {max}")]
    OutOfRange {
        /// The field.
        field: String,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// The track id is missing or null.
    #[error("the track id field \"{0}\" is missing or null")]
    MissingTrackId(String),
    /// NULL (or nothing) in a field that is not nullable.
    #[error("field \"{0}\" is not nullable and has no value")]
    NullNotAllowed(String),
    /// A string longer than its field.
    #[error("field \"{field}\" holds at most {max} characters")]
    TooLong {
        /// The field.
        field: String,
        /// Its length.
        max: u32,
    },
    /// No geometry, or an empty one.
    #[error("the feature has no geometry")]
    MissingGeometry,
    /// A geometry of another type than the service's.
    #[error("the service takes {expected} geometries, found {found}")]
    WrongGeometry {
        /// The service's `esriGeometry*`.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// Coordinates that do not make a geometry.
    #[error("the geometry is malformed: {0}")]
    MalformedGeometry(String),
    /// NaN or infinite coordinates (or ones that project to them).
    #[error("the geometry has non-finite coordinates")]
    NonFiniteCoordinates,
    /// WGS84 coordinates outside longitude -180..180, latitude -90..90.
    #[error("WGS84 coordinates ({x}, {y}) are outside longitude -180..180, latitude -90..90")]
    OutOfWorld {
        /// Longitude given.
        x: f64,
        /// Latitude given.
        y: f64,
    },
    /// A spatial reference this server cannot convert to the service's.
    #[error("{}", match .0 {
        Some(wkid) => format!("spatial reference wkid {wkid} is not supported (4326 and Web Mercator are)"),
        None => "the spatial reference has no wkid (4326 and Web Mercator are supported)".to_owned(),
    })]
    UnsupportedSpatialReference(Option<i64>),
    /// The service already holds its maximum number of tracks and this is a new one.
    #[error("the service holds its maximum of {0} tracks; a new track is refused")]
    TooManyTracks(usize),
    /// A text track id longer than `FEATURESTREAM_MAX_TRACK_ID_CHARS`.
    #[error("the track id holds at most {0} characters")]
    TrackIdTooLong(u32),
    /// A geometry with more vertices than `FEATURESTREAM_MAX_VERTICES`.
    #[error("the geometry has {given} vertices; at most {max} are taken")]
    TooManyVertices {
        /// Vertices given.
        given: usize,
        /// The limit.
        max: usize,
    },
    /// A start time further ahead of the server's clock than `FEATURESTREAM_MAX_FUTURE_SECS`.
    #[error(
        "field \"{field}\" is {ahead_s} s ahead of the server's clock; at most {max_s} s are taken"
    )]
    TimeInFuture {
        /// The start-time field.
        field: String,
        /// How far ahead (s).
        ahead_s: i64,
        /// The tolerance (s).
        max_s: i64,
    },
    /// Not made durable: the backbone (NATS) was unreachable, or the state directory could
    /// not be written.
    #[error(
        "the observation could not be stored (the NATS backbone is unavailable or the state directory cannot be written); send it again"
    )]
    Unstored,
}

impl Reason {
    /// A stable name, for counters and for clients that branch on it.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Malformed(_) => "malformed",
            Reason::UnknownField(_) => "unknownField",
            Reason::WrongType { .. } => "wrongType",
            Reason::OutOfRange { .. } => "outOfRange",
            Reason::MissingTrackId(_) => "missingTrackId",
            Reason::NullNotAllowed(_) => "nullNotAllowed",
            Reason::TooLong { .. } => "tooLong",
            Reason::MissingGeometry => "missingGeometry",
            Reason::WrongGeometry { .. } => "wrongGeometry",
            Reason::MalformedGeometry(_) => "malformedGeometry",
            Reason::NonFiniteCoordinates => "nonFiniteCoordinates",
            Reason::OutOfWorld { .. } => "outOfWorld",
            Reason::UnsupportedSpatialReference(_) => "spatialReference",
            Reason::TooManyTracks(_) => "tooManyTracks",
            Reason::TrackIdTooLong(_) => "trackIdTooLong",
            Reason::TooManyVertices { .. } => "tooManyVertices",
            Reason::TimeInFuture { .. } => "timeInFuture",
            Reason::Unstored => "unstored",
        }
    }

    /// Every code, for counters that list each reason.
    pub const CODES: [&'static str; 18] = [
        "malformed",
        "unknownField",
        "wrongType",
        "outOfRange",
        "missingTrackId",
        "nullNotAllowed",
        "tooLong",
        "missingGeometry",
        "wrongGeometry",
        "malformedGeometry",
        "nonFiniteCoordinates",
        "outOfWorld",
        "spatialReference",
        "tooManyTracks",
        "trackIdTooLong",
        "tooManyVertices",
        "timeInFuture",
        "unstored",
    ];
}

/// Why a whole document is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// It cannot be read as features at all (400).
    #[error("{0}")]
    Document(#[from] DocumentError),
    /// More features than a request may carry (413).
    #[error("the request holds {given} features; at most {max} are taken per request")]
    TooManyFeatures {
        /// Features in the request.
        given: usize,
        /// The limit.
        max: usize,
    },
}

impl IngestError {
    /// A short code for metrics: `notJson`, `notFeatures` or `tooManyFeatures`.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Document(DocumentError::NotJson(_)) => "notJson",
            IngestError::Document(DocumentError::NotFeatures(_)) => "notFeatures",
            IngestError::TooManyFeatures { .. } => "tooManyFeatures",
        }
    }
}

/// Parses one JSON document of features for `schema`. `first_index` is the index of its first
/// feature in the request; `received_ms` fills a missing start-time value; `max_features`
/// bounds the features it may hold.
pub fn parse_document(
    text: &str,
    schema: &Schema,
    received_ms: i64,
    first_index: usize,
    max_features: usize,
) -> Result<Ingested, IngestError> {
    if let Some((features, spatial_reference)) = document::whole(text) {
        if features.len() > max_features {
            return Err(IngestError::TooManyFeatures {
                given: features.len(),
                max: max_features,
            });
        }
        let mut ingested = Ingested {
            features: Vec::with_capacity(features.len()),
            indexes: Vec::with_capacity(features.len()),
            rejected: Vec::new(),
        };
        for (offset, raw) in features.into_iter().enumerate() {
            ingested.take(
                first_index + offset,
                validate::feature(raw, schema, spatial_reference, received_ms),
            );
        }
        return Ok(ingested);
    }
    parse_each(text, schema, received_ms, first_index, max_features)
}

/// [`parse_document`] feature by feature, never in one pass: a malformed feature is reported
/// by its index. Public for the fuzz target that checks both ways read every document alike.
#[doc(hidden)]
pub fn parse_each(
    text: &str,
    schema: &Schema,
    received_ms: i64,
    first_index: usize,
    max_features: usize,
) -> Result<Ingested, IngestError> {
    let document = document::split(text)?;
    if document.features.len() > max_features {
        return Err(IngestError::TooManyFeatures {
            given: document.features.len(),
            max: max_features,
        });
    }
    let mut ingested = Ingested {
        features: Vec::with_capacity(document.features.len()),
        indexes: Vec::with_capacity(document.features.len()),
        rejected: Vec::new(),
    };
    for (offset, raw) in document.features.into_iter().enumerate() {
        let index = first_index + offset;
        let outcome = document::feature(raw)
            .map_err(Reason::Malformed)
            .and_then(|raw| {
                validate::feature(raw, schema, document.spatial_reference, received_ms)
            });
        ingested.take(index, outcome);
    }
    Ok(ingested)
}

/// Checks one feature given by field index (values not yet typed, the geometry in the schema's
/// own spatial reference) by the rules of the JSON forms: a binary message of the backbone is
/// trusted no more than a client's document.
pub(crate) fn indexed_feature<'a>(
    schema: &Schema,
    given: impl IntoIterator<Item = (usize, Scalar<'a>)>,
    geometry: crate::geometry::Geometry,
    received_ms: i64,
) -> Result<Feature, Reason> {
    validate::feature_by_index(schema, given, geometry, received_ms)
}

/// Whether a feature this node validated on receipt would also be valid had it been received
/// at `received_ms` (the rules are the same but for the start time's lead over the time of
/// receipt): what the backbone checks of the observations this node appended to the log
/// instead of reading them back, so that it refuses exactly what every other node refuses.
pub(crate) fn still_valid_at(
    schema: &Schema,
    feature: &Feature,
    received_ms: i64,
) -> Result<(), Reason> {
    validate::still_valid_at(schema, feature, received_ms)
}

/// Parses a message from a source (a NATS subject, an MQTT topic): one document in any form
/// the HTTP ingest takes, or NDJSON lines.
pub fn parse_message(
    payload: &[u8],
    schema: &Schema,
    received_ms: i64,
    max_features: usize,
) -> Result<Ingested, IngestError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| DocumentError::NotJson("the message is not UTF-8".into()))?;
    match parse_document(text, schema, received_ms, 0, max_features) {
        Err(IngestError::Document(_)) if text.trim().contains('\n') => {
            let mut position = NdjsonPosition::default();
            match parse_ndjson(text, schema, received_ms, max_features, &mut position) {
                (ingested, None) => Ok(ingested),
                (_, Some((_, err))) => Err(err),
            }
        }
        other => other,
    }
}

/// The keys of the flat form most devices send (`{"id": .., "lat": .., "lon": .., ...}`):
/// which key holds the track id, the latitude, the longitude and (optionally) the start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatFields {
    /// The track id's key (default `id`).
    pub id: String,
    /// The latitude's key, WGS84 degrees (default `lat`).
    pub lat: String,
    /// The longitude's key, WGS84 degrees (default `lon`).
    pub lon: String,
    /// The start time's key (epoch milliseconds or RFC 3339 text), if any; without it a key
    /// named as the start-time field is taken, else the time of receipt.
    pub time: Option<String>,
}

impl Default for FlatFields {
    fn default() -> FlatFields {
        FlatFields {
            id: "id".into(),
            lat: "lat".into(),
            lon: "lon".into(),
            time: None,
        }
    }
}

/// Parses a message as [`parse_message`] does, or, when it is a JSON object (or array of
/// objects) that is not a feature document, as the flat form: the track id, latitude,
/// longitude and time under the keys `flat` names, other keys taken as the service's fields
/// of the same name (keys that name no field are ignored: devices send more than a map needs).
pub fn parse_message_or_flat(
    payload: &[u8],
    schema: &Schema,
    received_ms: i64,
    max_features: usize,
    flat: &FlatFields,
) -> Result<Ingested, IngestError> {
    match parse_message(payload, schema, received_ms, max_features) {
        Err(IngestError::Document(DocumentError::NotFeatures(_))) => {
            parse_flat(payload, schema, received_ms, max_features, flat)
        }
        other => other,
    }
}

fn parse_flat(
    payload: &[u8],
    schema: &Schema,
    received_ms: i64,
    max_features: usize,
    flat: &FlatFields,
) -> Result<Ingested, IngestError> {
    use serde_json::{Map, Value};
    let not_flat = || {
        IngestError::Document(DocumentError::NotFeatures(
            "neither a feature document nor flat objects with the configured id, lat and lon keys",
        ))
    };
    let value: Value =
        serde_json::from_slice(payload).map_err(|err| DocumentError::NotJson(err.to_string()))?;
    let objects = match value {
        Value::Object(object) => vec![object],
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(object) => Ok(object),
                _ => Err(not_flat()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(not_flat()),
    };
    if objects.len() > max_features {
        return Err(IngestError::TooManyFeatures {
            given: objects.len(),
            max: max_features,
        });
    }
    let track = &schema.fields()[schema.track_id_field()].name;
    let start = schema
        .start_time_field()
        .map(|index| schema.fields()[index].name.clone());
    let mut features = Vec::with_capacity(objects.len());
    for object in objects {
        if !object.contains_key(&flat.lat) || !object.contains_key(&flat.lon) {
            return Err(not_flat());
        }
        let mut attributes = Map::new();
        let (mut x, mut y) = (Value::Null, Value::Null);
        for (key, value) in object {
            if key == flat.lat {
                y = value;
            } else if key == flat.lon {
                x = value;
            } else if key == flat.id {
                attributes.insert(track.clone(), value);
            } else if Some(&key) == flat.time.as_ref() {
                if let Some(start) = &start {
                    let value = match &value {
                        Value::String(text) => {
                            crate::filter::parse_rfc3339(text).map_or(value, Value::from)
                        }
                        _ => value,
                    };
                    attributes.insert(start.clone(), value);
                }
            } else if let Some(index) = schema.field_index(&key) {
                attributes.insert(schema.fields()[index].name.clone(), value);
            }
        }
        features
            .push(serde_json::json!({ "attributes": attributes, "geometry": { "x": x, "y": y } }));
    }
    let text = Value::Array(features).to_string();
    parse_document(&text, schema, received_ms, 0, max_features)
}

/// Where an NDJSON body stands: features and lines read so far (a streamed body is parsed a
/// piece at a time).
#[derive(Clone, Copy, Debug, Default)]
pub struct NdjsonPosition {
    /// Features read so far (the index of the next one).
    pub features: usize,
    /// Lines read so far.
    pub lines: usize,
}

/// Parses complete NDJSON lines: one document per non-blank line (each holding at most
/// `max_features`, so that a body may stream for as long as its sender likes), feature indexes
/// counted across lines from `position`, which it advances. A line that is not a document
/// stops the parse: what the lines before it held comes back with the line's number (from 1)
/// and why.
pub fn parse_ndjson(
    text: &str,
    schema: &Schema,
    received_ms: i64,
    max_features: usize,
    position: &mut NdjsonPosition,
) -> (Ingested, Option<(usize, IngestError)>) {
    let mut ingested = Ingested::default();
    for line in text.lines() {
        position.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_document(line, schema, received_ms, position.features, max_features) {
            Ok(more) => {
                position.features += more.total();
                ingested.extend(more);
            }
            Err(error) => return (ingested, Some((position.lines, error))),
        }
    }
    (ingested, None)
}

#[cfg(test)]
mod tests;
