//! The inbound filter message `{"filter": {...}}` (ArcGIS subscribe, seed 003) and the reply
//! `{"filter": <state>, "error": null | [..]}`, plus the plain-text `ping` of seed 001.
//! The reply never carries `"filter": null`: the ArcGIS SDK waits for a truthy `filter`
//! (docs/protocol.md §3.3), so an empty state is `{}`.

use serde_json::{Map, Value};

use super::envelope_json::{self, kind};
use crate::filter::{FilterError, FilterState, FilterUpdate, OutFieldsInput, Patch};
use crate::geometry::SpatialRel;

/// What a client's text frame asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// A filter update, to be answered with a reply.
    Filter(FilterUpdate),
    /// The text `ping` (seed 001): answered with the text `pong`.
    Ping,
    /// Anything else: answered with an error reply naming the problem.
    Unrecognized(FilterError),
}

/// Decodes one inbound text frame.
///
/// ```
/// use featurestream::filter::{FilterUpdate, Patch};
/// use featurestream::protocol::filter_message::{decode, ClientMessage};
/// assert_eq!(decode("ping"), ClientMessage::Ping);
/// assert_eq!(decode(r#"{"filter": null}"#), ClientMessage::Filter(FilterUpdate::ClearAll));
/// ```
pub fn decode(text: &str) -> ClientMessage {
    if text.trim().eq_ignore_ascii_case("ping") {
        return ClientMessage::Ping;
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => return unrecognized("the message is not JSON; expected {\"filter\": {...}}."),
    };
    let Value::Object(mut object) = value else {
        return unrecognized(&format!(
            "expected a JSON object {{\"filter\": {{...}}}}, found {}.",
            kind(&value)
        ));
    };
    match object.remove("filter") {
        None => unrecognized("unknown message; expected {\"filter\": {...}}."),
        Some(Value::Null) => ClientMessage::Filter(FilterUpdate::ClearAll),
        Some(Value::Object(parts)) => ClientMessage::Filter(decode_parts(&parts)),
        Some(other) => unrecognized(&format!(
            "\"filter\" must be an object or null, found {}.",
            kind(&other)
        )),
    }
}

fn unrecognized(detail: &str) -> ClientMessage {
    ClientMessage::Unrecognized(FilterError::Malformed(detail.to_owned()))
}

/// Decodes the parts of a filter object (also the custom-mode handshake's `filter`).
pub fn decode_parts(parts: &Map<String, Value>) -> FilterUpdate {
    let where_clause = match parts.get("where") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(Value::String(text)) => Patch::Set(text.clone()),
        Some(other) => malformed(format!(
            "\"where\" must be a string or null, found {}.",
            kind(other)
        )),
    };
    let geometry = match parts.get("geometry") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(value) => match envelope_json::decode_value(value) {
            Ok(Some(input)) => Patch::Set(input),
            Ok(None) => Patch::Clear,
            Err(err) => Patch::Invalid(err),
        },
    };
    let spatial_rel = match parts.get("spatialRel") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(Value::String(text)) => match SpatialRel::parse(text) {
            Some(relation) => Patch::Set(relation),
            None => Patch::Invalid(FilterError::InvalidSpatialRel(
                text.chars().take(64).collect(),
            )),
        },
        Some(other) => malformed(format!(
            "\"spatialRel\" must be a string, found {}.",
            kind(other)
        )),
    };
    let out_fields = match parts.get("outFields") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(Value::String(text)) => Patch::Set(OutFieldsInput::List(text.clone())),
        Some(Value::Array(items)) => match items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect()
        {
            Some(names) => Patch::Set(OutFieldsInput::Names(names)),
            None => malformed(
                "\"outFields\" must be a comma-separated string or an array of strings.".to_owned(),
            ),
        },
        Some(other) => malformed(format!(
            "\"outFields\" must be a string, found {}.",
            kind(other)
        )),
    };
    FilterUpdate::Parts {
        where_clause,
        geometry,
        spatial_rel,
        out_fields,
    }
}

fn malformed<T>(detail: String) -> Patch<T> {
    Patch::Invalid(FilterError::Malformed(detail))
}

/// The filter in force as a JSON object: only the parts set, `{}` when none.
pub fn state_json(state: &FilterState) -> Value {
    let mut object = Map::new();
    if let Some(clause) = &state.filter.where_clause {
        object.insert("where".into(), Value::String(clause.text().to_owned()));
    }
    if let Some(geometry) = &state.filter.geometry {
        object.insert("geometry".into(), envelope_json::encode(&geometry.input));
        if geometry.relation != SpatialRel::Intersects {
            object.insert(
                "spatialRel".into(),
                Value::String(geometry.relation.esri_name().to_owned()),
            );
        }
    }
    if let Some(out_fields) = &state.out_fields {
        object.insert(
            "outFields".into(),
            Value::String(out_fields.text().to_owned()),
        );
    }
    Value::Object(object)
}

/// The reply to a filter message: the state now in force and `null` or every error.
///
/// ```
/// use featurestream::filter::FilterState;
/// use featurestream::protocol::filter_message::encode_reply;
/// assert_eq!(encode_reply(&FilterState::default(), &[]), r#"{"filter":{},"error":null}"#);
/// ```
pub fn encode_reply(state: &FilterState, errors: &[FilterError]) -> String {
    let error = if errors.is_empty() {
        Value::Null
    } else {
        Value::Array(
            errors
                .iter()
                .map(|err| Value::String(err.to_string()))
                .collect(),
        )
    };
    let mut reply = Map::new();
    reply.insert("filter".into(), state_json(state));
    reply.insert("error".into(), error);
    Value::Object(reply).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::EnvelopeInput;

    fn parts(text: &str) -> FilterUpdate {
        match decode(text) {
            ClientMessage::Filter(update) => update,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn sdk_messages_decode() {
        assert_eq!(
            parts(r#"{"filter":{"where":"speed > 10"}}"#),
            FilterUpdate::Parts {
                where_clause: Patch::Set("speed > 10".into()),
                geometry: Patch::Keep,
                spatial_rel: Patch::Keep,
                out_fields: Patch::Keep,
            }
        );
        let geometry = parts(
            r#"{"filter":{"geometry":"{\"spatialReference\":{\"wkid\":4326},\"xmin\":-117.26,\"ymin\":33.98,\"xmax\":-117.17,\"ymax\":34.02}"}}"#,
        );
        let FilterUpdate::Parts {
            geometry: Patch::Set(input),
            ..
        } = geometry
        else {
            panic!("{geometry:?}")
        };
        assert_eq!(
            input,
            EnvelopeInput {
                corners: [-117.26, 33.98, -117.17, 34.02],
                wkid: Some(4326)
            }
        );
        assert_eq!(parts(r#"{"filter":{}}"#), FilterUpdate::unchanged());
        let FilterUpdate::Parts { geometry, .. } = parts(r#"{"filter":{"geometry":{}}}"#) else {
            panic!()
        };
        assert_eq!(geometry, Patch::Clear);
        let FilterUpdate::Parts {
            out_fields,
            where_clause,
            ..
        } = parts(r#"{"filter":{"outFields":"a,b","where":null}}"#)
        else {
            panic!()
        };
        assert_eq!(out_fields, Patch::Set(OutFieldsInput::List("a,b".into())));
        assert_eq!(where_clause, Patch::Clear);
    }

    #[test]
    fn unknown_messages_are_named() {
        let cases = [
            (
                "hello",
                "Invalid filter: the message is not JSON; expected {\"filter\": {...}}.",
            ),
            (
                "[1]",
                "Invalid filter: expected a JSON object {\"filter\": {...}}, found an array.",
            ),
            (
                "{\"type\":\"x\"}",
                "Invalid filter: unknown message; expected {\"filter\": {...}}.",
            ),
            (
                "{\"filter\":5}",
                "Invalid filter: \"filter\" must be an object or null, found a number.",
            ),
        ];
        for (text, message) in cases {
            let ClientMessage::Unrecognized(err) = decode(text) else {
                panic!("{text}")
            };
            assert_eq!(err.to_string(), message);
        }
        let FilterUpdate::Parts {
            where_clause,
            out_fields,
            spatial_rel,
            ..
        } = parts(r#"{"filter":{"where":5,"outFields":[1],"spatialRel":"esriSpatialRelTouches"}}"#)
        else {
            panic!()
        };
        assert_eq!(
            where_clause,
            Patch::Invalid(FilterError::Malformed(
                "\"where\" must be a string or null, found a number.".into()
            ))
        );
        assert!(matches!(out_fields, Patch::Invalid(_)));
        assert_eq!(
            spatial_rel,
            Patch::Invalid(FilterError::InvalidSpatialRel(
                "esriSpatialRelTouches".into()
            ))
        );
    }
}
