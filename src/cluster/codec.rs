//! An observation as a backbone message: the Esri JSON featureSet of one feature, every
//! attribute, coordinates in the service's own spatial reference, written by the stream's
//! encoder and read back by ingest's parser. What a node reads back is exactly what every
//! node fans out (the accepting node included), so identical subscriptions get identical
//! bytes on every node.

use bytes::Bytes;

use crate::feature::{Feature, FieldValue, Schema};
use crate::filter::OutFields;
use crate::ingest::{IngestError, Reason};
use crate::protocol::feature_result::{FeatureEncoder, View};

/// Writes and reads one service's observations.
pub struct Codec {
    schema: Schema,
    encoder: FeatureEncoder,
    prefix: Vec<u8>,
}

/// A message that is not an observation of this service (another version's, or corrupted).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not UTF-8 or not a featureSet.
    #[error("{0}")]
    Document(#[from] IngestError),
    /// A feature the service's schema refuses.
    #[error("{0}")]
    Feature(#[from] Reason),
    /// Not exactly one feature.
    #[error("a message holds one observation, this one holds {0}")]
    Count(usize),
    /// Not UTF-8.
    #[error("the message is not UTF-8")]
    Utf8,
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

    /// The message of one observation.
    pub fn encode(&self, feature: &Feature) -> Bytes {
        let mut out = Vec::with_capacity(self.prefix.len() + 256);
        out.extend_from_slice(&self.prefix);
        self.encoder.encode_feature(feature, &mut out);
        out.extend_from_slice(b"]}");
        Bytes::from(out)
    }

    /// The observation of a message, numbered `object_id` (its sequence on the backbone) and
    /// stored at `stored_ms`: validated as ingest validates it at that time (a start time
    /// further ahead of it than any node would have accepted is a forgery, refused).
    pub fn decode(
        &self,
        payload: &[u8],
        object_id: i64,
        stored_ms: i64,
    ) -> Result<Feature, DecodeError> {
        let text = std::str::from_utf8(payload).map_err(|_| DecodeError::Utf8)?;
        let mut ingested = crate::ingest::parse_document(text, &self.schema, stored_ms, 0, 1)?;
        if let Some(rejection) = ingested.rejected.pop() {
            return Err(rejection.reason.into());
        }
        let mut feature = match ingested.features.len() {
            1 => ingested.features.pop().expect("one feature"),
            count => return Err(DecodeError::Count(count)),
        };
        feature.attributes[self.schema.object_id_field()] = FieldValue::Integer(object_id);
        Ok(feature)
    }

    /// The start time of an observation (epoch ms), when the schema has a start-time field.
    pub fn time_of(&self, feature: &Feature) -> Option<i64> {
        match feature.attributes.get(self.schema.start_time_field()?) {
            Some(FieldValue::Date(ms)) => Some(*ms),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::GeometryType;
    use crate::geometry::Wkid;
    use crate::service::vehicles_schema;

    #[test]
    fn an_observation_reads_back_as_the_same_bytes() {
        for wkid in [Wkid::Wgs84, Wkid::WebMercator(102100)] {
            let schema = vehicles_schema(GeometryType::Point, wkid);
            let codec = Codec::new(&schema);
            let mut fleet = crate::simulator::Fleet::new(schema.clone(), 50, 7, 8);
            for feature in fleet.step(1.0, 1_700_000_000_000).features {
                let message = codec.encode(&feature);
                let read = codec
                    .decode(&message, 99, 1_700_000_000_000)
                    .expect("reads back");
                assert_eq!(
                    read.attributes[schema.object_id_field()],
                    FieldValue::Integer(99)
                );
                let mut again = read.clone();
                again.attributes[schema.object_id_field()] =
                    feature.attributes[schema.object_id_field()].clone();
                assert_eq!(codec.encode(&again), message, "stable once written");
            }
        }
    }

    #[test]
    fn a_foreign_message_is_an_error() {
        let codec = Codec::new(&vehicles_schema(GeometryType::Point, Wkid::Wgs84));
        for bad in [
            &b"\xff"[..],
            b"{}",
            b"[]",
            br#"{"features":[{"attributes":{"x":1}}]}"#,
        ] {
            assert!(
                codec.decode(bad, 1, 1_000).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
