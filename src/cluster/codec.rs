//! The backbone's messages, in a binary form of their own: a log message is a set of
//! observations (every attribute but the object id, the geometry in the service's own spatial
//! reference, numbers as IEEE 754 bits: exact, no text to format or parse); a checkpoint message
//! is a line of JSON metadata (the log position it is as of, its place in the checkpoint, each
//! feature's object id and time of storage) followed by such a set. What a node reads back is
//! exactly what every node fans out (the accepting node included), so identical subscriptions
//! get identical bytes on every node.
//!
//! A set, little-endian throughout:
//!
//! ```text
//! "FSB1"                                   magic and version
//! u32 fields, each: u32 length, UTF-8 name the values' order (the object id is not written)
//! u32 features, each:
//!   per field one value and then the geometry, tagged as the state journal writes them
//!   (`latest::codec::{value, geometry}`): values 0 null | 1 i64 | 2 date i64 | 3 f64 |
//!   4 u32 length, UTF-8 | 5 false | 6 true; geometries 0 point: f64 x, f64 y |
//!   1 paths | 2 rings: u32 parts, each u32 vertices, each f64 x, f64 y
//! ```
//!
//! Reading trusts a message no more than a client's document: every value is checked by
//! ingest's rules for the field it names (`ingest::indexed_feature`), a feature that fails is
//! refused alone, and bytes that do not form a set refuse the whole message. Sets written as
//! Esri JSON by versions before this form are still read (a stream outlives an upgrade).

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::feature::{Feature, FieldValue, Schema};
use crate::ingest::{IngestError, Reason, Scalar};
use crate::latest::TrackKey;
use crate::latest::codec as binary;

/// Most observations in one log message: an observation's object id is its message's stream
/// sequence times this plus its position in the message, so ids grow with the log on every
/// node alike (2^40 messages fit below the resent copies' range, `latest::RESEND_IDS`).
pub const PER_MESSAGE: usize = 1024;

/// A message is closed once it is this large (JetStream's default limit is 1 MiB).
pub const MESSAGE_BYTES: usize = 512 * 1024;

/// The first bytes of a set.
const MAGIC: &[u8; 4] = b"FSB1";

/// The first bytes of an operator's delete of a track: then the track's key (u8 0 and an i64
/// integer id; 1 and a text id; 2 and any other id, by its text).
const DELETE: &[u8; 4] = b"FSD1";

/// Writes and reads one service's messages.
pub struct Codec {
    schema: Schema,
    /// The magic, the field names and a zero count: where every set starts.
    header: Vec<u8>,
    /// The schema's fields in the order values are written (all but the object id).
    written: Vec<usize>,
}

/// A message that is not one of this service's (another version's, or corrupted).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A legacy JSON message that is not a featureSet.
    #[error("{0}")]
    Document(#[from] IngestError),
    /// Not a set of this codec's, or cut short.
    #[error("the message is malformed: {0}")]
    Malformed(String),
    /// A checkpoint message without its metadata line, or with one that does not fit.
    #[error("not a checkpoint message: {0}")]
    Checkpoint(String),
}

/// The observations of a log message, each with its position in the message.
#[derive(Debug)]
pub struct Decoded {
    /// Valid observations, with their positions.
    pub features: Vec<(usize, Feature)>,
    /// Observations the service's schema refuses (a forgery, another version's): skipped on
    /// every node alike, each with why.
    pub rejected: Vec<(usize, Reason)>,
}

/// Where a checkpoint message belongs and what its features are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The log position the checkpoint is the state as of (every log message up to it).
    pub through: u64,
    /// This message's place in the checkpoint, from 0.
    pub part: u32,
    /// The checkpoint's messages.
    pub parts: u32,
    /// Each feature's object id.
    pub ids: Vec<i64>,
    /// When the log stored each feature (epoch ms; expiry counts from it).
    pub received: Vec<i64>,
}

impl Codec {
    /// A codec for a service's schema.
    pub fn new(schema: &Schema) -> Codec {
        let written: Vec<usize> = (0..schema.fields().len())
            .filter(|&index| index != schema.object_id_field())
            .collect();
        let mut header = MAGIC.to_vec();
        binary::count(&mut header, written.len());
        for &index in &written {
            binary::string(&mut header, &schema.fields()[index].name);
        }
        binary::count(&mut header, 0);
        Codec {
            schema: schema.clone(),
            header,
            written,
        }
    }

    /// Writes `features` as log messages: at most [`PER_MESSAGE`] observations each, closed
    /// once past [`MESSAGE_BYTES`]. Returns each message with the range of `features` it holds.
    pub fn encode_log<'a>(
        &self,
        features: impl IntoIterator<Item = &'a Feature>,
    ) -> Vec<(Bytes, std::ops::Range<usize>)> {
        let mut messages = Vec::new();
        let mut out = Vec::new();
        let (mut first, mut count) = (0, 0);
        for feature in features {
            if count == 0 {
                out.clear();
                out.extend_from_slice(&self.header);
            }
            self.write_feature(feature, &mut out);
            count += 1;
            if count == PER_MESSAGE || out.len() >= MESSAGE_BYTES {
                self.close(&mut out, 0, count);
                messages.push((Bytes::copy_from_slice(&out), first..first + count));
                first += count;
                count = 0;
            }
        }
        if count > 0 {
            self.close(&mut out, 0, count);
            messages.push((Bytes::from(out), first..first + count));
        }
        messages
    }

    /// Writes the count of the set starting at `start` of `out`.
    fn close(&self, out: &mut [u8], start: usize, count: usize) {
        let at = start + self.header.len() - 4;
        out[at..at + 4].copy_from_slice(&(count as u32).to_le_bytes());
    }

    /// The observations of a log message stored at `stored_ms`, validated as ingest validates
    /// them at that time (a start time further ahead of it than any node would have accepted
    /// is a forgery, refused). Object ids are left to the caller.
    pub fn decode_log(&self, payload: &[u8], stored_ms: i64) -> Result<Decoded, DecodeError> {
        if !payload.starts_with(MAGIC) {
            return self.decode_json(payload, stored_ms, PER_MESSAGE);
        }
        self.decode_set(payload, stored_ms, PER_MESSAGE)
    }

    /// A log message that removes a track from the state (an operator's delete), applied in
    /// the log's order by every node.
    pub fn encode_delete(&self, key: &TrackKey) -> Bytes {
        let mut out = DELETE.to_vec();
        match key {
            TrackKey::Integer(id) => {
                out.push(0);
                out.extend_from_slice(&id.to_le_bytes());
            }
            TrackKey::Text(text) => {
                out.push(1);
                binary::string(&mut out, text);
            }
            TrackKey::Other(text) => {
                out.push(2);
                binary::string(&mut out, text);
            }
        }
        Bytes::from(out)
    }

    /// The track a delete message removes; `None` when the message is not a delete.
    pub fn decode_delete(&self, payload: &[u8]) -> Option<Result<TrackKey, DecodeError>> {
        let mut reader = binary::Reader::new(payload.strip_prefix(DELETE)?);
        let key = (|| {
            let key = match reader.u8()? {
                0 => TrackKey::Integer(reader.i64()?),
                1 => TrackKey::Text(reader.string()?.into()),
                2 => TrackKey::Other(reader.string()?.to_owned()),
                _ => return Err(malformed("a track id of no known kind")),
            };
            if !reader.bytes.is_empty() {
                return Err(malformed("bytes after the track id"));
            }
            Ok(key)
        })();
        Some(key.map_err(DecodeError::from))
    }

    /// Appends one feature as the messages write it (a run of these is the features of
    /// [`Codec::checkpoint_message`]).
    pub fn write_feature(&self, feature: &Feature, out: &mut Vec<u8>) {
        for &index in &self.written {
            binary::value(
                out,
                feature.attributes.get(index).unwrap_or(&FieldValue::Null),
            );
        }
        binary::geometry(out, &feature.geometry);
    }

    /// A checkpoint message: `meta` (its `ids` and `received` are those of the features, in
    /// order) and `features`, a run of features written by [`Codec::write_feature`].
    pub fn checkpoint_message(&self, meta: &CheckpointMeta, features: &[u8]) -> Bytes {
        let mut out = serde_json::to_vec(meta).expect("metadata serialises");
        out.push(b'\n');
        let start = out.len();
        out.extend_from_slice(&self.header);
        self.close(&mut out, start, meta.ids.len());
        out.extend_from_slice(features);
        Bytes::from(out)
    }

    /// A checkpoint message's metadata and features, each numbered and timed by it. A message
    /// whose features do not all read back, or do not match its metadata, is refused whole.
    pub fn decode_checkpoint(
        &self,
        payload: &[u8],
    ) -> Result<(CheckpointMeta, Vec<Feature>), DecodeError> {
        let split = payload
            .iter()
            .position(|&byte| byte == b'\n')
            .ok_or_else(|| DecodeError::Checkpoint("no metadata line".into()))?;
        let (meta, set) = (&payload[..split], &payload[split + 1..]);
        let meta: CheckpointMeta =
            serde_json::from_slice(meta).map_err(|err| DecodeError::Checkpoint(err.to_string()))?;
        if meta.part >= meta.parts || meta.ids.len() != meta.received.len() {
            return Err(DecodeError::Checkpoint(
                "its metadata does not add up".into(),
            ));
        }
        // Stored times are checked against the newest of them: a checkpoint holds what the log
        // held, none of it further ahead of its storage than ingest takes.
        let newest = meta.received.iter().copied().max().unwrap_or(0);
        let decoded = if set.starts_with(MAGIC) {
            self.decode_set(set, newest, meta.ids.len())?
        } else {
            self.decode_json(set, newest, meta.ids.len())?
        };
        if let Some((position, reason)) = decoded.rejected.first() {
            return Err(DecodeError::Checkpoint(format!(
                "feature {position}: {reason}"
            )));
        }
        if decoded.features.len() != meta.ids.len() {
            return Err(DecodeError::Checkpoint(format!(
                "{} features for {} ids",
                decoded.features.len(),
                meta.ids.len()
            )));
        }
        let object_id = self.schema.object_id_field();
        let mut features: Vec<Feature> = decoded
            .features
            .into_iter()
            .map(|(_, feature)| feature)
            .collect();
        for (feature, id) in features.iter_mut().zip(&meta.ids) {
            feature.attributes[object_id] = FieldValue::Integer(*id);
        }
        Ok((meta, features))
    }

    /// The log position a checkpoint message is as of, read from its metadata line alone.
    pub fn checkpoint_position(&self, payload: &[u8]) -> Option<u64> {
        let line = payload.split(|&byte| byte == b'\n').next()?;
        #[derive(Deserialize)]
        struct Position {
            through: u64,
        }
        Some(serde_json::from_slice::<Position>(line).ok()?.through)
    }

    /// The start time of an observation (epoch ms), when the schema has a start-time field.
    pub fn time_of(&self, feature: &Feature) -> Option<i64> {
        match feature.attributes.get(self.schema.start_time_field()?) {
            Some(FieldValue::Date(ms)) => Some(*ms),
            _ => None,
        }
    }

    /// Reads a set of at most `max` features, each validated at `stored_ms`.
    fn decode_set(&self, set: &[u8], stored_ms: i64, max: usize) -> Result<Decoded, DecodeError> {
        let mut reader = binary::Reader::new(&set[MAGIC.len()..]);
        let fields = reader.count(4)?;
        // Each field of the message: the schema's index for it, or its name when the schema
        // has no such field (a value there refuses the feature, as an unknown JSON key does).
        let mut columns: Vec<Result<usize, &str>> = Vec::with_capacity(fields);
        for _ in 0..fields {
            let name = reader.string()?;
            let column = self.schema.field_index(name).ok_or(name);
            if column.is_ok() && columns.contains(&column) {
                return Err(malformed("a field is named twice").into());
            }
            columns.push(column);
        }
        let count = reader.u32()?;
        if count > max {
            return Err(DecodeError::Document(IngestError::TooManyFeatures {
                given: count,
                max,
            }));
        }
        let mut decoded = Decoded {
            features: Vec::with_capacity(count),
            rejected: Vec::new(),
        };
        let mut given = Vec::with_capacity(columns.len());
        for position in 0..count {
            given.clear();
            let mut unknown = None;
            for column in &columns {
                let value = scalar(reader.tagged()?);
                match column {
                    Ok(index) => given.push((*index, value)),
                    Err(name) => unknown = unknown.or(Some(*name)),
                }
            }
            let geometry = reader.geometry()?;
            let outcome = match unknown {
                Some(name) => Err(Reason::UnknownField(name.to_owned())),
                None => crate::ingest::indexed_feature(
                    &self.schema,
                    given.drain(..),
                    geometry,
                    stored_ms,
                ),
            };
            match outcome {
                Ok(feature) => decoded.features.push((position, feature)),
                Err(reason) => decoded.rejected.push((position, reason)),
            }
        }
        if !reader.bytes.is_empty() {
            return Err(malformed("bytes after the last feature").into());
        }
        Ok(decoded)
    }

    /// What [`Codec::decode_log`] reads of a message this node encoded from `features` and the
    /// log stored at `stored_ms`, without reading it: the same values (the set is exact, a unit
    /// test checks it), refused by the one ingest rule that depends on the time of receipt.
    pub fn appended(&self, features: Vec<Feature>, stored_ms: i64) -> Decoded {
        let mut decoded = Decoded {
            features: Vec::with_capacity(features.len()),
            rejected: Vec::new(),
        };
        for (position, feature) in features.into_iter().enumerate() {
            match crate::ingest::still_valid_at(&self.schema, &feature, stored_ms) {
                Ok(()) => decoded.features.push((position, feature)),
                Err(reason) => decoded.rejected.push((position, reason)),
            }
        }
        decoded
    }

    /// Reads a set written as an Esri JSON featureSet (by versions before the binary form).
    fn decode_json(&self, set: &[u8], stored_ms: i64, max: usize) -> Result<Decoded, DecodeError> {
        let text = std::str::from_utf8(set)
            .map_err(|_| DecodeError::Malformed("neither a set nor UTF-8 JSON".into()))?;
        let ingested = crate::ingest::parse_document(text, &self.schema, stored_ms, 0, max)?;
        Ok(Decoded {
            features: ingested
                .indexes
                .into_iter()
                .zip(ingested.features)
                .collect(),
            rejected: ingested
                .rejected
                .into_iter()
                .map(|rejection| (rejection.index, rejection.reason))
                .collect(),
        })
    }
}

/// A value of a set as ingest's rules read it (a date is epoch milliseconds).
fn scalar(value: binary::Tagged<'_>) -> Scalar<'_> {
    match value {
        binary::Tagged::Null => Scalar::Null,
        binary::Tagged::Integer(number) | binary::Tagged::Date(number) => Scalar::Integer(number),
        binary::Tagged::Double(number) => Scalar::Float(number),
        binary::Tagged::Text(text) => Scalar::Text(Cow::Borrowed(text)),
        binary::Tagged::Boolean(flag) => Scalar::Bool(flag),
    }
}

fn malformed(what: &str) -> binary::DecodeError {
    binary::DecodeError(what.to_owned())
}

impl From<binary::DecodeError> for DecodeError {
    fn from(err: binary::DecodeError) -> DecodeError {
        DecodeError::Malformed(err.0)
    }
}

/// The object id of the observation at `position` of the log message at stream `sequence`.
pub fn object_id(sequence: u64, position: usize) -> i64 {
    (sequence as i64) * PER_MESSAGE as i64 + position as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::GeometryType;
    use crate::geometry::Geometry;
    use crate::geometry::Wkid;
    use crate::service::vehicles_schema;

    #[test]
    fn a_batch_reads_back_as_the_same_bytes_in_messages_of_bounded_size() {
        for wkid in [Wkid::Wgs84, Wkid::WebMercator(102100)] {
            let schema = vehicles_schema(GeometryType::Point, wkid);
            let codec = Codec::new(&schema);
            let mut fleet = crate::simulator::Fleet::new(schema.clone(), 2_500, 7, 8);
            let features = fleet.step(1.0, 1_700_000_000_000).features;
            let messages = codec.encode_log(&features);
            assert_eq!(messages.len(), 3, "1024 + 1024 + 452");
            let mut read = Vec::new();
            for (message, range) in &messages {
                assert!(message.len() < MESSAGE_BYTES + 4096);
                let decoded = codec
                    .decode_log(message, 1_700_000_000_000)
                    .expect("reads back");
                assert!(decoded.rejected.is_empty());
                assert_eq!(decoded.features.len(), range.len());
                read.extend(decoded.features.into_iter().map(|(position, mut feature)| {
                    // Object ids are the reader's to give: the writer's come back as they were.
                    let id = schema.object_id_field();
                    feature.attributes[id] =
                        features[range.start + position].attributes[id].clone();
                    feature
                }));
            }
            assert_eq!(read, features, "every value exactly as written");
            assert_eq!(
                codec
                    .encode_log(&read)
                    .into_iter()
                    .map(|(bytes, _)| bytes)
                    .collect::<Vec<_>>(),
                messages
                    .into_iter()
                    .map(|(bytes, _)| bytes)
                    .collect::<Vec<_>>(),
                "stable once written"
            );
        }
    }

    #[test]
    fn a_checkpoint_message_keeps_ids_and_times() {
        let schema = vehicles_schema(GeometryType::Polyline, Wkid::Wgs84);
        let codec = Codec::new(&schema);
        let mut fleet = crate::simulator::Fleet::new(schema.clone(), 20, 7, 8);
        let features = fleet.step(1.0, 1_700_000_000_000).features;
        let meta = CheckpointMeta {
            through: 41,
            part: 1,
            parts: 3,
            ids: (0..20).map(|id| id * 7 + 1).collect(),
            received: (0..20).map(|ms| 1_700_000_000_000 + ms).collect(),
        };
        let written = |features: &[Feature]| {
            let mut out = Vec::new();
            for feature in features {
                codec.write_feature(feature, &mut out);
            }
            out
        };
        let message = codec.checkpoint_message(&meta, &written(&features));
        let (read_meta, read) = codec.decode_checkpoint(&message).expect("reads back");
        assert_eq!(codec.checkpoint_position(&message), Some(41));
        assert_eq!(read_meta, meta);
        for ((feature, id), written) in read.iter().zip(&meta.ids).zip(&features) {
            assert_eq!(
                feature.attributes[schema.object_id_field()],
                FieldValue::Integer(*id)
            );
            assert_eq!(feature.geometry, written.geometry, "exact, not rounded");
        }
        let mut wrong = meta.clone();
        wrong.ids.pop();
        assert!(
            codec
                .decode_checkpoint(&codec.checkpoint_message(&wrong, &written(&features)))
                .is_err()
        );
    }

    #[test]
    fn a_foreign_message_is_an_error_or_has_nothing_valid() {
        let codec = Codec::new(&vehicles_schema(GeometryType::Point, Wkid::Wgs84));
        for bad in [
            &b"\xff"[..],
            b"{}",
            b"[]",
            br#"{"features":[{"attributes":{"x":1}}]}"#,
        ] {
            let read = codec.decode_log(bad, 1_000);
            assert!(
                read.as_ref()
                    .map_or(true, |decoded| decoded.features.is_empty()),
                "{:?}: {read:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(codec.decode_checkpoint(bad).is_err());
        }
    }

    #[test]
    fn a_forged_value_refuses_its_feature_alone_by_ingest_rules() {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let codec = Codec::new(&schema);
        let mut fleet = crate::simulator::Fleet::new(schema.clone(), 6, 7, 8);
        let mut features = fleet.step(1.0, 1_700_000_000_000).features;
        let field = |name: &str| schema.field_index(name).expect("a vehicles field");
        features[1].attributes[field("speed")] = FieldValue::String("fast".into());
        features[2].geometry = Geometry::Point { x: 500.0, y: 0.0 };
        features[3].attributes[schema.track_id_field()] = FieldValue::Null;
        let start = schema
            .start_time_field()
            .expect("vehicles have a start time");
        features[4].attributes[start] = FieldValue::Date(1_800_000_000_000);
        features[5].geometry = Geometry::Polyline {
            paths: vec![vec![[0.0, 0.0], [1.0, 1.0]]],
        };
        let (message, _) = codec.encode_log(&features).remove(0);
        let decoded = codec
            .decode_log(&message, 1_700_000_000_000)
            .expect("a set");
        assert_eq!(
            decoded
                .features
                .iter()
                .map(|(position, _)| *position)
                .collect::<Vec<_>>(),
            [0]
        );
        let reasons: Vec<String> = decoded
            .rejected
            .iter()
            .map(|(position, reason)| format!("{position}: {reason}"))
            .collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(
            reasons[0].starts_with("1: field \"speed\" expects a number"),
            "{reasons:?}"
        );
        assert!(reasons[1].starts_with("2: "), "{reasons:?}");
        assert!(reasons[2].contains("track id"), "{reasons:?}");
        assert!(reasons[3].contains("ahead"), "{reasons:?}");
        assert!(reasons[4].contains("polyline"), "{reasons:?}");
    }

    #[test]
    fn what_a_node_appended_applies_as_every_other_node_reads_it() {
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let codec = Codec::new(&schema);
        let received = 1_700_000_000_000;
        let ahead = received + schema.limits.max_future_ms;
        let document = format!(
            r#"{{"features": [
                {{"attributes": {{"TRACKID": 1, "name": "ä \"1\"", "route": "", "speed": 3, "heading": -0.0, "active": 1, "status": null}},
                  "geometry": {{"x": 0.1, "y": 1e-300}}}},
                {{"attributes": {{"TRACKID": 2, "name": "b", "route": "r", "observed": {ahead}, "speed": 1.5e300, "heading": 0, "active": true}},
                  "geometry": {{"x": -180, "y": 90}}}},
                {{"attributes": {{"TRACKID": 3, "name": "c", "route": "r", "observed": "2023-11-14T22:13:20Z", "speed": 0, "heading": 1, "active": false, "status": "x"}},
                  "geometry": {{"x": 5, "y": 6}}}}
            ]}}"#
        );
        let ingested =
            crate::ingest::parse_document(&document, &schema, received, 0, 10).expect("a document");
        assert!(ingested.rejected.is_empty(), "{:?}", ingested.rejected);
        let features = ingested.features;
        let (message, _) = codec.encode_log(&features).remove(0);
        // Stored by the log's clock at, after, and before (a skewed clock) the node's receipt.
        for stored in [received, received + 60_000, received - 1_000] {
            let read = codec.decode_log(&message, stored).expect("a set");
            let applied = codec.appended(features.clone(), stored);
            let refused = |decoded: &Decoded| {
                decoded
                    .rejected
                    .iter()
                    .map(|(position, reason)| (*position, reason.to_string()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(applied.features, read.features, "stored at {stored}");
            assert_eq!(refused(&applied), refused(&read), "stored at {stored}");
            let ahead_refused = stored < received;
            assert_eq!(read.rejected.len(), usize::from(ahead_refused));
        }
    }

    #[test]
    fn a_set_cut_short_or_overlong_is_refused_whole() {
        let schema = vehicles_schema(GeometryType::Polygon, Wkid::Wgs84);
        let codec = Codec::new(&schema);
        let mut fleet = crate::simulator::Fleet::new(schema.clone(), 3, 7, 8);
        let features = fleet.step(1.0, 1_700_000_000_000).features;
        let (message, _) = codec.encode_log(&features).remove(0);
        assert_eq!(
            codec
                .decode_log(&message, 1_700_000_000_000)
                .expect("whole")
                .features
                .len(),
            3
        );
        for cut in MAGIC.len()..message.len() {
            assert!(
                matches!(
                    codec.decode_log(&message[..cut], 1_700_000_000_000),
                    Err(DecodeError::Malformed(_))
                ),
                "cut at {cut}"
            );
        }
        let mut longer = message.to_vec();
        longer.push(0);
        assert!(codec.decode_log(&longer, 1_700_000_000_000).is_err());
        // A count of parts or vertices larger than the message can hold allocates nothing.
        let mut huge = codec.header.clone();
        codec.close(&mut huge, 0, 1);
        huge.extend(std::iter::repeat_n(0, codec.written.len()));
        huge.push(2);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(codec.decode_log(&huge, 0).is_err());
    }

    #[test]
    fn a_message_written_as_json_by_an_earlier_version_still_reads() {
        use crate::filter::OutFields;
        use crate::protocol::feature_result::{FeatureEncoder, View};
        let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
        let codec = Codec::new(&schema);
        let mut fleet = crate::simulator::Fleet::new(schema.clone(), 4, 7, 8);
        let features = fleet.step(1.0, 1_700_000_000_000).features;
        let encoder = FeatureEncoder::new(&schema, &View::new(schema.wkid, OutFields::All));
        let mut set = br#"{"spatialReference":{"wkid":4326},"features":["#.to_vec();
        for (index, feature) in features.iter().enumerate() {
            if index > 0 {
                set.push(b',');
            }
            encoder.encode_feature(feature, &mut set);
        }
        set.extend_from_slice(b"]}");
        let decoded = codec.decode_log(&set, 1_700_000_000_000).expect("reads");
        assert_eq!(decoded.features.len(), 4);
        let meta = CheckpointMeta {
            through: 9,
            part: 0,
            parts: 1,
            ids: vec![1, 2, 3, 4],
            received: vec![1_700_000_000_000; 4],
        };
        let mut checkpoint = serde_json::to_vec(&meta).expect("serialises");
        checkpoint.push(b'\n');
        checkpoint.extend_from_slice(&set);
        let (_, read) = codec.decode_checkpoint(&checkpoint).expect("reads");
        assert_eq!(read.len(), 4);
    }

    #[test]
    fn a_delete_names_its_track_exactly() {
        let codec = Codec::new(&vehicles_schema(GeometryType::Point, Wkid::Wgs84));
        for key in [
            TrackKey::Integer(-7),
            TrackKey::Text("bus \u{e9} 12".into()),
            TrackKey::Other("1.5".into()),
        ] {
            let message = codec.encode_delete(&key);
            assert_eq!(
                codec.decode_delete(&message).expect("a delete").ok(),
                Some(key)
            );
            assert!(
                codec
                    .decode_delete(&message[..message.len() - 1])
                    .expect("a delete")
                    .is_err()
            );
            assert!(codec.decode_log(&message, 0).is_err(), "not observations");
        }
        let (set, _) = codec
            .encode_log(
                &crate::simulator::Fleet::new(codec.schema.clone(), 1, 7, 8)
                    .step(1.0, 0)
                    .features,
            )
            .remove(0);
        assert!(codec.decode_delete(&set).is_none());
    }
}
