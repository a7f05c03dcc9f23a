//! The services file (`--services`): JSON declaring stream services, each with its schema
//! (ArcGIS field types, objectIdField, trackIdField, geometryType, spatial reference) and its
//! simulator settings.
//!
//! ```json
//! {"services": [{"name": "trails", "geometryType": "esriGeometryPolyline",
//!                "simulator": {"features": 200, "hz": 2, "seed": 7, "trailVertices": 10}}]}
//! ```
//! `fields` may be omitted: the service then has the default vehicles schema (a GTFS-Realtime
//! service: the ready-made GTFS schema). `simulator` omitted takes the global settings (a
//! service with `mqtt` or `gtfsRealtime`: none); `"simulator": null` declares a service
//! without one. `mqtt` (`url`, `version`, `topics`, `qos`, `clientId`, `username`, `password`,
//! `caFile`, `fields`)
//! and `gtfsRealtime` (`url`, `intervalSecs`, `timeoutSecs`, `headers`) name an outside feed.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::feature::{Field, FieldType, GeometryType, Schema};
use crate::geometry::Wkid;
use crate::service::{Service, SimulatorSettings, vehicles_schema};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    services: Vec<ServiceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceEntry {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    geometry_type: Option<String>,
    #[serde(default)]
    spatial_reference: Option<SpatialReference>,
    #[serde(default)]
    object_id_field: Option<String>,
    #[serde(default)]
    track_id_field: Option<String>,
    #[serde(default)]
    fields: Option<Vec<FieldEntry>>,
    #[serde(default)]
    max_feature_age_secs: Option<u64>,
    #[serde(default)]
    ingest_subject: Option<String>,
    #[serde(default)]
    ingest_delivery: Option<String>,
    #[serde(default = "keep_default_simulator", deserialize_with = "nullable")]
    simulator: Option<Option<SimulatorEntry>>,
    #[serde(default)]
    mqtt: Option<MqttEntry>,
    #[serde(default)]
    gtfs_realtime: Option<GtfsRealtimeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MqttEntry {
    url: String,
    #[serde(default)]
    version: Option<String>,
    topics: Vec<String>,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    fields: Option<FlatEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatEntry {
    id: Option<String>,
    lat: Option<String>,
    lon: Option<String>,
    time: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GtfsRealtimeEntry {
    url: String,
    #[serde(default)]
    interval_secs: Option<f64>,
    #[serde(default)]
    timeout_secs: Option<f64>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

fn mqtt_feed(
    service: &str,
    entry: MqttEntry,
    base: &Path,
) -> Result<crate::service::MqttFeed, String> {
    let address = crate::service::MqttFeed::parse_url(&entry.url)
        .map_err(|err| format!("mqtt url: {err}"))?;
    if entry.topics.is_empty() {
        return Err("mqtt topics: give at least one topic filter".into());
    }
    for topic in &entry.topics {
        let levels: Vec<&str> = topic.split('/').collect();
        let bad_wildcard = levels.iter().enumerate().any(|(index, level)| {
            (level.contains('#') && (*level != "#" || index + 1 != levels.len()))
                || (level.contains('+') && *level != "+")
        });
        if topic.is_empty() || bad_wildcard || topic.contains('\0') {
            return Err(format!(
                "mqtt topic {topic:?}: not a topic filter ('+' is a whole level, '#' the whole last level)"
            ));
        }
    }
    let qos = match entry.qos.unwrap_or(1) {
        qos @ (0 | 1) => qos,
        other => return Err(format!("mqtt qos {other}: 0 or 1")),
    };
    let version = match entry.version.as_deref() {
        None | Some("3.1.1") => crate::service::MqttVersion::V311,
        Some("5" | "5.0") => crate::service::MqttVersion::V5,
        Some(other) => return Err(format!("mqtt version {other:?}: \"3.1.1\" or \"5\"")),
    };
    let defaults = crate::ingest::FlatFields::default();
    let flat = match entry.fields {
        None => defaults,
        Some(fields) => crate::ingest::FlatFields {
            id: fields.id.unwrap_or(defaults.id),
            lat: fields.lat.unwrap_or(defaults.lat),
            lon: fields.lon.unwrap_or(defaults.lon),
            time: fields.time,
        },
    };
    Ok(crate::service::MqttFeed {
        version,
        host: address.host,
        port: address.port,
        tls: address.tls,
        // Relative to the services file.
        ca_file: entry
            .ca_file
            .map(|file| base.join(file).display().to_string()),
        username: entry.username.or(address.username),
        password: entry.password.or(address.password),
        topics: entry.topics,
        qos,
        client_id: entry
            .client_id
            .unwrap_or_else(|| format!("featurestream-{service}")),
        flat,
    })
}

fn gtfs_feed(entry: GtfsRealtimeEntry) -> Result<crate::service::GtfsRealtimeFeed, String> {
    if !(entry.url.starts_with("http://") || entry.url.starts_with("https://")) {
        return Err(format!(
            "gtfsRealtime url {:?}: http:// or https://",
            entry.url
        ));
    }
    let seconds = |value: Option<f64>, default: f64, what: &str| {
        let value = value.unwrap_or(default);
        if value.is_finite() && (0.1..=86_400.0).contains(&value) {
            Ok(std::time::Duration::from_secs_f64(value))
        } else {
            Err(format!("gtfsRealtime {what}: from 0.1 to 86400 seconds"))
        }
    };
    Ok(crate::service::GtfsRealtimeFeed {
        url: entry.url,
        interval: seconds(entry.interval_secs, 15.0, "intervalSecs")?,
        timeout: seconds(entry.timeout_secs, 10.0, "timeoutSecs")?,
        headers: entry.headers.into_iter().collect(),
    })
}

fn keep_default_simulator() -> Option<Option<SimulatorEntry>> {
    None
}

fn nullable<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<SimulatorEntry>>, D::Error> {
    Option::<SimulatorEntry>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct SpatialReference {
    wkid: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldEntry {
    name: String,
    #[serde(rename = "type")]
    field_type: String,
    #[serde(default)]
    nullable: bool,
    #[serde(default)]
    length: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SimulatorEntry {
    features: Option<usize>,
    hz: Option<f64>,
    seed: Option<u64>,
    trail_vertices: Option<usize>,
    routes: Option<String>,
}

/// Reads and validates a services file.
pub(super) fn load(
    path: &Path,
    defaults: &SimulatorSettings,
    max_feature_age: Option<std::time::Duration>,
) -> Result<Vec<Service>, ConfigError> {
    let fail = |reason: String| ConfigError::Services {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
    let file: File = serde_json::from_str(&text).map_err(|err| fail(err.to_string()))?;
    if file.services.is_empty() {
        return Err(fail("declares no services".into()));
    }
    let mut services: Vec<Service> = Vec::new();
    for entry in file.services {
        let base = path.parent().unwrap_or(Path::new("."));
        let service = entry_to_service(entry, defaults, max_feature_age, base).map_err(&fail)?;
        if services
            .iter()
            .any(|other| other.name.eq_ignore_ascii_case(&service.name))
        {
            return Err(fail(format!(
                "service \"{}\" is declared twice",
                service.name
            )));
        }
        services.push(service);
    }
    Ok(services)
}

fn entry_to_service(
    entry: ServiceEntry,
    defaults: &SimulatorSettings,
    max_feature_age: Option<std::time::Duration>,
    base: &Path,
) -> Result<Service, String> {
    let name = entry.name;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(format!(
            "service name \"{name}\" must be letters, digits, '_' or '-'"
        ));
    }
    let geometry_type = match entry.geometry_type.as_deref() {
        None | Some("esriGeometryPoint") => GeometryType::Point,
        Some("esriGeometryPolyline") => GeometryType::Polyline,
        Some(other) => {
            return Err(format!(
                "{name}: geometryType \"{other}\" is not esriGeometryPoint or esriGeometryPolyline"
            ));
        }
    };
    let wkid = match entry.spatial_reference {
        None => Wkid::Wgs84,
        Some(reference) => {
            Wkid::from_number(reference.wkid).map_err(|err| format!("{name}: {err}"))?
        }
    };
    let feed = match (entry.mqtt, entry.gtfs_realtime) {
        (Some(_), Some(_)) => {
            return Err(format!("{name}: give mqtt or gtfsRealtime, not both"));
        }
        (Some(mqtt), None) => Some(crate::service::Feed::Mqtt(
            mqtt_feed(&name, mqtt, base).map_err(|err| format!("{name}: {err}"))?,
        )),
        (None, Some(gtfs)) => Some(crate::service::Feed::GtfsRealtime(
            gtfs_feed(gtfs).map_err(|err| format!("{name}: {err}"))?,
        )),
        (None, None) => None,
    };
    let schema = match entry.fields {
        // A GTFS-Realtime service without fields of its own: the ready-made schema.
        None if matches!(feed, Some(crate::service::Feed::GtfsRealtime(_))) => {
            crate::service::gtfs_realtime_schema()
        }
        None => vehicles_schema(geometry_type, wkid),
        Some(fields) => {
            let fields = fields
                .into_iter()
                .map(|field| {
                    let field_type =
                        FieldType::from_esri_name(&field.field_type).ok_or_else(|| {
                            format!(
                                "{name}: field \"{}\" has unknown type \"{}\"",
                                field.name, field.field_type
                            )
                        })?;
                    Ok(Field {
                        name: field.name,
                        field_type,
                        nullable: field.nullable,
                        length: field.length,
                    })
                })
                .collect::<Result<Vec<Field>, String>>()?;
            let object_id = entry.object_id_field.as_deref().unwrap_or("OBJECTID");
            let track_id = entry.track_id_field.as_deref().unwrap_or("TRACKID");
            Schema::new(fields, object_id, track_id, geometry_type, wkid)
                .map_err(|err| format!("{name}: {err}"))?
        }
    };
    let simulator = match entry.simulator {
        // A service fed from outside is not simulated unless its entry says so.
        None if feed.is_some() => None,
        None => Some(defaults.clone()),
        Some(None) => None,
        Some(Some(settings)) => {
            let hz = settings.hz.unwrap_or(defaults.hz);
            if !(hz > 0.0 && hz <= 1000.0) {
                return Err(format!(
                    "{name}: simulator hz must be above 0 and at most 1000"
                ));
            }
            Some(SimulatorSettings {
                features: settings
                    .features
                    .unwrap_or(defaults.features)
                    .clamp(1, 1_000_000),
                hz,
                seed: settings.seed.unwrap_or(defaults.seed),
                trail_vertices: settings
                    .trail_vertices
                    .unwrap_or(defaults.trail_vertices)
                    .clamp(2, 1000),
                routes: match settings.routes {
                    // Relative to the services file.
                    Some(routes) => Some(
                        crate::simulator::load_routes(&base.join(routes))
                            .map_err(|reason| format!("{name}: {reason}"))?,
                    ),
                    None => defaults.routes.clone(),
                },
            })
        }
    };
    Ok(Service {
        name: name.clone(),
        description: entry.description.unwrap_or_else(|| name.clone()),
        schema,
        simulator,
        max_feature_age: match entry.max_feature_age_secs {
            Some(0) => None,
            Some(secs) => Some(std::time::Duration::from_secs(secs)),
            // A vehicle that leaves a GTFS-Realtime feed expires after five minutes unless
            // the service says otherwise.
            None if matches!(feed, Some(crate::service::Feed::GtfsRealtime(_))) => {
                max_feature_age.or(Some(std::time::Duration::from_secs(300)))
            }
            None => max_feature_age,
        },
        ingest_subject: match (entry.ingest_subject, entry.ingest_delivery) {
            (Some(subject), delivery) => {
                super::check_subject(&subject)
                    .map_err(|reason| format!("ingestSubject {subject:?}: {reason}"))?;
                let delivery = match delivery {
                    None => crate::service::Delivery::AtMostOnce,
                    Some(text) => crate::service::Delivery::parse(&text).ok_or_else(|| {
                        format!("ingestDelivery {text:?}: atMostOnce or atLeastOnce")
                    })?,
                };
                Some(crate::service::IngestSubject { subject, delivery })
            }
            (None, Some(_)) => return Err("ingestDelivery needs an ingestSubject".into()),
            (None, None) => None,
        },
        feed,
    })
}
