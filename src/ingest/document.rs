//! The JSON shapes ingest reads, borrowed from the request's bytes: Esri JSON (a feature, an
//! array of features, a featureSet) and GeoJSON (a Feature, a FeatureCollection). A document is
//! split into raw features first, so that one malformed feature is reported by its index
//! instead of failing the whole request.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A document split into its features, each still raw.
pub(super) struct Document<'a> {
    /// The features, in order.
    pub features: Vec<&'a RawValue>,
    /// A featureSet's `spatialReference` (applies to geometries without their own).
    pub spatial_reference: Option<SpatialReference>,
}

/// Why a document cannot be split into features.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but neither a feature, an array of features, a featureSet nor a FeatureCollection.
    #[error(
        "expected an Esri JSON feature, an array of features or a featureSet, or a GeoJSON Feature or FeatureCollection; found {0}"
    )]
    NotFeatures(&'static str),
}

/// The keys that tell a container from a single feature, with its features still raw
/// (`&RawValue`, read one by one) or read at once (`RawFeature`).
#[derive(Deserialize)]
#[serde(bound(deserialize = "F: Deserialize<'de>"))]
struct Container<'a, F> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    features: Option<Vec<F>>,
    #[serde(rename = "spatialReference", default)]
    spatial_reference: Option<SpatialReference>,
    #[serde(default)]
    attributes: Option<IgnoredAny>,
    #[serde(default)]
    properties: Option<IgnoredAny>,
    #[serde(default)]
    geometry: Option<IgnoredAny>,
}

impl<F> Container<'_, F> {
    /// A single feature (which may name a `features` key of its own), not a container.
    fn is_feature(&self) -> bool {
        self.attributes.is_some()
            || self.properties.is_some()
            || self.geometry.is_some()
            || self.kind.as_deref() == Some("Feature")
    }
}

/// The features of a well-formed array of features, featureSet or FeatureCollection, read in
/// one pass (the common case); `None` for anything else, which [`split`] then reads feature by
/// feature so that a malformed one is reported by its index. Whenever this reads a document,
/// it reads it exactly as `split` and [`feature`] together would.
pub(super) fn whole(text: &str) -> Option<(Vec<RawFeature<'_>>, Option<SpatialReference>)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(text)
            .ok()
            .map(|features| (features, None));
    }
    if !trimmed.starts_with('{') {
        return None;
    }
    let set: Container<'_, RawFeature<'_>> = serde_json::from_str(text).ok()?;
    match set.features {
        Some(features) if !set.is_feature() => Some((features, set.spatial_reference)),
        _ => None,
    }
}

/// Splits one JSON document into raw features.
pub(super) fn split(text: &str) -> Result<Document<'_>, DocumentError> {
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|err| DocumentError::NotJson(err.to_string()))?;
    let trimmed = raw.get().trim_start();
    if trimmed.starts_with('[') {
        let features: Vec<&RawValue> = serde_json::from_str(raw.get())
            .map_err(|err| DocumentError::NotJson(err.to_string()))?;
        return Ok(Document {
            features,
            spatial_reference: None,
        });
    }
    if !trimmed.starts_with('{') {
        return Err(DocumentError::NotFeatures(json_kind(trimmed)));
    }
    let container: Container<'_, &RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| DocumentError::NotFeatures("an object of another shape"))?;
    let is_feature = container.is_feature();
    match container.features {
        Some(features) if !is_feature => Ok(Document {
            features,
            spatial_reference: container.spatial_reference,
        }),
        _ if is_feature => Ok(Document {
            features: vec![raw],
            spatial_reference: None,
        }),
        _ => Err(DocumentError::NotFeatures(
            "an object without features, attributes or geometry",
        )),
    }
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// An Esri `spatialReference`: `wkid`, `latestWkid`, or something unsupported (`wkt`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
pub(super) struct SpatialReference {
    #[serde(default)]
    pub wkid: Option<i64>,
    #[serde(rename = "latestWkid", default)]
    pub latest_wkid: Option<i64>,
}

/// One feature as written: Esri (`attributes`, `geometry` with `x`/`paths`/`rings`) or GeoJSON
/// (`properties`, `geometry` with `type` and `coordinates`).
#[derive(Deserialize)]
pub(super) struct RawFeature<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub attributes: Option<Attributes<'a>>,
    #[serde(borrow, default)]
    pub properties: Option<Attributes<'a>>,
    #[serde(default)]
    pub geometry: Option<RawGeometry>,
}

/// A geometry in either notation.
#[derive(Deserialize)]
pub(super) struct RawGeometry {
    #[serde(default)]
    pub x: Option<f64>,
    #[serde(default)]
    pub y: Option<f64>,
    #[serde(default)]
    pub paths: Option<Vec<Vec<Vec<f64>>>>,
    #[serde(default)]
    pub rings: Option<Vec<Vec<Vec<f64>>>>,
    #[serde(rename = "spatialReference", default)]
    pub spatial_reference: Option<SpatialReference>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub coordinates: Option<Coordinates>,
}

/// GeoJSON `coordinates`, nested to any depth.
#[derive(Debug, PartialEq)]
pub(super) enum Coordinates {
    Number(f64),
    List(Vec<Coordinates>),
}

impl<'de> Deserialize<'de> for Coordinates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Coordinates, D::Error> {
        struct CoordinatesVisitor;
        impl<'de> Visitor<'de> for CoordinatesVisitor {
            type Value = Coordinates;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a number or a list of coordinates")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Coordinates, E> {
                Ok(Coordinates::Number(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Coordinates, E> {
                Ok(Coordinates::Number(value as f64))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Coordinates, E> {
                Ok(Coordinates::Number(value as f64))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Coordinates, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(2).min(4096));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Coordinates::List(items))
            }
        }
        deserializer.deserialize_any(CoordinatesVisitor)
    }
}

/// Attribute values as written, in order.
pub(super) struct Attributes<'a>(pub Vec<(Cow<'a, str>, Scalar<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Attributes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Attributes<'a>, D::Error> {
        struct AttributesVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for AttributesVisitor<'a> {
            type Value = Attributes<'a>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object of attribute values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes<'a>, A::Error> {
                let mut values = Vec::with_capacity(map.size_hint().unwrap_or(8).min(256));
                while let Some(key) = map.next_key::<Cow<'a, str>>()? {
                    values.push((key, map.next_value::<Scalar<'a>>()?));
                }
                Ok(Attributes(values))
            }
        }
        deserializer.deserialize_map(AttributesVisitor(std::marker::PhantomData))
    }
}

/// One attribute value as written.
#[derive(Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(Cow<'a, str>),
    /// An object or an array: no field takes one.
    Composite,
}

impl Scalar<'_> {
    /// What the value is, for error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Integer(_) | Scalar::Float(_) => "a number",
            Scalar::Text(_) => "a string",
            Scalar::Composite => "an object or array",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar<'a>, D::Error> {
        struct ScalarVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an attribute value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Bool(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Integer(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar<'a>, E> {
                Ok(i64::try_from(value).map_or(Scalar::Float(value as f64), Scalar::Integer))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Float(value))
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Text(Cow::Owned(value)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Composite)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Composite)
            }
        }
        deserializer.deserialize_any(ScalarVisitor(std::marker::PhantomData))
    }
}

/// Parses one raw feature.
pub(super) fn feature<'a>(raw: &'a RawValue) -> Result<RawFeature<'a>, String> {
    serde_json::from_str(raw.get()).map_err(|err| {
        // serde_json appends " at line L column C" of the feature's own text: keep the cause.
        let message = err.to_string();
        match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_single_features_are_told_apart() {
        assert_eq!(split(r#"{"attributes":{}}"#).unwrap().features.len(), 1);
        assert_eq!(
            split(r#"[{"attributes":{}},{"attributes":{}}]"#)
                .unwrap()
                .features
                .len(),
            2
        );
        let set = split(r#"{"features":[{"attributes":{}}],"spatialReference":{"wkid":102100}}"#)
            .unwrap();
        assert_eq!(set.features.len(), 1);
        assert_eq!(set.spatial_reference.unwrap().wkid, Some(102100));
        let collection = split(r#"{"type":"FeatureCollection","features":[]}"#).unwrap();
        assert!(collection.features.is_empty());
        assert_eq!(
            split(r#"{"type":"Feature","properties":null,"geometry":null}"#)
                .unwrap()
                .features
                .len(),
            1
        );
        assert!(matches!(split("[1,"), Err(DocumentError::NotJson(_))));
        assert!(matches!(split("42"), Err(DocumentError::NotFeatures(_))));
        assert!(matches!(
            split(r#"{"a":1}"#),
            Err(DocumentError::NotFeatures(_))
        ));
    }
}
