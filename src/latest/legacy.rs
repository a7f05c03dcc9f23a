//! The state file of format 1 (one JSON file per service, saved every 30 s): read once at
//! start when a state directory has no store of format 2 yet, so that an upgrade keeps the
//! state (`latest::store` imports it and sets it aside). A file that cannot be read, or that
//! belongs to another schema, is set aside (renamed `*.corrupt-<epoch ms>`) with a clear log
//! line. Writing it is kept for tests only.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::feature::{Feature, FieldType, FieldValue, Schema};
use crate::geometry::Geometry;

/// What a file identifies itself as.
const FORMAT: &str = "featurestream-latest-state";
const VERSION: u32 = 1;

/// A service's state as saved: every track's latest observation with its receive time, and
/// the next object id.
#[derive(Debug, Default, PartialEq)]
pub struct Saved {
    /// Observations and the epoch milliseconds they were received.
    pub observations: Vec<(Feature, i64)>,
    /// The object id the next observation gets.
    pub next_object_id: i64,
    /// The id the next resent copy gets.
    pub next_resend_id: i64,
}

#[cfg(test)]
impl Saved {
    /// A copy of a state to save.
    pub fn of(state: &super::LatestState) -> Saved {
        Saved::of_frozen(
            &state.frozen(),
            state.next_object_id(),
            state.next_resend_id(),
        )
    }

    /// A copy of a frozen state to save, with the id sequences it was taken with.
    pub fn of_frozen(frozen: &super::Frozen, next_object_id: i64, next_resend_id: i64) -> Saved {
        Saved {
            observations: frozen
                .iter()
                .map(|(_, slot)| ((*slot.feature).clone(), slot.received_ms))
                .collect(),
            next_object_id,
            next_resend_id,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileBody {
    format: String,
    version: u32,
    service: String,
    /// `name:esriFieldType` of each field, in order: a file of another schema is foreign.
    fields: Vec<String>,
    geometry_type: String,
    wkid: u32,
    next_object_id: i64,
    #[serde(default)]
    next_resend_id: i64,
    observations: Vec<Observation>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Observation {
    received: i64,
    attributes: Vec<Value>,
    geometry: Shape,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Value {
    Null(()),
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
enum Shape {
    #[serde(rename = "point")]
    Point([f64; 2]),
    #[serde(rename = "paths")]
    Paths(Vec<Vec<[f64; 2]>>),
    #[serde(rename = "rings")]
    Rings(Vec<Vec<[f64; 2]>>),
}

fn field_signature(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|field| format!("{}:{:?}", field.name, field.field_type))
        .collect()
}

#[cfg(test)]
/// Writes a state atomically: a temporary file of its own (created new, never through a
/// link planted in its place), fsync, rename, fsync of the directory. A failed write leaves
/// the previous file whole and removes its partial temporary file.
pub fn save(path: &Path, service: &str, schema: &Schema, saved: &Saved) -> std::io::Result<()> {
    let body = FileBody {
        format: FORMAT.to_owned(),
        version: VERSION,
        service: service.to_owned(),
        fields: field_signature(schema),
        geometry_type: schema.geometry_type.esri_name().to_owned(),
        wkid: schema.wkid.number(),
        next_object_id: saved.next_object_id,
        next_resend_id: saved.next_resend_id,
        observations: saved
            .observations
            .iter()
            .map(|(feature, received)| Observation {
                received: *received,
                attributes: feature.attributes.iter().map(value).collect(),
                geometry: match &feature.geometry {
                    Geometry::Point { x, y } => Shape::Point([*x, *y]),
                    Geometry::Polyline { paths } => Shape::Paths(paths.clone()),
                    Geometry::Polygon { rings } => Shape::Rings(rings.clone()),
                },
            })
            .collect(),
    };
    let temporary = path.with_extension("json.tmp");
    // Whatever is there (a crash's leftover, a planted link) goes; the link itself, not what
    // it points at. `create_new` then refuses anything that appears meanwhile.
    match std::fs::remove_file(&temporary) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let written = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        let mut file = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut file, &body)?;
        let file = file.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
        return written;
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        // The rename itself is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
fn value(value: &FieldValue) -> Value {
    match value {
        FieldValue::Null => Value::Null(()),
        FieldValue::Integer(number) | FieldValue::Date(number) => Value::Integer(*number),
        FieldValue::Double(number) => Value::Float(*number),
        FieldValue::String(text) => Value::Text(text.to_string()),
        FieldValue::Boolean(flag) => Value::Bool(*flag),
    }
}

/// Why a saved file is not used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It cannot be read.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// It is not a state file, or a damaged one.
    #[error("it is not a featurestream state file or it is damaged: {0}")]
    Corrupt(String),
    /// It is the state of another service or schema.
    #[error("it belongs to {0}")]
    Foreign(String),
}

/// Reads a saved state for `service`: `Ok(None)` when there is no file.
pub fn load(path: &Path, service: &str, schema: &Schema) -> Result<Option<Saved>, LoadError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let body: FileBody =
        serde_json::from_slice(&text).map_err(|err| LoadError::Corrupt(err.to_string()))?;
    if body.format != FORMAT || body.version != VERSION {
        return Err(LoadError::Corrupt(format!(
            "format {} version {}",
            body.format, body.version
        )));
    }
    if body.service != service
        || body.fields != field_signature(schema)
        || body.geometry_type != schema.geometry_type.esri_name()
        || body.wkid != schema.wkid.number()
    {
        return Err(LoadError::Foreign(format!(
            "service \"{}\" with another schema or spatial reference",
            body.service
        )));
    }
    let mut observations = Vec::with_capacity(body.observations.len());
    for (index, observation) in body.observations.into_iter().enumerate() {
        let bad = |what: &str| LoadError::Corrupt(format!("observation {index}: {what}"));
        if observation.attributes.len() != schema.fields().len() {
            return Err(bad("wrong number of attributes"));
        }
        let attributes = observation
            .attributes
            .into_iter()
            .zip(schema.fields())
            .map(|(value, field)| restore_value(value, field.field_type))
            .collect::<Option<Vec<FieldValue>>>()
            .ok_or_else(|| bad("an attribute of the wrong type"))?;
        let geometry = match (observation.geometry, schema.geometry_type) {
            (Shape::Point([x, y]), crate::feature::GeometryType::Point) => Geometry::Point { x, y },
            (Shape::Paths(paths), crate::feature::GeometryType::Polyline) => {
                Geometry::Polyline { paths }
            }
            (Shape::Rings(rings), crate::feature::GeometryType::Polygon) => {
                Geometry::Polygon { rings }
            }
            _ => return Err(bad("a geometry of the wrong type")),
        };
        observations.push((
            Feature {
                attributes,
                geometry,
            },
            observation.received,
        ));
    }
    Ok(Some(Saved {
        observations,
        next_object_id: body.next_object_id,
        next_resend_id: body.next_resend_id,
    }))
}

fn restore_value(value: Value, field_type: FieldType) -> Option<FieldValue> {
    Some(match (value, field_type) {
        (Value::Null(()), _) => FieldValue::Null,
        (Value::Integer(number), FieldType::Date) => FieldValue::Date(number),
        (Value::Integer(number), FieldType::Single | FieldType::Double) => {
            FieldValue::Double(number as f64)
        }
        (Value::Integer(number), _) if field_type.kind() == crate::feature::ValueKind::Number => {
            FieldValue::Integer(number)
        }
        (Value::Float(number), FieldType::Single | FieldType::Double) => FieldValue::Double(number),
        (Value::Text(text), FieldType::String) => FieldValue::String(Arc::from(text)),
        (Value::Bool(flag), FieldType::Boolean) => FieldValue::Boolean(flag),
        _ => return None,
    })
}

/// Loads a service's state at start; a file that cannot be used is set aside with a log line
/// naming it and why, and the service starts empty.
pub fn load_or_set_aside(path: &Path, service: &str, schema: &Schema) -> Option<Saved> {
    match load(path, service, schema) {
        Ok(Some(saved)) => {
            log::info!(
                "service {service}: restored {} tracks from {}",
                saved.observations.len(),
                path.display()
            );
            Some(saved)
        }
        Ok(None) => None,
        Err(error) => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis());
            let aside = path.with_extension(format!("json.corrupt-{stamp}"));
            match std::fs::rename(path, &aside) {
                Ok(()) => log::error!(
                    "service {service}: state file {} not used ({error}); moved to {}; starting empty",
                    path.display(),
                    aside.display()
                ),
                Err(rename) => log::error!(
                    "service {service}: state file {} not used ({error}) and could not be moved aside ({rename}); starting empty",
                    path.display()
                ),
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::GeometryType;
    use crate::geometry::Wkid;
    use crate::latest::LatestState;
    use crate::latest::Received;
    use crate::service::vehicles_schema;
    use crate::simulator::Fleet;

    #[test]
    fn a_saved_state_loads_back_the_same_and_a_foreign_or_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("fs-latest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let schema = vehicles_schema(GeometryType::Polygon, Wkid::Wgs84);
        let mut state = LatestState::new(&schema);
        let mut batch = Fleet::new(schema.clone(), 25, 1, 4).step(1.0, 5_000);
        state.record(&mut batch, Received::Here(5_000), usize::MAX);
        let saved = Saved::of(&state);
        let path = dir.join("zones.latest.json");
        save(&path, "zones", &schema, &saved).unwrap();
        let loaded = load(&path, "zones", &schema).unwrap().expect("saved");
        assert_eq!(loaded.next_object_id, saved.next_object_id);
        assert_eq!(loaded.observations.len(), saved.observations.len());
        for ((loaded, at), (saved, saved_at)) in loaded.observations.iter().zip(&saved.observations)
        {
            assert_eq!((&loaded.attributes, at), (&saved.attributes, saved_at));
            let (Geometry::Polygon { rings: a }, Geometry::Polygon { rings: b }) =
                (&loaded.geometry, &saved.geometry)
            else {
                panic!("polygons")
            };
            for (a, b) in a[0].iter().zip(&b[0]) {
                assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
            }
        }
        assert!(matches!(
            load(&path, "other", &schema),
            Err(LoadError::Foreign(_))
        ));
        let points = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        assert!(matches!(
            load(&path, "zones", &points),
            Err(LoadError::Foreign(_))
        ));
        std::fs::write(&path, br#"{"format":"#).unwrap();
        assert!(matches!(
            load(&path, "zones", &schema),
            Err(LoadError::Corrupt(_))
        ));
        assert!(load_or_set_aside(&path, "zones", &schema).is_none());
        assert!(!path.exists(), "set aside");
        let aside = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().contains(".corrupt-"))
            .count();
        assert_eq!(aside, 1);
        assert_eq!(
            load(&path, "zones", &schema).unwrap(),
            None,
            "no file: empty"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
