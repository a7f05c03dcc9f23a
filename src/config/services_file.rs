//! The services file (`--services`): JSON declaring stream services, each with its schema
//! (ArcGIS field types, objectIdField, trackIdField, geometryType, spatial reference) and its
//! simulator settings.
//!
//! ```json
//! {"services": [{"name": "trails", "geometryType": "esriGeometryPolyline",
//!                "simulator": {"features": 200, "hz": 2, "seed": 7, "trailVertices": 10}}]}
//! ```
//! `fields` may be omitted: the service then has the default vehicles schema. `simulator`
//! omitted takes the global settings; `"simulator": null` declares a service without one.

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
    let schema = match entry.fields {
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
    })
}
