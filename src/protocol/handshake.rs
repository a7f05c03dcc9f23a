//! The custom-mode handshake (seed 000, docs/protocol.md §4.1): the client's first frame
//! `{"format":"json","spatialReference":{"wkid":N},"filter":..,"outFields":[..]}` and the
//! server's echo, which must repeat `format` and the wkid number exactly as sent.

use serde_json::{Map, Value};

use super::envelope_json::kind;
use super::filter_message::decode_parts;
use crate::filter::{FilterUpdate, OutFieldsInput, Patch};
use crate::geometry::Wkid;

/// A decoded handshake.
#[derive(Clone, Debug, PartialEq)]
pub struct Handshake {
    /// The output spatial reference, remembering the number sent.
    pub out_sr: Wkid,
    /// The initial filter (where, geometry, outFields from `filter` and `outFields`).
    pub update: FilterUpdate,
    /// `filter` as sent, echoed back.
    pub filter_echo: Value,
    /// `outFields` as sent, echoed back.
    pub out_fields_echo: Value,
}

/// Decodes the first client frame; the error reads as a close reason (4400).
pub fn decode(text: &str) -> Result<Handshake, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| "handshake is not JSON".to_owned())?;
    let Value::Object(object) = value else {
        return Err(format!(
            "handshake must be a JSON object, found {}",
            kind(&value)
        ));
    };
    match object.get("format") {
        Some(Value::String(format)) if format == "json" => {}
        None => {}
        Some(other) => {
            return Err(format!(
                "unsupported handshake format {other}; only \"json\" is supported"
            ));
        }
    }
    let out_sr = match object.get("spatialReference") {
        None | Some(Value::Null) => Wkid::Wgs84,
        Some(Value::Object(reference)) => {
            let number = reference
                .get("wkid")
                .filter(|value| !value.is_null())
                .or_else(|| reference.get("latestWkid"));
            let number = number
                .and_then(Value::as_i64)
                .ok_or("spatialReference needs an integer wkid")?;
            Wkid::from_number(number).map_err(|err| err.to_string())?
        }
        Some(other) => {
            return Err(format!(
                "spatialReference must be an object, found {}",
                kind(other)
            ));
        }
    };
    let filter_echo = object.get("filter").cloned().unwrap_or(Value::Null);
    let out_fields_echo = object.get("outFields").cloned().unwrap_or(Value::Null);
    let mut update = match &filter_echo {
        Value::Null => FilterUpdate::unchanged(),
        Value::Object(parts) => decode_parts(parts),
        other => {
            return Err(format!(
                "filter must be an object or null, found {}",
                kind(other)
            ));
        }
    };
    if let FilterUpdate::Parts { out_fields, .. } = &mut update {
        match &out_fields_echo {
            Value::Null => {}
            Value::Array(items) => {
                let names: Option<Vec<String>> = items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect();
                let names = names.ok_or("outFields must be an array of field names")?;
                *out_fields = Patch::Set(OutFieldsInput::Names(names));
            }
            Value::String(text) => *out_fields = Patch::Set(OutFieldsInput::List(text.clone())),
            other => {
                return Err(format!(
                    "outFields must be an array of field names, found {}",
                    kind(other)
                ));
            }
        }
    }
    Ok(Handshake {
        out_sr,
        update,
        filter_echo,
        out_fields_echo,
    })
}

/// The echo: `format`, the wkid as sent, the filter and outFields as sent.
pub fn encode_echo(handshake: &Handshake) -> String {
    let mut object = Map::new();
    object.insert("format".into(), Value::String("json".into()));
    object.insert(
        "spatialReference".into(),
        serde_json::json!({ "wkid": handshake.out_sr.number() }),
    );
    object.insert("filter".into(), handshake.filter_echo.clone());
    object.insert("outFields".into(), handshake.out_fields_echo.clone());
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_handshakes_decode_and_echo_the_wkid_as_sent() {
        for wkid in [4326, 3857, 102100, 102113, 900913] {
            let text = format!(
                r#"{{"filter":null,"format":"json","spatialReference":{{"wkid":{wkid}}}}}"#
            );
            let handshake = decode(&text).unwrap();
            assert_eq!(handshake.out_sr.number(), wkid);
            let echo: Value = serde_json::from_str(&encode_echo(&handshake)).unwrap();
            assert_eq!(
                echo,
                serde_json::json!({"format":"json","spatialReference":{"wkid":wkid},"filter":null,"outFields":null})
            );
        }
        let with_filter = decode(r#"{"filter":{"where":"speed > 10"},"format":"json","spatialReference":{"wkid":102100},"outFields":["speed"]}"#).unwrap();
        let FilterUpdate::Parts {
            where_clause,
            out_fields,
            ..
        } = with_filter.update
        else {
            panic!()
        };
        assert_eq!(where_clause, Patch::Set("speed > 10".into()));
        assert_eq!(
            out_fields,
            Patch::Set(OutFieldsInput::Names(vec!["speed".into()]))
        );
    }

    #[test]
    fn bad_handshakes_name_the_problem() {
        let cases = [
            ("nope", "handshake is not JSON"),
            ("[]", "handshake must be a JSON object, found an array"),
            (
                r#"{"format":"pbf"}"#,
                "unsupported handshake format \"pbf\"; only \"json\" is supported",
            ),
            (
                r#"{"format":"json","spatialReference":{"wkid":2193}}"#,
                "Unsupported spatial reference wkid 2193; supported wkids: 4326, 3857, 102100, 102113, 900913.",
            ),
            (
                r#"{"format":"json","spatialReference":{"wkt":"x"}}"#,
                "spatialReference needs an integer wkid",
            ),
            (
                r#"{"format":"json","filter":"x"}"#,
                "filter must be an object or null, found a string",
            ),
        ];
        for (text, reason) in cases {
            assert_eq!(decode(text).unwrap_err(), reason, "{text}");
        }
    }
}
