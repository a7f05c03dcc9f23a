//! A GTFS-Realtime VehiclePositions feed, polled over HTTP (`reqwest`) and decoded with
//! `prost` from the messages of the official `gtfs-realtime.proto` (the part a vehicle
//! position needs, field numbers as the proto gives them; everything else is skipped, as
//! protobuf does with what it does not know).
//!
//! Each poll sends the feed's headers (an API key) and `If-None-Match` / `If-Modified-Since`
//! from the last answer; 304 costs nothing. Every `VehiclePosition` with a position becomes an
//! observation of the track `vehicle.id` (else the entity id): position, bearing, speed, the
//! vehicle's `timestamp` (else the feed's) as the start time, trip, route, direction, stop,
//! current status and occupancy as attributes (those the service's schema has). A vehicle
//! that leaves the feed expires with the service's `maxFeatureAgeSecs`. A failed poll (HTTP
//! error, timeout, bad protobuf) keeps the state as it is and is tried again with backoff;
//! entities without a position are counted and skipped.

use std::sync::Arc;
use std::time::Duration;

use std::borrow::Cow;

use crate::broker::ServiceRuntime;
use crate::ingest::{Complaints, IngestError, Ingested};
use crate::service::GtfsRealtimeFeed;
use crate::source::{FeedHealth, Lease};

/// The largest feed read (a feed of 100,000 vehicles is about 15 MB).
const MAX_FEED_BYTES: usize = 64 << 20;
/// Longest pause after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// `FeedMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeedMessage {
    /// Metadata about the feed.
    #[prost(message, optional, tag = "1")]
    pub header: Option<FeedHeader>,
    /// The feed's contents.
    #[prost(message, repeated, tag = "2")]
    pub entity: Vec<FeedEntity>,
}

/// `FeedHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeedHeader {
    /// Version of the feed specification (`2.0`).
    #[prost(string, optional, tag = "1")]
    pub gtfs_realtime_version: Option<String>,
    /// `FULL_DATASET` (0) or `DIFFERENTIAL` (1).
    #[prost(int32, optional, tag = "2")]
    pub incrementality: Option<i32>,
    /// When the feed's content was created, POSIX seconds.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
}

/// `FeedEntity`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeedEntity {
    /// Unique within the feed.
    #[prost(string, optional, tag = "1")]
    pub id: Option<String>,
    /// Whether the entity is to be deleted (incremental feeds).
    #[prost(bool, optional, tag = "2")]
    pub is_deleted: Option<bool>,
    /// A vehicle's position.
    #[prost(message, optional, tag = "4")]
    pub vehicle: Option<VehiclePosition>,
}

/// `VehiclePosition`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VehiclePosition {
    /// The trip the vehicle serves.
    #[prost(message, optional, tag = "1")]
    pub trip: Option<TripDescriptor>,
    /// Where it is.
    #[prost(message, optional, tag = "2")]
    pub position: Option<Position>,
    /// The stop sequence index of the current stop.
    #[prost(uint32, optional, tag = "3")]
    pub current_stop_sequence: Option<u32>,
    /// `INCOMING_AT` (0), `STOPPED_AT` (1), `IN_TRANSIT_TO` (2).
    #[prost(int32, optional, tag = "4")]
    pub current_status: Option<i32>,
    /// When the position was measured, POSIX seconds.
    #[prost(uint64, optional, tag = "5")]
    pub timestamp: Option<u64>,
    /// The current stop.
    #[prost(string, optional, tag = "7")]
    pub stop_id: Option<String>,
    /// The vehicle.
    #[prost(message, optional, tag = "8")]
    pub vehicle: Option<VehicleDescriptor>,
    /// `EMPTY` (0) .. `NOT_BOARDABLE` (8).
    #[prost(int32, optional, tag = "9")]
    pub occupancy_status: Option<i32>,
}

/// `TripDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TripDescriptor {
    /// The trip.
    #[prost(string, optional, tag = "1")]
    pub trip_id: Option<String>,
    /// Its start date, `YYYYMMDD`.
    #[prost(string, optional, tag = "3")]
    pub start_date: Option<String>,
    /// Its route.
    #[prost(string, optional, tag = "5")]
    pub route_id: Option<String>,
    /// Its direction.
    #[prost(uint32, optional, tag = "6")]
    pub direction_id: Option<u32>,
}

/// `VehicleDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VehicleDescriptor {
    /// Internal id of the vehicle: the track id.
    #[prost(string, optional, tag = "1")]
    pub id: Option<String>,
    /// What riders see.
    #[prost(string, optional, tag = "2")]
    pub label: Option<String>,
    /// The licence plate.
    #[prost(string, optional, tag = "3")]
    pub license_plate: Option<String>,
}

/// `Position`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Position {
    /// WGS84 degrees.
    #[prost(float, optional, tag = "1")]
    pub latitude: Option<f32>,
    /// WGS84 degrees.
    #[prost(float, optional, tag = "2")]
    pub longitude: Option<f32>,
    /// Degrees clockwise from north.
    #[prost(float, optional, tag = "3")]
    pub bearing: Option<f32>,
    /// Metres per second.
    #[prost(float, optional, tag = "5")]
    pub speed: Option<f32>,
}

fn stop_status(value: i32) -> Cow<'static, str> {
    match value {
        0 => "INCOMING_AT".into(),
        1 => "STOPPED_AT".into(),
        2 => "IN_TRANSIT_TO".into(),
        other => other.to_string().into(),
    }
}

fn occupancy(value: i32) -> Cow<'static, str> {
    const NAMES: [&str; 9] = [
        "EMPTY",
        "MANY_SEATS_AVAILABLE",
        "FEW_SEATS_AVAILABLE",
        "STANDING_ROOM_ONLY",
        "CRUSHED_STANDING_ROOM_ONLY",
        "FULL",
        "NOT_ACCEPTING_PASSENGERS",
        "NO_DATA_AVAILABLE",
        "NOT_BOARDABLE",
    ];
    match usize::try_from(value)
        .ok()
        .and_then(|index| NAMES.get(index))
    {
        Some(name) => (*name).into(),
        None => value.to_string().into(),
    }
}

/// What a vehicle position says, named as the GTFS schema names it (`vehicle_id` and
/// `timestamp` go to the service's track id and start-time fields, whatever their names).
const ATTRIBUTES: [&str; 14] = [
    "vehicle_id",
    "label",
    "license_plate",
    "trip_id",
    "route_id",
    "direction_id",
    "start_date",
    "stop_id",
    "current_stop_sequence",
    "current_status",
    "occupancy_status",
    "bearing",
    "speed",
    "timestamp",
];

/// Where each of [`ATTRIBUTES`] goes in a service's schema: its JSON key, or nowhere.
pub struct Mapping {
    keys: [Option<Vec<u8>>; ATTRIBUTES.len()],
}

impl Mapping {
    /// The mapping onto `schema`: names matched case-insensitively, the track id and start
    /// time onto the schema's own fields.
    pub fn for_schema(schema: &crate::feature::Schema) -> Mapping {
        let key = |name: &str| {
            let mut key = serde_json::to_vec(name).expect("a string serialises");
            key.push(b':');
            key
        };
        let keys = ATTRIBUTES.map(|attribute| {
            let field = match attribute {
                "vehicle_id" => Some(schema.track_id_field()),
                "timestamp" => schema.start_time_field(),
                other => schema.field_index(other),
            };
            field.map(|index| key(&schema.fields()[index].name))
        });
        Mapping { keys }
    }
}

/// One value of a vehicle position.
enum Attribute<'a> {
    Text(Cow<'a, str>),
    Unsigned(u64),
    Float(f32),
}

/// A decoded feed as one Esri JSON document of observations for the service `mapping` was
/// made for; how many vehicles it holds, and how many entities had no position.
pub fn document(feed: &FeedMessage, mapping: &Mapping) -> (String, usize, u64) {
    let header_time = feed.header.as_ref().and_then(|header| header.timestamp);
    let mut out = Vec::with_capacity(feed.entity.len() * 256 + 2);
    out.push(b'[');
    let (mut vehicles, mut without_position) = (0, 0);
    for entity in &feed.entity {
        if entity.is_deleted == Some(true) {
            continue;
        }
        let Some(vehicle) = &entity.vehicle else {
            continue;
        };
        let Some((latitude, longitude)) = vehicle
            .position
            .as_ref()
            .and_then(|position| Some((position.latitude?, position.longitude?)))
        else {
            without_position += 1;
            continue;
        };
        let descriptor = vehicle.vehicle.as_ref();
        let trip = vehicle.trip.as_ref();
        let position = vehicle.position.as_ref();
        fn text(value: Option<&String>) -> Option<Attribute<'_>> {
            value.map(|text| Attribute::Text(Cow::Borrowed(text.as_str())))
        }
        let finite = |value: Option<f32>| value.filter(|v| v.is_finite()).map(Attribute::Float);
        let values: [Option<Attribute<'_>>; ATTRIBUTES.len()] = [
            text(
                descriptor
                    .and_then(|d| d.id.as_ref())
                    .filter(|id| !id.is_empty())
                    .or(entity.id.as_ref()),
            ),
            text(descriptor.and_then(|d| d.label.as_ref())),
            text(descriptor.and_then(|d| d.license_plate.as_ref())),
            text(trip.and_then(|t| t.trip_id.as_ref())),
            text(trip.and_then(|t| t.route_id.as_ref())),
            trip.and_then(|t| t.direction_id)
                .map(|value| Attribute::Unsigned(value.into())),
            text(trip.and_then(|t| t.start_date.as_ref())),
            text(vehicle.stop_id.as_ref()),
            vehicle
                .current_stop_sequence
                .map(|value| Attribute::Unsigned(value.into())),
            vehicle
                .current_status
                .map(|value| Attribute::Text(stop_status(value))),
            vehicle
                .occupancy_status
                .map(|value| Attribute::Text(occupancy(value))),
            finite(position.and_then(|p| p.bearing)),
            finite(position.and_then(|p| p.speed)),
            vehicle
                .timestamp
                .or(header_time)
                .filter(|seconds| *seconds > 0 && *seconds < (i64::MAX / 1000) as u64)
                .map(|seconds| Attribute::Unsigned(seconds * 1000)),
        ];
        if vehicles > 0 {
            out.push(b',');
        }
        vehicles += 1;
        out.extend_from_slice(br#"{"attributes":{"#);
        let mut first = true;
        for (key, value) in mapping.keys.iter().zip(values) {
            let (Some(key), Some(value)) = (key, value) else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            match value {
                Attribute::Text(text) => {
                    serde_json::to_writer(&mut out, text.as_ref()).expect("writing to a Vec")
                }
                Attribute::Unsigned(number) => {
                    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes())
                }
                Attribute::Float(number) => out.extend_from_slice(
                    ryu::Buffer::new()
                        .format_finite(f64::from(number))
                        .as_bytes(),
                ),
            }
        }
        out.extend_from_slice(br#"},"geometry":{"x":"#);
        write_coordinate(&mut out, longitude);
        out.extend_from_slice(br#","y":"#);
        write_coordinate(&mut out, latitude);
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    let text = String::from_utf8(out).expect("written from UTF-8 text and numbers");
    (text, vehicles, without_position)
}

/// A coordinate; one that is not finite is written `null` (and the observation refused).
fn write_coordinate(out: &mut Vec<u8>, value: f32) {
    if value.is_finite() {
        out.extend_from_slice(
            ryu::Buffer::new()
                .format_finite(f64::from(value))
                .as_bytes(),
        );
    } else {
        out.extend_from_slice(b"null");
    }
}

/// The observations of a feed's document, validated as any ingest.
pub fn ingest(
    document: &str,
    vehicles: usize,
    schema: &crate::feature::Schema,
    received_ms: i64,
) -> Result<Ingested, IngestError> {
    crate::ingest::parse_document(document, schema, received_ms, 0, vehicles.max(1))
}

/// What one poll found.
enum Poll {
    /// A new feed.
    Feed(bytes::Bytes),
    /// 304: as before.
    NotModified,
}

/// The validators of the last answer, sent with the next poll.
#[derive(Default)]
struct Validators {
    etag: Option<reqwest::header::HeaderValue>,
    last_modified: Option<reqwest::header::HeaderValue>,
}

async fn poll(
    client: &reqwest::Client,
    feed: &GtfsRealtimeFeed,
    validators: &mut Validators,
) -> Result<Poll, (&'static str, String)> {
    let mut request = client.get(&feed.url).timeout(feed.timeout);
    for (name, value) in &feed.headers {
        request = request.header(name, value);
    }
    if let Some(etag) = &validators.etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = &validators.last_modified {
        request = request.header(reqwest::header::IF_MODIFIED_SINCE, modified.clone());
    }
    let failure = |err: reqwest::Error| {
        if err.is_timeout() {
            ("timeout", format!("no answer within {:?}", feed.timeout))
        } else {
            ("httpError", without_url(&err))
        }
    };
    let mut response = request.send().await.map_err(failure)?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Poll::NotModified);
    }
    if !status.is_success() {
        return Err(("httpError", format!("HTTP {status}")));
    }
    let headers = response.headers();
    validators.etag = headers.get(reqwest::header::ETAG).cloned();
    validators.last_modified = headers.get(reqwest::header::LAST_MODIFIED).cloned();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(failure)? {
        if body.len() + chunk.len() > MAX_FEED_BYTES {
            return Err((
                "tooLarge",
                format!("the feed is larger than {MAX_FEED_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Poll::Feed(body.freeze()))
}

/// An error without the URL reqwest puts in it (it may carry an API key).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "the feed");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Polls the feed while the node runs and holds `lease`.
pub(super) async fn run(
    feed: GtfsRealtimeFeed,
    runtime: Arc<ServiceRuntime>,
    lease: Arc<Lease>,
    health: Arc<FeedHealth>,
) {
    let name = runtime.service.name.clone();
    let complaints = Complaints::new(&name);
    let client = match reqwest::Client::builder()
        .user_agent(concat!("featurestream/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            log::error!("service {name}: an HTTP client for GTFS-Realtime: {err}");
            health.set_connected(false, Some(err.to_string()));
            return;
        }
    };
    let mapping = Mapping::for_schema(&runtime.service.schema);
    let mut validators = Validators::default();
    let mut failures = 0u32;
    loop {
        if !lease.is_held() {
            health.set_running_here(false);
            validators = Validators::default();
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        health.set_running_here(true);
        let outcome = poll(&client, &feed, &mut validators).await;
        let outcome = match outcome {
            Ok(Poll::NotModified) => {
                health.count("notModified", 1);
                Ok(())
            }
            Ok(Poll::Feed(body)) => match <FeedMessage as prost::Message>::decode(body.as_ref()) {
                Err(err) => {
                    validators = Validators::default();
                    Err(("badProtobuf", format!("not a GTFS-Realtime feed: {err}")))
                }
                Ok(message) => {
                    health.count("poll", 1);
                    let (text, vehicles, without_position) = document(&message, &mapping);
                    health.count("noPosition", without_position);
                    health.count("vehicles", vehicles as u64);
                    if vehicles > 0 {
                        let (report, refused) = runtime
                            .take_message(|schema, received_ms| {
                                ingest(&text, vehicles, schema, received_ms)
                            })
                            .await;
                        complaints.note(&feed_origin(&feed), &report, refused.as_ref());
                    }
                    Ok(())
                }
            },
            Err(failure) => Err(failure),
        };
        let pause = match outcome {
            Ok(()) => {
                failures = 0;
                health.set_connected(true, None);
                feed.interval
            }
            Err((outcome, message)) => {
                failures = failures.saturating_add(1);
                health.count(outcome, 1);
                health.set_connected(false, Some(message.clone()));
                let pause = feed
                    .interval
                    .saturating_mul(1 << failures.min(8))
                    .min(MAX_BACKOFF.max(feed.interval));
                log::warn!(
                    "service {name}: GTFS-Realtime {}: {message}; the state is kept, again in {pause:?}",
                    feed_origin(&feed)
                );
                pause
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// The feed's URL without its query (where API keys often go).
pub fn feed_origin(feed: &GtfsRealtimeFeed) -> String {
    feed.url
        .split_once('?')
        .map_or(feed.url.clone(), |(base, _)| base.to_owned())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn entity(id: &str, vehicle: Option<VehiclePosition>) -> FeedEntity {
        FeedEntity {
            id: Some(id.into()),
            is_deleted: None,
            vehicle,
        }
    }

    #[test]
    fn vehicle_positions_become_observations_and_the_rest_is_counted() {
        let feed = FeedMessage {
            header: Some(FeedHeader {
                gtfs_realtime_version: Some("2.0".into()),
                incrementality: Some(0),
                timestamp: Some(1_800_000_000),
            }),
            entity: vec![
                entity(
                    "e1",
                    Some(VehiclePosition {
                        trip: Some(TripDescriptor {
                            trip_id: Some("t1".into()),
                            start_date: Some("20261207".into()),
                            route_id: Some("R5".into()),
                            direction_id: Some(1),
                        }),
                        position: Some(Position {
                            latitude: Some(34.5),
                            longitude: Some(-117.25),
                            bearing: Some(90.0),
                            speed: Some(12.5),
                        }),
                        current_stop_sequence: Some(7),
                        current_status: Some(1),
                        timestamp: Some(1_800_000_005),
                        stop_id: Some("S9".into()),
                        vehicle: Some(VehicleDescriptor {
                            id: Some("bus-42".into()),
                            label: Some("42".into()),
                            license_plate: None,
                        }),
                        occupancy_status: Some(2),
                    }),
                ),
                entity("e2", Some(VehiclePosition::default())),
                entity("e3", None),
            ],
        };
        let decoded = FeedMessage::decode(feed.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, feed);
        let schema = crate::service::gtfs_realtime_schema();
        let (text, vehicles, without) = document(&decoded, &Mapping::for_schema(&schema));
        assert_eq!((vehicles, without), (1, 1));
        let features: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            features,
            serde_json::json!([{
                "attributes": {
                    "vehicle_id": "bus-42", "label": "42", "trip_id": "t1", "route_id": "R5",
                    "direction_id": 1, "start_date": "20261207", "stop_id": "S9",
                    "current_stop_sequence": 7, "current_status": "STOPPED_AT",
                    "occupancy_status": "FEW_SEATS_AVAILABLE", "bearing": 90.0, "speed": 12.5,
                    "timestamp": 1_800_000_005_000_u64
                },
                "geometry": { "x": -117.25, "y": 34.5 }
            }])
        );
        let ingested = ingest(&text, vehicles, &schema, 1_800_000_010_000).unwrap();
        assert_eq!(ingested.features.len(), 1, "{:?}", ingested.rejected);
    }
}
