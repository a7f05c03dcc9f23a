//! The backbone's messages. A log message is the Esri JSON featureSet of a batch of
//! observations (every attribute, coordinates in the service's own spatial reference), written
//! by the stream's encoder and read back by ingest's parser; a checkpoint message is a line of
//! metadata (the log position it is as of, its place in the checkpoint, each feature's object
//! id and time of storage) followed by such a featureSet. What a node reads back is exactly
//! what every node fans out (the accepting node included), so identical subscriptions get
//! identical bytes on every node.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::feature::{Feature, FieldValue, Schema};
use crate::filter::OutFields;
use crate::ingest::{IngestError, Reason};
use crate::protocol::feature_result::{FeatureEncoder, View};

/// Most observations in one log message: an observation's object id is its message's stream
/// sequence times this plus its position in the message, so ids grow with the log on every
/// node alike (2^40 messages fit below the resent copies' range, `latest::RESEND_IDS`).
pub const PER_MESSAGE: usize = 1024;

/// A message is closed once it is this large (JetStream's default limit is 1 MiB).
pub const MESSAGE_BYTES: usize = 512 * 1024;

/// Writes and reads one service's messages.
pub struct Codec {
    schema: Schema,
    encoder: FeatureEncoder,
    prefix: Vec<u8>,
}

/// A message that is not one of this service's (another version's, or corrupted).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a featureSet.
    #[error("{0}")]
    Document(#[from] IngestError),
    /// Not UTF-8.
    #[error("the message is not UTF-8")]
    Utf8,
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
        let view = View::new(schema.wkid, OutFields::All);
        let prefix = format!(
            r#"{{"spatialReference":{{"wkid":{}}},"features":["#,
            schema.wkid.number()
        );
        Codec {
            schema: schema.clone(),
            encoder: FeatureEncoder::new(schema, &view),
            prefix: prefix.into_bytes(),
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
                out.extend_from_slice(&self.prefix);
            } else {
                out.push(b',');
            }
            self.encoder.encode_feature(feature, &mut out);
            count += 1;
            if count == PER_MESSAGE || out.len() >= MESSAGE_BYTES {
                out.extend_from_slice(b"]}");
                messages.push((Bytes::copy_from_slice(&out), first..first + count));
                first += count;
                count = 0;
            }
        }
        if count > 0 {
            out.extend_from_slice(b"]}");
            messages.push((Bytes::from(out), first..first + count));
        }
        messages
    }

    /// The observations of a log message stored at `stored_ms`, validated as ingest validates
    /// them at that time (a start time further ahead of it than any node would have accepted
    /// is a forgery, refused). Object ids are left to the caller.
    pub fn decode_log(&self, payload: &[u8], stored_ms: i64) -> Result<Decoded, DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|_| DecodeError::Utf8)?;
        let ingested =
            crate::ingest::parse_document(text, &self.schema, stored_ms, 0, PER_MESSAGE)?;
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

    /// Appends one feature as the messages write it (a comma-separated run of these is the
    /// `features` of [`Codec::checkpoint_message`]).
    pub fn write_feature(&self, feature: &Feature, out: &mut Vec<u8>) {
        self.encoder.encode_feature(feature, out);
    }

    /// A checkpoint message: `meta` (its `ids` and `received` are those of the features, in
    /// order) and `features`, features written by [`Codec::write_feature`] separated by commas.
    pub fn checkpoint_message(&self, meta: &CheckpointMeta, features: &[u8]) -> Bytes {
        let mut out = serde_json::to_vec(meta).expect("metadata serialises");
        out.push(b'\n');
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(features);
        out.extend_from_slice(b"]}");
        Bytes::from(out)
    }

    /// A checkpoint message's metadata and features, each numbered and timed by it. A message
    /// whose features do not all read back, or do not match its metadata, is refused whole.
    pub fn decode_checkpoint(
        &self,
        payload: &[u8],
    ) -> Result<(CheckpointMeta, Vec<Feature>), DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|_| DecodeError::Utf8)?;
        let (meta, set) = text
            .split_once('\n')
            .ok_or_else(|| DecodeError::Checkpoint("no metadata line".into()))?;
        let meta: CheckpointMeta =
            serde_json::from_str(meta).map_err(|err| DecodeError::Checkpoint(err.to_string()))?;
        if meta.part >= meta.parts || meta.ids.len() != meta.received.len() {
            return Err(DecodeError::Checkpoint(
                "its metadata does not add up".into(),
            ));
        }
        // Stored times are checked against the newest of them: a checkpoint holds what the log
        // held, none of it further ahead of its storage than ingest takes.
        let newest = meta.received.iter().copied().max().unwrap_or(0);
        let ingested = crate::ingest::parse_document(set, &self.schema, newest, 0, meta.ids.len())?;
        if let Some(rejection) = ingested.rejected.first() {
            return Err(DecodeError::Checkpoint(format!(
                "feature {}: {}",
                rejection.index, rejection.reason
            )));
        }
        if ingested.features.len() != meta.ids.len() {
            return Err(DecodeError::Checkpoint(format!(
                "{} features for {} ids",
                ingested.features.len(),
                meta.ids.len()
            )));
        }
        let object_id = self.schema.object_id_field();
        let mut features = ingested.features;
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
}

/// The object id of the observation at `position` of the log message at stream `sequence`.
pub fn object_id(sequence: u64, position: usize) -> i64 {
    (sequence as i64) * PER_MESSAGE as i64 + position as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::GeometryType;
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
            for (index, feature) in features.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                codec.write_feature(feature, &mut out);
            }
            out
        };
        let message = codec.checkpoint_message(&meta, &written(&features));
        let (read_meta, read) = codec.decode_checkpoint(&message).expect("reads back");
        assert_eq!(codec.checkpoint_position(&message), Some(41));
        assert_eq!(read_meta, meta);
        for (feature, id) in read.iter().zip(&meta.ids) {
            assert_eq!(
                feature.attributes[schema.object_id_field()],
                FieldValue::Integer(*id)
            );
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
}
