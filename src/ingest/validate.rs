//! One raw feature against a service's schema: attribute names and types, nullability, string
//! lengths, the track id, the geometry's type, finiteness and spatial reference (projected
//! between WGS84 and Web Mercator, anything else refused).

use std::sync::Arc;

use super::Reason;
use super::document::{Coordinates, RawFeature, RawGeometry, Scalar, SpatialReference};
use crate::feature::{Feature, FieldType, FieldValue, GeometryType, Schema};
use crate::geometry::{Geometry, Wkid};

/// Converts a raw feature; `default_reference` is the featureSet's, if it named one.
pub(super) fn feature(
    raw: RawFeature<'_>,
    schema: &Schema,
    default_reference: Option<SpatialReference>,
    received_ms: i64,
) -> Result<Feature, Reason> {
    let geojson = raw.properties.is_some() || raw.kind.as_deref() == Some("Feature");
    let mut values = Given::new(schema);
    let given = raw
        .attributes
        .or(raw.properties)
        .map(|a| a.0)
        .unwrap_or_default();
    for (name, value) in given {
        let index = schema
            .field_index(&name)
            .ok_or_else(|| Reason::UnknownField(name.clone().into_owned()))?;
        if index == schema.object_id_field() {
            // The server assigns object ids, whatever the input says.
            continue;
        }
        values.set(index, convert(schema, index, value)?);
    }
    let values = values.complete(schema, received_ms)?;
    let geometry = raw.geometry.ok_or(Reason::MissingGeometry)?;
    let geometry = if geojson || geometry.coordinates.is_some() {
        geojson_geometry(geometry, schema)?
    } else {
        esri_geometry(geometry, schema, default_reference)?
    };
    finish(schema, values, geometry)
}

/// Converts a feature given field by field (by index in the schema) with a geometry in the
/// schema's own spatial reference, by the same rules as the JSON forms: the backbone's binary
/// messages are read with it.
pub(super) fn feature_by_index<'a>(
    schema: &Schema,
    given: impl IntoIterator<Item = (usize, Scalar<'a>)>,
    geometry: Geometry,
    received_ms: i64,
) -> Result<Feature, Reason> {
    let mut values = Given::new(schema);
    for (index, value) in given {
        values.set(index, convert(schema, index, value)?);
    }
    let values = values.complete(schema, received_ms)?;
    let wkid = schema.wkid;
    let geometry = match (schema.geometry_type, geometry) {
        (GeometryType::Point, Geometry::Point { x, y }) => {
            let [x, y] = project(wkid, wkid, [x, y])?;
            Geometry::Point { x, y }
        }
        (GeometryType::Polyline, Geometry::Polyline { paths }) => Geometry::Polyline {
            paths: parts(paths, wkid, wkid, 2, false)?,
        },
        (GeometryType::Polygon, Geometry::Polygon { rings }) => Geometry::Polygon {
            rings: parts(rings, wkid, wkid, 4, true)?,
        },
        (expected, found) => {
            return Err(Reason::WrongGeometry {
                expected: expected.esri_name(),
                found: match found {
                    Geometry::Point { .. } => "point",
                    Geometry::Polyline { .. } => "polyline",
                    Geometry::Polygon { .. } => "polygon",
                }
                .to_owned(),
            });
        }
    };
    finish(schema, values, geometry)
}

/// A feature's values as they are given, field by field (by index in the schema); the others
/// are null until [`Given::complete`] gives them their defaults. The values are written where
/// they stay: this runs for every observation that comes in.
struct Given {
    values: Vec<FieldValue>,
    given: Vec<bool>,
}

impl Given {
    fn new(schema: &Schema) -> Given {
        let fields = schema.fields().len();
        Given {
            values: vec![FieldValue::Null; fields],
            given: vec![false; fields],
        }
    }

    fn set(&mut self, index: usize, value: FieldValue) {
        self.values[index] = value;
        self.given[index] = true;
    }

    /// Every field's value: defaults for the missing, then the track id, start time and
    /// nullability rules.
    fn complete(self, schema: &Schema, received_ms: i64) -> Result<Vec<FieldValue>, Reason> {
        let Given { mut values, given } = self;
        for (index, field) in schema.fields().iter().enumerate() {
            let value = &mut values[index];
            if !given[index] {
                if index == schema.object_id_field() {
                    *value = FieldValue::Integer(0);
                } else if Some(index) == schema.start_time_field() {
                    *value = FieldValue::Date(received_ms);
                }
            }
            match value {
                FieldValue::String(id)
                    if index == schema.track_id_field()
                        && id.chars().count() > schema.limits.max_track_id_chars as usize =>
                {
                    return Err(Reason::TrackIdTooLong(schema.limits.max_track_id_chars));
                }
                FieldValue::Date(time) if Some(index) == schema.start_time_field() => {
                    check_start_time(schema, *time, received_ms)?;
                }
                FieldValue::Null if index == schema.track_id_field() => {
                    return Err(Reason::MissingTrackId(field.name.clone()));
                }
                FieldValue::Null if !field.nullable => {
                    return Err(Reason::NullNotAllowed(field.name.clone()));
                }
                _ => {}
            }
        }
        Ok(values)
    }
}

/// A start time no further ahead of `received_ms` than the service allows.
fn check_start_time(schema: &Schema, time: i64, received_ms: i64) -> Result<(), Reason> {
    if time.saturating_sub(received_ms) > schema.limits.max_future_ms {
        let field = schema
            .start_time_field()
            .map_or_else(String::new, |index| schema.fields()[index].name.clone());
        return Err(Reason::TimeInFuture {
            field,
            ahead_s: time.saturating_sub(received_ms) / 1000,
            max_s: schema.limits.max_future_ms / 1000,
        });
    }
    Ok(())
}

/// Whether an observation validated when it was received is still valid had it been received
/// at `received_ms` instead: the only rule that depends on when (its start time's lead).
pub(super) fn still_valid_at(
    schema: &Schema,
    feature: &Feature,
    received_ms: i64,
) -> Result<(), Reason> {
    match schema
        .start_time_field()
        .and_then(|index| feature.attributes.get(index))
    {
        Some(FieldValue::Date(time)) => check_start_time(schema, *time, received_ms),
        _ => Ok(()),
    }
}

/// The feature, once its geometry is within the vertex limit.
fn finish(schema: &Schema, values: Vec<FieldValue>, geometry: Geometry) -> Result<Feature, Reason> {
    let vertices = match &geometry {
        Geometry::Point { .. } => 1,
        Geometry::Polyline { paths: parts } | Geometry::Polygon { rings: parts } => {
            parts.iter().map(Vec::len).sum()
        }
    };
    if vertices > schema.limits.max_vertices {
        return Err(Reason::TooManyVertices {
            given: vertices,
            max: schema.limits.max_vertices,
        });
    }
    Ok(Feature {
        attributes: values,
        geometry,
    })
}

fn convert(schema: &Schema, index: usize, value: Scalar<'_>) -> Result<FieldValue, Reason> {
    let field = &schema.fields()[index];
    let wrong = |value: &Scalar<'_>, expected: &str| Reason::WrongType {
        field: field.name.clone(),
        expected: expected.to_owned(),
        found: value.describe().to_owned(),
    };
    let integer = |value: &Scalar<'_>, min: i64, max: i64| -> Result<FieldValue, Reason> {
        let number = match *value {
            Scalar::Integer(number) => number,
            Scalar::Float(number) if number.fract() == 0.0 && number.abs() < 9.0e15 => {
                number as i64
            }
            _ => return Err(wrong(value, "an integer")),
        };
        if (min..=max).contains(&number) {
            Ok(FieldValue::Integer(number))
        } else {
            Err(Reason::OutOfRange {
                field: field.name.clone(),
                min,
                max,
            })
        }
    };
    if value == Scalar::Null {
        return Ok(FieldValue::Null);
    }
    match field.field_type {
        FieldType::ObjectId => Ok(FieldValue::Integer(0)),
        FieldType::SmallInteger => integer(&value, i16::MIN.into(), i16::MAX.into()),
        FieldType::Integer => integer(&value, i32::MIN.into(), i32::MAX.into()),
        FieldType::BigInteger => integer(&value, i64::MIN, i64::MAX),
        FieldType::Single | FieldType::Double => match value {
            Scalar::Integer(number) => Ok(FieldValue::Double(number as f64)),
            Scalar::Float(number) if number.is_finite() => Ok(FieldValue::Double(number)),
            other => Err(wrong(&other, "a number")),
        },
        FieldType::String => match value {
            Scalar::Text(text) => {
                let max = field.length.unwrap_or(schema.limits.max_string_chars);
                if text.len() > max as usize && text.chars().count() > max as usize {
                    return Err(Reason::TooLong {
                        field: field.name.clone(),
                        max,
                    });
                }
                Ok(FieldValue::String(Arc::from(text.as_ref())))
            }
            other => Err(wrong(&other, "a string")),
        },
        FieldType::Date => match value {
            Scalar::Text(text) => parse_date(&text).map(FieldValue::Date).ok_or_else(|| {
                wrong(
                    &Scalar::Text(text),
                    "epoch milliseconds or an ISO 8601 UTC time",
                )
            }),
            other => match integer(&other, -62_167_219_200_000, 253_402_300_799_999) {
                Ok(FieldValue::Integer(ms)) => Ok(FieldValue::Date(ms)),
                Err(Reason::WrongType { .. }) => Err(wrong(&other, "epoch milliseconds")),
                Err(other) => Err(other),
                Ok(_) => unreachable!("integer() gives integers"),
            },
        },
        FieldType::Boolean => match value {
            Scalar::Bool(flag) => Ok(FieldValue::Boolean(flag)),
            Scalar::Integer(0) => Ok(FieldValue::Boolean(false)),
            Scalar::Integer(1) => Ok(FieldValue::Boolean(true)),
            other => Err(wrong(&other, "true, false, 0 or 1")),
        },
    }
}

/// `2026-11-29T12:00:00Z`, `2026-11-29 12:00:00.250`, `2026-11-29` (UTC).
fn parse_date(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .unwrap_or(text);
    crate::filter::date::parse(text, true)
}

fn reference(reference: SpatialReference) -> Result<Wkid, Reason> {
    let number = reference
        .latest_wkid
        .or(reference.wkid)
        .ok_or(Reason::UnsupportedSpatialReference(None))?;
    Wkid::from_number(number).map_err(|_| Reason::UnsupportedSpatialReference(Some(number)))
}

fn esri_geometry(
    raw: RawGeometry,
    schema: &Schema,
    default_reference: Option<SpatialReference>,
) -> Result<Geometry, Reason> {
    let from = match raw.spatial_reference.or(default_reference) {
        Some(given) => reference(given)?,
        None => schema.wkid,
    };
    let found = if raw.x.is_some() || raw.y.is_some() {
        "point"
    } else if raw.paths.is_some() {
        "polyline"
    } else if raw.rings.is_some() {
        "polygon"
    } else {
        return Err(Reason::MissingGeometry);
    };
    match (schema.geometry_type, raw.x, raw.y, raw.paths, raw.rings) {
        (GeometryType::Point, Some(x), Some(y), None, None) => {
            let [x, y] = project(from, schema.wkid, [x, y])?;
            Ok(Geometry::Point { x, y })
        }
        (GeometryType::Point, None, _, _, _) | (GeometryType::Point, _, None, _, _)
            if found == "point" =>
        {
            Err(Reason::MissingGeometry)
        }
        (GeometryType::Polyline, None, None, Some(paths), None) => Ok(Geometry::Polyline {
            paths: parts(paths, from, schema.wkid, 2, false)?,
        }),
        (GeometryType::Polygon, None, None, None, Some(rings)) => Ok(Geometry::Polygon {
            rings: parts(rings, from, schema.wkid, 4, true)?,
        }),
        _ => Err(Reason::WrongGeometry {
            expected: schema.geometry_type.esri_name(),
            found: found.to_owned(),
        }),
    }
}

fn geojson_geometry(raw: RawGeometry, schema: &Schema) -> Result<Geometry, Reason> {
    let kind = raw.kind.unwrap_or_default();
    let coordinates = raw.coordinates.ok_or(Reason::MissingGeometry)?;
    let wrong = |found: &str| Reason::WrongGeometry {
        expected: schema.geometry_type.esri_name(),
        found: found.to_owned(),
    };
    let malformed = || Reason::MalformedGeometry(format!("coordinates do not form a {kind}"));
    // RFC 7946: GeoJSON coordinates are WGS84 longitude, latitude.
    let (from, to) = (Wkid::Wgs84, schema.wkid);
    match (schema.geometry_type, kind.as_str()) {
        (GeometryType::Point, "Point") => {
            let [x, y] = project(from, to, position(&coordinates).ok_or_else(malformed)?)?;
            Ok(Geometry::Point { x, y })
        }
        (GeometryType::Polyline, "LineString") => Ok(Geometry::Polyline {
            paths: parts(
                vec![positions(&coordinates).ok_or_else(malformed)?],
                from,
                to,
                2,
                false,
            )?,
        }),
        (GeometryType::Polyline, "MultiLineString") => Ok(Geometry::Polyline {
            paths: parts(
                lists(&coordinates, positions).ok_or_else(malformed)?,
                from,
                to,
                2,
                false,
            )?,
        }),
        (GeometryType::Polygon, "Polygon") => Ok(Geometry::Polygon {
            rings: parts(
                lists(&coordinates, positions).ok_or_else(malformed)?,
                from,
                to,
                4,
                true,
            )?,
        }),
        (GeometryType::Polygon, "MultiPolygon") => {
            let polygons =
                lists(&coordinates, |polygon| lists(polygon, positions)).ok_or_else(malformed)?;
            Ok(Geometry::Polygon {
                rings: parts(polygons.into_iter().flatten().collect(), from, to, 4, true)?,
            })
        }
        (_, "") => Err(Reason::MalformedGeometry(
            "a GeoJSON geometry needs a type".into(),
        )),
        (_, other) => Err(wrong(other)),
    }
}

fn position(coordinates: &Coordinates) -> Option<[f64; 2]> {
    match coordinates {
        Coordinates::List(items) if items.len() >= 2 => match (&items[0], &items[1]) {
            (Coordinates::Number(x), Coordinates::Number(y)) => Some([*x, *y]),
            _ => None,
        },
        _ => None,
    }
}

fn positions(coordinates: &Coordinates) -> Option<Vec<Vec<f64>>> {
    lists(coordinates, |item| position(item).map(|[x, y]| vec![x, y]))
}

fn lists<T>(coordinates: &Coordinates, item: impl Fn(&Coordinates) -> Option<T>) -> Option<Vec<T>> {
    match coordinates {
        Coordinates::List(items) => items.iter().map(item).collect(),
        Coordinates::Number(_) => None,
    }
}

/// Paths or rings: each vertex finite and projected; at least `min_vertices` each (rings are
/// closed when their last vertex is not their first).
fn parts<V: AsRef<[f64]>>(
    parts: Vec<Vec<V>>,
    from: Wkid,
    to: Wkid,
    min_vertices: usize,
    close: bool,
) -> Result<Vec<Vec<[f64; 2]>>, Reason> {
    if parts.is_empty() {
        return Err(Reason::MissingGeometry);
    }
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let mut vertices = Vec::with_capacity(part.len() + 1);
        for vertex in part {
            let vertex = vertex.as_ref();
            if vertex.len() < 2 {
                return Err(Reason::MalformedGeometry(
                    "every vertex needs an x and a y".into(),
                ));
            }
            vertices.push(project(from, to, [vertex[0], vertex[1]])?);
        }
        if close && vertices.first() != vertices.last() {
            vertices.push(vertices[0]);
        }
        if vertices.len() < min_vertices {
            return Err(Reason::MalformedGeometry(format!(
                "each {} needs at least {} vertices",
                if close { "ring" } else { "path" },
                if close {
                    min_vertices - 1
                } else {
                    min_vertices
                }
            )));
        }
        out.push(vertices);
    }
    Ok(out)
}

fn project(from: Wkid, to: Wkid, [x, y]: [f64; 2]) -> Result<[f64; 2], Reason> {
    if !x.is_finite() || !y.is_finite() {
        return Err(Reason::NonFiniteCoordinates);
    }
    if from == Wkid::Wgs84 && !((-180.0..=180.0).contains(&x) && (-90.0..=90.0).contains(&y)) {
        return Err(Reason::OutOfWorld { x, y });
    }
    let (x, y) = from.project(to, x, y);
    if !x.is_finite() || !y.is_finite() {
        return Err(Reason::NonFiniteCoordinates);
    }
    Ok([x, y])
}
