//! Feature encoding, once per batch and view: each feature becomes one Esri JSON fragment
//! (`{"attributes":{..},"geometry":{..}}`), or a GeoJSON one (`{"type":"Feature","id":..}`,
//! RFC 7946) for the views of GeoJSON streams and OGC API - Features, in a shared arena. A frame for any subset of the
//! batch is then prefix + selected fragments + suffix, copied once, framed once, and shared as
//! `Bytes` by every session of a group: no serde and no allocation per session.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::ws_frame;
use crate::feature::{Feature, FieldType, FieldValue, Schema};
use crate::filter::OutFields;
use crate::geometry::{Geometry, Wkid};

const CUSTOM_PREFIX: &[u8] = br#"{"type":"featureResult","features":["#;
const CUSTOM_SUFFIX: &[u8] = b"]}";
const COLLECTION_PREFIX: &[u8] = br#"{"type":"FeatureCollection","features":["#;

/// How features are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Esri JSON: `{"attributes":{..},"geometry":{"x":..,"y":..}}`, dates as epoch
    /// milliseconds, booleans as 0 and 1.
    #[default]
    Esri,
    /// GeoJSON (RFC 7946): `{"type":"Feature","id":<track id>,"geometry":..,"properties":..}`,
    /// dates as RFC 3339 text, booleans as booleans.
    GeoJson,
}

/// What a client receives of each feature: coordinates in `wkid`, attributes in `out_fields`,
/// written in `format`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct View {
    /// The output spatial reference's projection (102100 and 3857 share one view).
    pub projection: Wkid,
    /// The attribute selection.
    pub out_fields: OutFields,
    /// Esri JSON or GeoJSON.
    pub format: Format,
}

impl View {
    /// An Esri JSON view, normalising Web Mercator aliases so that they share encodings.
    pub fn new(out_sr: Wkid, out_fields: OutFields) -> View {
        View::in_format(Format::Esri, out_sr, out_fields)
    }

    /// A view in `format`.
    pub fn in_format(format: Format, out_sr: Wkid, out_fields: OutFields) -> View {
        let projection = match out_sr {
            Wkid::Wgs84 => Wkid::Wgs84,
            Wkid::WebMercator(_) => Wkid::WebMercator(3857),
        };
        View {
            projection,
            out_fields,
            format,
        }
    }
}

/// A batch encoded for one view: fragments in one arena.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    arena: Vec<u8>,
    spans: Vec<Range<usize>>,
    format: Format,
}

/// Which features of a batch go into a frame.
#[derive(Clone, Copy, Debug)]
pub enum Selection<'a> {
    /// Every feature.
    All,
    /// These feature indexes, ascending.
    Only(&'a [u32]),
}

/// Writes the attribute and geometry JSON of features for one view and schema.
#[derive(Clone)]
pub struct FeatureEncoder {
    /// `"name":` for each field sent, with its index, in schema order.
    keys: Vec<(usize, Vec<u8>, FieldType)>,
    source: Wkid,
    target: Wkid,
    /// Decimal places kept in coordinates: about 1 cm in either reference.
    scale: f64,
    format: Format,
    /// The track id field (a GeoJSON feature's `id`).
    track_id: (usize, FieldType),
}

impl FeatureEncoder {
    /// Prepares the field keys of a view once.
    pub fn new(schema: &Schema, view: &View) -> FeatureEncoder {
        let keys = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(index, _)| view.out_fields.includes(*index))
            .map(|(index, field)| {
                let mut key = serde_json::to_vec(&field.name).expect("a string always serialises");
                key.push(b':');
                (index, key, field.field_type)
            })
            .collect();
        let scale = match view.projection {
            Wkid::Wgs84 => 1e7,
            Wkid::WebMercator(_) => 1e2,
        };
        let track_id = schema.track_id_field();
        FeatureEncoder {
            keys,
            source: schema.wkid,
            target: view.projection,
            scale,
            format: view.format,
            track_id: (track_id, schema.fields()[track_id].field_type),
        }
    }

    /// Encodes every feature of a batch.
    pub fn encode_batch(&self, features: &[Feature]) -> EncodedBatch {
        let mut arena = Vec::with_capacity(features.len() * 192);
        let mut spans = Vec::with_capacity(features.len());
        for feature in features {
            let start = arena.len();
            self.encode_feature(feature, &mut arena);
            spans.push(start..arena.len());
        }
        EncodedBatch {
            arena,
            spans,
            format: self.format,
        }
    }

    /// Appends one feature's JSON.
    pub fn encode_feature(&self, feature: &Feature, out: &mut Vec<u8>) {
        if self.format == Format::GeoJson {
            return self.write_geojson_feature(feature, out);
        }
        self.write_attributes(feature, out);
        out.extend_from_slice(br#","geometry":"#);
        self.write_geometry(out, &feature.geometry);
        out.push(b'}');
    }

    /// Appends one feature's JSON without its geometry (`returnGeometry=false`).
    pub fn encode_attributes_only(&self, feature: &Feature, out: &mut Vec<u8>) {
        self.write_attributes(feature, out);
        out.push(b'}');
    }

    /// `{"attributes":{..}`, the feature object left open.
    fn write_attributes(&self, feature: &Feature, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"attributes":{"#);
        for (position, (index, key, field_type)) in self.keys.iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            write_value(
                out,
                feature.attributes.get(*index).unwrap_or(&FieldValue::Null),
                *field_type,
            );
        }
        out.push(b'}');
    }

    /// `{"type":"Feature","id":..,"geometry":..,"properties":..}`.
    fn write_geojson_feature(&self, feature: &Feature, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"type":"Feature","#);
        let (track_index, track_type) = self.track_id;
        match feature.attributes.get(track_index) {
            None | Some(FieldValue::Null) => {}
            Some(id) => {
                out.extend_from_slice(br#""id":"#);
                write_value(out, id, track_type);
                out.push(b',');
            }
        }
        out.extend_from_slice(br#""geometry":"#);
        self.write_geojson_geometry(out, &feature.geometry);
        out.extend_from_slice(br#","properties":{"#);
        for (position, (index, key, field_type)) in self.keys.iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            let value = feature.attributes.get(*index).unwrap_or(&FieldValue::Null);
            write_geojson_value(out, value, *field_type);
        }
        out.extend_from_slice(b"}}");
    }

    /// Appends a geometry as RFC 7946 GeoJSON in this encoder's projection.
    pub fn write_geojson_geometry(&self, out: &mut Vec<u8>, geometry: &Geometry) {
        match geometry {
            Geometry::Point { x, y } => {
                out.extend_from_slice(br#"{"type":"Point","coordinates":"#);
                self.write_position(out, [*x, *y]);
                out.push(b'}');
            }
            Geometry::Polyline { paths } if paths.len() == 1 => {
                out.extend_from_slice(br#"{"type":"LineString","coordinates":"#);
                self.write_positions(out, &paths[0], false);
                out.push(b'}');
            }
            Geometry::Polyline { paths } => {
                out.extend_from_slice(br#"{"type":"MultiLineString","coordinates":["#);
                for (index, path) in paths.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    self.write_positions(out, path, false);
                }
                out.extend_from_slice(b"]}");
            }
            Geometry::Polygon { rings } => {
                let polygons = crate::geometry::polygons_of_rings(rings);
                let write_polygon = |out: &mut Vec<u8>, polygon: &[&Vec<[f64; 2]>]| {
                    out.push(b'[');
                    for (index, ring) in polygon.iter().enumerate() {
                        if index > 0 {
                            out.push(b',');
                        }
                        // Esri rings are clockwise outside; RFC 7946's, counterclockwise.
                        self.write_positions(out, ring, true);
                    }
                    out.push(b']');
                };
                if polygons.len() == 1 {
                    out.extend_from_slice(br#"{"type":"Polygon","coordinates":"#);
                    write_polygon(out, &polygons[0]);
                } else {
                    out.extend_from_slice(br#"{"type":"MultiPolygon","coordinates":["#);
                    for (index, polygon) in polygons.iter().enumerate() {
                        if index > 0 {
                            out.push(b',');
                        }
                        write_polygon(out, polygon);
                    }
                    out.push(b']');
                }
                out.push(b'}');
            }
        }
    }

    fn write_positions(&self, out: &mut Vec<u8>, vertices: &[[f64; 2]], reversed: bool) {
        out.push(b'[');
        let mut write = |index: usize, vertex: &[f64; 2]| {
            if index > 0 {
                out.push(b',');
            }
            self.write_position(out, *vertex);
        };
        if reversed {
            vertices
                .iter()
                .rev()
                .enumerate()
                .for_each(|(i, v)| write(i, v));
        } else {
            vertices.iter().enumerate().for_each(|(i, v)| write(i, v));
        }
        out.push(b']');
    }

    fn write_position(&self, out: &mut Vec<u8>, [x, y]: [f64; 2]) {
        let (x, y) = self.source.project(self.target, x, y);
        out.push(b'[');
        self.write_coordinate(out, x);
        out.push(b',');
        self.write_coordinate(out, y);
        out.push(b']');
    }

    fn write_geometry(&self, out: &mut Vec<u8>, geometry: &Geometry) {
        match geometry {
            Geometry::Point { x, y } => {
                let (x, y) = self.source.project(self.target, *x, *y);
                out.extend_from_slice(br#"{"x":"#);
                self.write_coordinate(out, x);
                out.extend_from_slice(br#","y":"#);
                self.write_coordinate(out, y);
                out.push(b'}');
            }
            Geometry::Polyline { paths } => self.write_parts(out, br#"{"paths":"#, paths),
            Geometry::Polygon { rings } => self.write_parts(out, br#"{"rings":"#, rings),
        }
    }

    fn write_parts(&self, out: &mut Vec<u8>, key: &[u8], parts: &[Vec<[f64; 2]>]) {
        out.extend_from_slice(key);
        out.push(b'[');
        for (part_index, part) in parts.iter().enumerate() {
            if part_index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            for (vertex_index, [x, y]) in part.iter().enumerate() {
                if vertex_index > 0 {
                    out.push(b',');
                }
                let (x, y) = self.source.project(self.target, *x, *y);
                out.push(b'[');
                self.write_coordinate(out, x);
                out.push(b',');
                self.write_coordinate(out, y);
                out.push(b']');
            }
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
    }

    fn write_coordinate(&self, out: &mut Vec<u8>, value: f64) {
        write_f64(out, (value * self.scale).round() / self.scale);
    }
}

pub(crate) fn write_value(out: &mut Vec<u8>, value: &FieldValue, field_type: FieldType) {
    match value {
        FieldValue::Null => out.extend_from_slice(b"null"),
        FieldValue::Integer(number) | FieldValue::Date(number) => {
            out.extend_from_slice(itoa::Buffer::new().format(*number).as_bytes())
        }
        FieldValue::Double(number) if field_type == FieldType::Date => {
            out.extend_from_slice(itoa::Buffer::new().format(*number as i64).as_bytes())
        }
        FieldValue::Double(number) => write_f64(out, *number),
        FieldValue::String(text) => {
            serde_json::to_writer(&mut *out, &**text).expect("writing to a Vec cannot fail")
        }
        // ArcGIS has no boolean field type: booleans travel as small integers.
        FieldValue::Boolean(flag) => out.push(if *flag { b'1' } else { b'0' }),
    }
}

/// A GeoJSON property: dates as RFC 3339 text (UTC, milliseconds), booleans as booleans.
fn write_geojson_value(out: &mut Vec<u8>, value: &FieldValue, field_type: FieldType) {
    let epoch_ms = match (value, field_type) {
        (FieldValue::Date(ms) | FieldValue::Integer(ms), FieldType::Date) => Some(*ms),
        (FieldValue::Double(ms), FieldType::Date) if ms.is_finite() => Some(*ms as i64),
        _ => None,
    };
    match (epoch_ms, value) {
        (Some(ms), _) => {
            out.push(b'"');
            out.extend_from_slice(crate::filter::format_rfc3339(ms).as_bytes());
            out.push(b'"');
        }
        (None, FieldValue::Boolean(flag)) => {
            out.extend_from_slice(if *flag { b"true" } else { b"false" })
        }
        (None, value) => write_value(out, value, field_type),
    }
}

/// `{"type":"delete","trackIds":[..]}`: the message the ArcGIS SDK's stream store takes to
/// remove tracks (docs/protocol.md §3.2), sent when tracks expire.
pub fn delete_message(track_ids: &[&FieldValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + track_ids.len() * 8);
    out.extend_from_slice(br#"{"type":"delete","trackIds":["#);
    for (index, id) in track_ids.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_value(&mut out, id, FieldType::String);
    }
    out.extend_from_slice(b"]}");
    out
}

fn write_f64(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() {
        out.extend_from_slice(b"null");
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

impl EncodedBatch {
    /// Number of features.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The JSON of feature `index`.
    pub fn fragment(&self, index: usize) -> &[u8] {
        &self.arena[self.spans[index].clone()]
    }

    fn selected<'a>(&'a self, selection: Selection<'a>) -> impl Iterator<Item = &'a [u8]> + 'a {
        let indexes: Box<dyn Iterator<Item = usize> + '_> = match selection {
            Selection::All => Box::new(0..self.spans.len()),
            Selection::Only(indexes) => Box::new(indexes.iter().map(|index| *index as usize)),
        };
        indexes.map(|index| self.fragment(index))
    }

    /// Custom mode: one `featureResult` text frame holding the selected features (a GeoJSON
    /// batch: one `FeatureCollection`).
    pub fn custom_frame(&self, selection: Selection<'_>) -> Bytes {
        let prefix = self.collection_prefix();
        let (mut count, mut payload_len) = (0, prefix.len() + CUSTOM_SUFFIX.len());
        for fragment in self.selected(selection) {
            payload_len += fragment.len();
            count += 1;
        }
        payload_len += count.max(1) - 1;
        let mut buffer = BytesMut::with_capacity(ws_frame::header_len(payload_len) + payload_len);
        ws_frame::put_text_header(&mut buffer, payload_len);
        buffer.put_slice(prefix);
        for (position, fragment) in self.selected(selection).enumerate() {
            if position > 0 {
                buffer.put_u8(b',');
            }
            buffer.put_slice(fragment);
        }
        buffer.put_slice(CUSTOM_SUFFIX);
        buffer.freeze()
    }

    /// Server mode: one text frame per selected feature, concatenated (docs/protocol.md §3.2).
    pub fn server_frames(&self, selection: Selection<'_>) -> Bytes {
        let total: usize = self
            .selected(selection)
            .map(|fragment| ws_frame::header_len(fragment.len()) + fragment.len())
            .sum();
        let mut buffer = BytesMut::with_capacity(total);
        for fragment in self.selected(selection) {
            ws_frame::put_text_header(&mut buffer, fragment.len());
            buffer.put_slice(fragment);
        }
        buffer.freeze()
    }

    fn collection_prefix(&self) -> &'static [u8] {
        match self.format {
            Format::Esri => CUSTOM_PREFIX,
            Format::GeoJson => COLLECTION_PREFIX,
        }
    }

    /// The selected features as one JSON array payload (no frame header), for SSE; a GeoJSON
    /// batch's as one `FeatureCollection`.
    pub fn json_array(&self, selection: Selection<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.arena.len() + COLLECTION_PREFIX.len() + 2);
        if self.format == Format::GeoJson {
            out.extend_from_slice(COLLECTION_PREFIX);
        } else {
            out.push(b'[');
        }
        for (position, fragment) in self.selected(selection).enumerate() {
            if position > 0 {
                out.push(b',');
            }
            out.extend_from_slice(fragment);
        }
        out.push(b']');
        if self.format == Format::GeoJson {
            out.push(b'}');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::feature::{Field, GeometryType};

    fn schema() -> Schema {
        Schema::new(
            vec![
                Field::new("OBJECTID", FieldType::ObjectId),
                Field::new("TRACKID", FieldType::Integer),
                Field::new("name", FieldType::String),
                Field::new("speed", FieldType::Double),
                Field::new("active", FieldType::Boolean),
                Field::new("observed", FieldType::Date),
            ],
            "OBJECTID",
            "TRACKID",
            GeometryType::Point,
            Wkid::Wgs84,
        )
        .unwrap()
    }

    fn feature(id: i64, speed: f64) -> Feature {
        Feature {
            attributes: vec![
                FieldValue::Integer(id),
                FieldValue::Integer(3),
                FieldValue::String(Arc::from("a \"quoted\" é")),
                FieldValue::Double(speed),
                FieldValue::Boolean(true),
                FieldValue::Date(1_795_420_842_492),
            ],
            geometry: Geometry::Point {
                x: -117.19561234567,
                y: 34.0564,
            },
        }
    }

    #[test]
    fn features_encode_as_esri_json() {
        let encoder = FeatureEncoder::new(&schema(), &View::new(Wkid::Wgs84, OutFields::All));
        let batch = encoder.encode_batch(&[feature(17, 13.25)]);
        let value: serde_json::Value = serde_json::from_slice(batch.fragment(0)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "attributes": {"OBJECTID": 17, "TRACKID": 3, "name": "a \"quoted\" é", "speed": 13.25,
                               "active": 1, "observed": 1_795_420_842_492_i64},
                "geometry": {"x": -117.1956123, "y": 34.0564}
            })
        );
    }

    #[test]
    fn geojson_views_write_rfc7946_features_keyed_by_track_id() {
        let view = View::in_format(Format::GeoJson, Wkid::Wgs84, OutFields::All);
        let encoder = FeatureEncoder::new(&schema(), &view);
        let batch = encoder.encode_batch(&[feature(17, 13.25)]);
        let value: serde_json::Value = serde_json::from_slice(batch.fragment(0)).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "type": "Feature", "id": 3,
                "geometry": {"type": "Point", "coordinates": [-117.1956123, 34.0564]},
                "properties": {"OBJECTID": 17, "TRACKID": 3, "name": "a \"quoted\" é",
                               "speed": 13.25, "active": true,
                               "observed": "2026-11-23T08:00:42.492Z"}
            })
        );
        let frame = batch.custom_frame(Selection::All);
        let payload: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
        assert_eq!(payload["type"], "FeatureCollection");
        let sse: serde_json::Value =
            serde_json::from_slice(&batch.json_array(Selection::Only(&[]))).unwrap();
        assert_eq!(
            sse,
            serde_json::json!({"type": "FeatureCollection", "features": []})
        );
    }

    #[test]
    fn geojson_lines_and_polygons_follow_rfc7946() {
        let shape = |geometry: Geometry| {
            let mut feature = feature(1, 1.0);
            feature.geometry = geometry;
            let view = View::in_format(Format::GeoJson, Wkid::Wgs84, OutFields::All);
            let batch = FeatureEncoder::new(&schema(), &view).encode_batch(&[feature]);
            serde_json::from_slice::<serde_json::Value>(batch.fragment(0)).unwrap()["geometry"]
                .clone()
        };
        assert_eq!(
            shape(Geometry::Polyline {
                paths: vec![vec![[0.0, 0.0], [1.0, 1.0]]]
            }),
            serde_json::json!({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})
        );
        assert_eq!(
            shape(Geometry::Polyline {
                paths: vec![vec![[0.0, 0.0], [1.0, 1.0]], vec![[2.0, 2.0], [3.0, 3.0]]]
            })["type"],
            "MultiLineString"
        );
        // Esri: outer rings clockwise, holes counterclockwise. GeoJSON: the reverse, and a
        // polygon per outer ring.
        let outer = vec![
            [0.0, 0.0],
            [0.0, 10.0],
            [10.0, 10.0],
            [10.0, 0.0],
            [0.0, 0.0],
        ];
        let hole = vec![[2.0, 2.0], [4.0, 2.0], [4.0, 4.0], [2.0, 4.0], [2.0, 2.0]];
        let other = vec![
            [20.0, 0.0],
            [20.0, 5.0],
            [25.0, 5.0],
            [25.0, 0.0],
            [20.0, 0.0],
        ];
        let reversed = |ring: &Vec<[f64; 2]>| {
            serde_json::json!(
                ring.iter()
                    .rev()
                    .map(|[x, y]| [*x as i64, *y as i64])
                    .collect::<Vec<_>>()
            )
        };
        assert_eq!(
            shape(Geometry::Polygon {
                rings: vec![outer.clone(), hole.clone()]
            }),
            serde_json::json!({"type": "Polygon",
                               "coordinates": [reversed(&outer), reversed(&hole)]})
        );
        assert_eq!(
            shape(Geometry::Polygon {
                rings: vec![outer.clone(), hole.clone(), other.clone()]
            }),
            serde_json::json!({"type": "MultiPolygon", "coordinates": [
                [reversed(&outer), reversed(&hole)], [reversed(&other)]
            ]})
        );
    }

    #[test]
    fn out_fields_and_projection_apply_per_view() {
        let view = View::new(
            Wkid::WebMercator(102100),
            OutFields::parse_list(&schema(), "speed").unwrap(),
        );
        let batch = FeatureEncoder::new(&schema(), &view).encode_batch(&[feature(1, 5.0)]);
        let value: serde_json::Value = serde_json::from_slice(batch.fragment(0)).unwrap();
        assert_eq!(
            value["attributes"],
            serde_json::json!({"OBJECTID": 1, "TRACKID": 3, "speed": 5})
        );
        assert!(
            (value["geometry"]["x"].as_f64().unwrap() - -13_046_155.89).abs() < 0.01,
            "{value}"
        );
    }

    #[test]
    fn frames_hold_the_selection() {
        let encoder = FeatureEncoder::new(&schema(), &View::new(Wkid::Wgs84, OutFields::All));
        let batch = encoder.encode_batch(&[feature(1, 1.0), feature(2, 2.0), feature(3, 3.0)]);
        let custom = batch.custom_frame(Selection::Only(&[0, 2]));
        let payload: serde_json::Value = serde_json::from_slice(&custom[4..]).unwrap();
        assert_eq!(payload["type"], "featureResult");
        let ids: Vec<i64> = payload["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["attributes"]["OBJECTID"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![1, 3]);
        let empty = batch.custom_frame(Selection::Only(&[]));
        assert_eq!(&empty[2..], br#"{"type":"featureResult","features":[]}"#);
        let frames = batch.server_frames(Selection::All);
        let first_len = ws_frame::header_len(batch.fragment(0).len()) + batch.fragment(0).len();
        assert_eq!(
            &frames[..first_len],
            &ws_frame::text_frame(batch.fragment(0))[..]
        );
        assert_eq!(
            frames.len(),
            (0..3).map(|i| 4 + batch.fragment(i).len()).sum::<usize>()
        );
    }
}
