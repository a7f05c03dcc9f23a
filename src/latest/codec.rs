//! The latest state's records on disk (`latest::store`): a file is a magic number, then
//! frames of `[u32 length][u32 CRC-32 of the payload][payload]`, little-endian, each payload
//! one [`Record`]. A frame whose length runs past the end of the file or whose checksum does
//! not match ends what can be read: the tail a crash tore off mid-write.
//!
//! Binary and schema-checked: a record is decoded only into the service's schema (each value
//! of its field's type, a geometry of the service's type), so whatever a damaged or foreign
//! file holds, nothing that does not fit the service reaches its state.

use std::sync::Arc;

use crate::feature::{Feature, FieldType, FieldValue, GeometryType, Schema, ValueKind};
use crate::geometry::Geometry;

/// What every state file starts with (format 2: binary records; format 1 was one JSON file).
pub const MAGIC: &[u8; 8] = b"FSTATE02";

/// Bytes of a frame's length and checksum.
pub const FRAME_HEADER: usize = 8;

/// The largest payload a frame may announce: a longer one is damage, not data.
const MAX_PAYLOAD: usize = 1 << 30;

/// One record of a journal segment or a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// Opens every file: what it is and whose.
    Header(Header),
    /// Observations as recorded, in order, each with the epoch milliseconds it was received:
    /// each becomes its track's latest.
    Observations(Vec<(Feature, i64)>),
    /// Tracks that left the state (expired, deleted), by track id value.
    Removed(Vec<FieldValue>),
    /// Ids below these may have been handed out: after a crash, numbering resumes at them.
    Reserved {
        /// Bound of the object ids.
        object_ids: i64,
        /// Bound of the ids of resent copies.
        resend_ids: i64,
    },
}

/// The first record of a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The service's name.
    pub service: String,
    /// Its schema's fields, geometry type and spatial reference ([`signature`]): the file of
    /// another schema is foreign.
    pub signature: String,
    /// Which file this is.
    pub kind: FileKind,
}

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A segment of the journal, numbered in the order written.
    Segment(u64),
    /// The whole state: the ids' bounds, and the first segment recorded after it.
    Checkpoint {
        /// Bound of the object ids.
        object_ids: i64,
        /// Bound of the ids of resent copies.
        resend_ids: i64,
        /// The first journal segment not in this checkpoint.
        replay_from: u64,
    },
}

/// The schema as a file names it.
pub fn signature(schema: &Schema) -> String {
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|field| format!("{}:{:?}", field.name, field.field_type))
        .collect();
    format!(
        "{}|{}|{}",
        fields.join(","),
        schema.geometry_type.esri_name(),
        schema.wkid.number()
    )
}

/// Appends one record's frame to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    match record {
        Record::Header(header) => {
            out.push(0);
            string(out, &header.service);
            string(out, &header.signature);
            match header.kind {
                FileKind::Segment(number) => {
                    out.push(0);
                    out.extend_from_slice(&number.to_le_bytes());
                }
                FileKind::Checkpoint {
                    object_ids,
                    resend_ids,
                    replay_from,
                } => {
                    out.push(1);
                    out.extend_from_slice(&object_ids.to_le_bytes());
                    out.extend_from_slice(&resend_ids.to_le_bytes());
                    out.extend_from_slice(&replay_from.to_le_bytes());
                }
            }
        }
        Record::Observations(observations) => {
            out.push(1);
            count(out, observations.len());
            for (feature, received_ms) in observations {
                out.extend_from_slice(&received_ms.to_le_bytes());
                encode_feature(feature, out);
            }
        }
        Record::Removed(tracks) => {
            out.push(2);
            count(out, tracks.len());
            for track in tracks {
                value(out, track);
            }
        }
        Record::Reserved {
            object_ids,
            resend_ids,
        } => {
            out.push(3);
            out.extend_from_slice(&object_ids.to_le_bytes());
            out.extend_from_slice(&resend_ids.to_le_bytes());
        }
    }
    let payload = &out[start + FRAME_HEADER..];
    let length = (payload.len() as u32).to_le_bytes();
    let checksum = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&length);
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&checksum);
}

/// Appends the observation-record frame of `observations` to `out` (as
/// `Record::Observations`, without copying them into one).
pub fn encode_observations<'a>(
    observations: impl ExactSizeIterator<Item = (&'a Feature, i64)>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(1);
    count(out, observations.len());
    for (feature, received_ms) in observations {
        out.extend_from_slice(&received_ms.to_le_bytes());
        encode_feature(feature, out);
    }
    let payload = &out[start + FRAME_HEADER..];
    let length = (payload.len() as u32).to_le_bytes();
    let checksum = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&length);
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&checksum);
}

/// Writes a count (or a length) as [`Reader::count`] reads it.
pub(crate) fn count(out: &mut Vec<u8>, count: usize) {
    out.extend_from_slice(&(count as u32).to_le_bytes());
}

/// Writes a text as [`Reader::string`] reads it.
pub(crate) fn string(out: &mut Vec<u8>, text: &str) {
    count(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// Writes one attribute value, tagged (the backbone's log messages write values this way too).
pub(crate) fn value(out: &mut Vec<u8>, value: &FieldValue) {
    match value {
        FieldValue::Null => out.push(0),
        FieldValue::Integer(number) => {
            out.push(1);
            out.extend_from_slice(&number.to_le_bytes());
        }
        FieldValue::Date(number) => {
            out.push(2);
            out.extend_from_slice(&number.to_le_bytes());
        }
        FieldValue::Double(number) => {
            out.push(3);
            out.extend_from_slice(&number.to_le_bytes());
        }
        FieldValue::String(text) => {
            out.push(4);
            string(out, text);
        }
        FieldValue::Boolean(flag) => out.push(5 + u8::from(*flag)),
    }
}

fn encode_feature(feature: &Feature, out: &mut Vec<u8>) {
    count(out, feature.attributes.len());
    for attribute in &feature.attributes {
        value(out, attribute);
    }
    geometry(out, &feature.geometry);
}

/// Writes a geometry, tagged by its type (the backbone's log messages write geometries this
/// way too).
pub(crate) fn geometry(out: &mut Vec<u8>, geometry: &Geometry) {
    let parts = |out: &mut Vec<u8>, parts: &[Vec<[f64; 2]>]| {
        count(out, parts.len());
        for part in parts {
            count(out, part.len());
            for [x, y] in part {
                out.extend_from_slice(&x.to_le_bytes());
                out.extend_from_slice(&y.to_le_bytes());
            }
        }
    };
    match geometry {
        Geometry::Point { x, y } => {
            out.push(0);
            out.extend_from_slice(&x.to_le_bytes());
            out.extend_from_slice(&y.to_le_bytes());
        }
        Geometry::Polyline { paths } => {
            out.push(1);
            parts(out, paths);
        }
        Geometry::Polygon { rings } => {
            out.push(2);
            parts(out, rings);
        }
    }
}

/// The frames of a file's bytes after its magic number: each payload, and where the readable
/// part ends (the offset of the first byte not in a whole, checksummed frame).
pub fn frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut payloads = Vec::new();
    let mut offset = 0;
    while let Some(header) = bytes.get(offset..offset + FRAME_HEADER) {
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let checksum = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let start = offset + FRAME_HEADER;
        // An empty frame is never written: zeros past the end of what was flushed read as one.
        if length == 0 || length > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(start..start + length) else {
            break;
        };
        if crc32fast::hash(payload) != checksum {
            break;
        }
        payloads.push(payload);
        offset = start + length;
    }
    (payloads, offset)
}

/// Whether what follows a file's readable part (`rest`, from the first frame that does not
/// read) is what a crash mid-write leaves: zeros, a frame cut short, or one last frame whose
/// bytes did not all reach the disk. A frame that fails its checksum with more after it is
/// damage, not a tear.
pub fn is_torn_tail(rest: &[u8]) -> bool {
    if rest.iter().all(|byte| *byte == 0) {
        return true;
    }
    let Some(header) = rest.get(..FRAME_HEADER) else {
        return true;
    };
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    FRAME_HEADER.saturating_add(length) >= rest.len()
}

/// Why a payload is not a record of this service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// A value as written, its text borrowed from the bytes read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Tagged<'a> {
    Null,
    Integer(i64),
    Date(i64),
    Double(f64),
    Text(&'a str),
    Boolean(bool),
}

/// Reads what [`value`], [`geometry`] and the records write; a count the rest cannot hold is
/// an error, never an allocation.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError("the record ends early".into()));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<usize, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A count of items of at least `item_bytes` each: one the rest cannot hold is damage
    /// (and never allocated for).
    pub(crate) fn count(&mut self, item_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.u32()?;
        if count.saturating_mul(item_bytes) > self.bytes.len() {
            return Err(DecodeError(format!(
                "a count of {count} past the record's end"
            )));
        }
        Ok(count)
    }

    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let length = self.count(1)?;
        std::str::from_utf8(self.take(length)?).map_err(|_| DecodeError("text not UTF-8".into()))
    }

    /// One value as [`value`] writes it.
    pub(crate) fn tagged(&mut self) -> Result<Tagged<'a>, DecodeError> {
        Ok(match self.u8()? {
            0 => Tagged::Null,
            1 => Tagged::Integer(self.i64()?),
            2 => Tagged::Date(self.i64()?),
            3 => Tagged::Double(self.f64()?),
            4 => Tagged::Text(self.string()?),
            5 => Tagged::Boolean(false),
            6 => Tagged::Boolean(true),
            tag => return Err(DecodeError(format!("value tag {tag}"))),
        })
    }

    fn value(&mut self) -> Result<FieldValue, DecodeError> {
        Ok(match self.tagged()? {
            Tagged::Null => FieldValue::Null,
            Tagged::Integer(number) => FieldValue::Integer(number),
            Tagged::Date(ms) => FieldValue::Date(ms),
            Tagged::Double(number) => FieldValue::Double(number),
            Tagged::Text(text) => FieldValue::String(Arc::from(text)),
            Tagged::Boolean(flag) => FieldValue::Boolean(flag),
        })
    }

    /// One geometry as [`geometry`] writes it, of whatever type.
    pub(crate) fn geometry(&mut self) -> Result<Geometry, DecodeError> {
        Ok(match self.u8()? {
            0 => Geometry::Point {
                x: self.f64()?,
                y: self.f64()?,
            },
            1 => Geometry::Polyline {
                paths: self.parts()?,
            },
            2 => Geometry::Polygon {
                rings: self.parts()?,
            },
            tag => return Err(DecodeError(format!("geometry tag {tag}"))),
        })
    }

    fn parts(&mut self) -> Result<Vec<Vec<[f64; 2]>>, DecodeError> {
        let parts = self.count(4)?;
        let mut out = Vec::with_capacity(parts);
        for _ in 0..parts {
            let vertices = self.count(16)?;
            let mut part = Vec::with_capacity(vertices);
            for _ in 0..vertices {
                part.push([self.f64()?, self.f64()?]);
            }
            out.push(part);
        }
        Ok(out)
    }

    fn feature(&mut self, schema: &Schema) -> Result<Feature, DecodeError> {
        let fields = schema.fields();
        if self.count(1)? != fields.len() {
            return Err(DecodeError("an observation of another schema".into()));
        }
        let mut attributes = Vec::with_capacity(fields.len());
        for field in fields {
            let value = self.value()?;
            if !fits(&value, field.field_type) {
                return Err(DecodeError(format!(
                    "field \"{}\" holds a value of another type",
                    field.name
                )));
            }
            attributes.push(value);
        }
        let geometry = match (self.geometry()?, schema.geometry_type) {
            (geometry @ Geometry::Point { .. }, GeometryType::Point)
            | (geometry @ Geometry::Polyline { .. }, GeometryType::Polyline)
            | (geometry @ Geometry::Polygon { .. }, GeometryType::Polygon) => geometry,
            _ => return Err(DecodeError("a geometry of another type".into())),
        };
        Ok(Feature {
            attributes,
            geometry,
        })
    }
}

fn fits(value: &FieldValue, field_type: FieldType) -> bool {
    match value {
        FieldValue::Null => true,
        FieldValue::Date(_) => field_type == FieldType::Date,
        FieldValue::Double(_) => matches!(field_type, FieldType::Single | FieldType::Double),
        FieldValue::Integer(_) => {
            field_type.kind() == ValueKind::Number
                && !matches!(field_type, FieldType::Single | FieldType::Double)
                && field_type != FieldType::Date
        }
        FieldValue::String(_) => field_type == FieldType::String,
        FieldValue::Boolean(_) => field_type == FieldType::Boolean,
    }
}

/// Reads one payload as a record of `schema`'s service.
pub fn decode(payload: &[u8], schema: &Schema) -> Result<Record, DecodeError> {
    let mut reader = Reader { bytes: payload };
    let record = match reader.u8()? {
        0 => {
            let service = reader.string()?.to_owned();
            let signature = reader.string()?.to_owned();
            let kind = match reader.u8()? {
                0 => FileKind::Segment(reader.i64()? as u64),
                1 => FileKind::Checkpoint {
                    object_ids: reader.i64()?,
                    resend_ids: reader.i64()?,
                    replay_from: reader.i64()? as u64,
                },
                tag => return Err(DecodeError(format!("file kind {tag}"))),
            };
            Record::Header(Header {
                service,
                signature,
                kind,
            })
        }
        1 => {
            let count = reader.count(12)?;
            let mut observations = Vec::with_capacity(count);
            for _ in 0..count {
                let received_ms = reader.i64()?;
                observations.push((reader.feature(schema)?, received_ms));
            }
            Record::Observations(observations)
        }
        2 => {
            let count = reader.count(1)?;
            let mut tracks = Vec::with_capacity(count);
            for _ in 0..count {
                tracks.push(reader.value()?);
            }
            Record::Removed(tracks)
        }
        3 => Record::Reserved {
            object_ids: reader.i64()?,
            resend_ids: reader.i64()?,
        },
        tag => return Err(DecodeError(format!("record tag {tag}"))),
    };
    if !reader.bytes.is_empty() {
        return Err(DecodeError("bytes after the record".into()));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Wkid;
    use crate::service::vehicles_schema;
    use crate::simulator::Fleet;

    #[test]
    fn records_read_back_as_written_and_a_torn_or_flipped_frame_ends_the_readable_part() {
        let schema = vehicles_schema(GeometryType::Polyline, Wkid::WebMercator(3857));
        let batch = Fleet::new(schema.clone(), 20, 3, 4).step(1.0, 7_000);
        let records = [
            Record::Header(Header {
                service: "trails".into(),
                signature: signature(&schema),
                kind: FileKind::Checkpoint {
                    object_ids: 99,
                    resend_ids: 1 << 50,
                    replay_from: 7,
                },
            }),
            Record::Observations(
                batch
                    .features
                    .iter()
                    .cloned()
                    .zip(1_000..)
                    .collect::<Vec<_>>(),
            ),
            Record::Removed(vec![
                FieldValue::Integer(4),
                FieldValue::String("a".into()),
                FieldValue::Null,
            ]),
            Record::Reserved {
                object_ids: 1 << 24,
                resend_ids: (1 << 50) + (1 << 32),
            },
        ];
        let mut bytes = Vec::new();
        for record in &records {
            encode(record, &mut bytes);
        }
        let (payloads, end) = frames(&bytes);
        assert_eq!(end, bytes.len());
        let decoded: Vec<Record> = payloads
            .iter()
            .map(|payload| decode(payload, &schema).unwrap())
            .collect();
        assert_eq!(decoded, records);
        let mut direct = Vec::new();
        encode_observations(
            batch
                .features
                .iter()
                .enumerate()
                .map(|(i, f)| (f, 1_000 + i as i64)),
            &mut direct,
        );
        let mut via_record = Vec::new();
        encode(&records[1], &mut via_record);
        assert_eq!(direct, via_record, "one encoding, two ways in");
        // A tail cut anywhere inside the last frame: the frames before it remain.
        let last = bytes.len() - frames(&bytes[..]).0.last().unwrap().len() - FRAME_HEADER;
        for cut in [last + 1, last + 5, bytes.len() - 1] {
            assert_eq!(frames(&bytes[..cut]), (payloads[..3].to_vec(), last));
        }
        // A flipped bit in the second frame: only the first is readable.
        let mut flipped = bytes.clone();
        let second = payloads[0].len() + 2 * FRAME_HEADER + 10;
        flipped[second] ^= 0x10;
        assert_eq!(frames(&flipped).0.len(), 1);
        // Another schema's observations are refused, not misread.
        let points = vehicles_schema(GeometryType::Point, Wkid::WebMercator(3857));
        assert!(decode(payloads[1], &points).is_err());
    }

    #[test]
    fn damage_is_an_error_never_a_panic_or_a_huge_allocation() {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        for payload in [
            &[1u8, 0xff, 0xff, 0xff, 0xff][..],
            &[2, 0xff, 0xff, 0xff, 0x7f, 4],
            &[9],
            &[],
            &[0, 3, 0, 0, 0, b'a'],
        ] {
            assert!(decode(payload, &schema).is_err(), "{payload:?}");
        }
        let huge = [0xffu8; 16];
        assert_eq!(frames(&huge), (Vec::<&[u8]>::new(), 0));
    }
}
