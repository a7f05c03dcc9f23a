//! Decoding of an envelope in every documented form: the URL's `xmin,ymin,xmax,ymax`, an
//! envelope JSON object (with or without `spatialReference`, by `wkid` or `latestWkid`), the
//! same object inside a JSON *string* (what the ArcGIS SDK sends, docs/protocol.md §3.3), the REST
//! page's `("xmin": .., ...)` spelling, and `{}` / `""` meaning "no geometry filter".

use serde_json::{Map, Value};

use crate::filter::FilterError;
use crate::geometry::{Envelope, EnvelopeError, EnvelopeInput};

/// Decodes geometry given as text (URL parameter, or a JSON string in a filter message).
/// `Ok(None)` means "no geometry filter".
pub fn decode_text(text: &str) -> Result<Option<EnvelopeInput>, FilterError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.starts_with('{') || trimmed.starts_with('(') {
        // Seed 003 prints the URL form as `("xmin": -109.55, ...)`; read it as an object.
        let json = match trimmed
            .strip_prefix('(')
            .and_then(|rest| rest.strip_suffix(')'))
        {
            Some(inner) => format!("{{{inner}}}"),
            None => trimmed.to_owned(),
        };
        let value: Value = serde_json::from_str(&json)
            .map_err(|err| not_envelope(format!("the geometry is not valid JSON ({err}).")))?;
        return decode_value(&value);
    }
    let envelope = Envelope::parse_comma_list(trimmed)?;
    Ok(Some(EnvelopeInput {
        corners: [
            envelope.xmin(),
            envelope.ymin(),
            envelope.xmax(),
            envelope.ymax(),
        ],
        wkid: None,
    }))
}

/// Decodes geometry given as a JSON value: an object, a string holding one, or `{}`.
pub fn decode_value(value: &Value) -> Result<Option<EnvelopeInput>, FilterError> {
    match value {
        Value::String(text) => decode_text(text),
        Value::Object(object) if object.is_empty() => Ok(None),
        Value::Object(object) => decode_object(object).map(Some),
        other => Err(not_envelope(format!(
            "expected an envelope object, found {}.",
            kind(other)
        ))),
    }
}

fn decode_object(object: &Map<String, Value>) -> Result<EnvelopeInput, FilterError> {
    for shape in ["x", "points", "paths", "rings"] {
        if object.contains_key(shape) {
            return Err(not_envelope(format!(
                "only envelopes (xmin, ymin, xmax, ymax) are supported, found a geometry with \"{shape}\"."
            )));
        }
    }
    let mut corners = [0.0; 4];
    for (slot, name) in corners.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
        *slot = match object.get(name) {
            Some(Value::Number(number)) => number.as_f64().unwrap_or(f64::NAN),
            Some(Value::String(text)) if text.trim().eq_ignore_ascii_case("nan") => f64::NAN,
            Some(other) => {
                return Err(not_envelope(format!(
                    "{name} must be a number, found {}.",
                    kind(other)
                )));
            }
            None => return Err(not_envelope(format!("the envelope has no {name}."))),
        };
    }
    let wkid = match object.get("spatialReference") {
        None | Some(Value::Null) => None,
        Some(Value::Object(reference)) => {
            let number = reference
                .get("wkid")
                .filter(|value| !value.is_null())
                .or_else(|| reference.get("latestWkid"));
            match number.and_then(Value::as_i64) {
                Some(wkid) => Some(wkid),
                None => {
                    return Err(not_envelope(
                        "spatialReference needs an integer wkid or latestWkid.".to_owned(),
                    ));
                }
            }
        }
        Some(other) => {
            return Err(not_envelope(format!(
                "spatialReference must be an object, found {}.",
                kind(other)
            )));
        }
    };
    Ok(EnvelopeInput { corners, wkid })
}

/// The envelope as echoed in a filter reply.
pub fn encode(input: &EnvelopeInput) -> Value {
    let [xmin, ymin, xmax, ymax] = input.corners;
    let mut object = serde_json::json!({ "xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax });
    if let Some(wkid) = input.wkid {
        object["spatialReference"] = serde_json::json!({ "wkid": wkid });
    }
    object
}

fn not_envelope(detail: String) -> FilterError {
    FilterError::Geometry(EnvelopeError::NotAnEnvelope(detail))
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(corners: [f64; 4], wkid: Option<i64>) -> Option<EnvelopeInput> {
        Some(EnvelopeInput { corners, wkid })
    }

    #[test]
    fn every_documented_form_decodes() {
        let cases: [(&str, Option<EnvelopeInput>); 7] = [
            (
                "-109.55,25.76,-86.39,49.94",
                input([-109.55, 25.76, -86.39, 49.94], None),
            ),
            (
                "(\"xmin\": -109.55,\"ymin\": 25.76,\"xmax\": -86.39,\"ymax\": 49.94,\"spatialReference\": {\"wkid\": 4326})",
                input([-109.55, 25.76, -86.39, 49.94], Some(4326)),
            ),
            (
                "{\"xmin\":-104,\"ymin\":35.6,\"xmax\":-94.32,\"ymax\":41}",
                input([-104.0, 35.6, -94.32, 41.0], None),
            ),
            (
                "{\"spatialReference\":{\"latestWkid\":3857,\"wkid\":null},\"xmin\":1,\"ymin\":2,\"xmax\":3,\"ymax\":4}",
                input([1.0, 2.0, 3.0, 4.0], Some(3857)),
            ),
            ("{}", None),
            ("", None),
            ("  ", None),
        ];
        for (text, expected) in cases {
            assert_eq!(decode_text(text).unwrap(), expected, "{text}");
        }
        // The SDK's JSON string inside the filter message.
        let sdk = serde_json::json!(
            "{\"spatialReference\":{\"wkid\":4326},\"xmin\":-117.26,\"ymin\":33.98,\"xmax\":-117.17,\"ymax\":34.02}"
        );
        assert_eq!(
            decode_value(&sdk).unwrap(),
            input([-117.26, 33.98, -117.17, 34.02], Some(4326))
        );
    }

    #[test]
    fn shapes_that_are_not_envelopes_are_named() {
        let cases = [
            (
                "{\"x\":1,\"y\":2}",
                "Invalid geometry: only envelopes (xmin, ymin, xmax, ymax) are supported, found a geometry with \"x\".",
            ),
            (
                "{\"rings\":[]}",
                "Invalid geometry: only envelopes (xmin, ymin, xmax, ymax) are supported, found a geometry with \"rings\".",
            ),
            (
                "{\"xmin\":1,\"ymin\":2,\"xmax\":3}",
                "Invalid geometry: the envelope has no ymax.",
            ),
            (
                "{\"xmin\":\"a\",\"ymin\":2,\"xmax\":3,\"ymax\":4}",
                "Invalid geometry: xmin must be a number, found a string.",
            ),
            (
                "{\"xmin\":1,\"ymin\":2,\"xmax\":3,\"ymax\":4,\"spatialReference\":{\"wkt\":\"x\"}}",
                "Invalid geometry: spatialReference needs an integer wkid or latestWkid.",
            ),
            (
                "{nope",
                "Invalid geometry: the geometry is not valid JSON (key must be a string at line 1 column 2).",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                decode_text(text).unwrap_err().to_string(),
                message,
                "{text}"
            );
        }
        assert_eq!(
            decode_value(&serde_json::json!(5)).unwrap_err().to_string(),
            "Invalid geometry: expected an envelope object, found a number."
        );
    }
}
