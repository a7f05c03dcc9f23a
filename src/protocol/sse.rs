//! Server-sent events framing (seed 002): `event: <name>` and `data: <json>` lines.

use bytes::Bytes;

use super::close::CloseCause;

/// A `features` event holding a JSON array of Esri JSON features.
pub fn features_event(json_array: &[u8]) -> Bytes {
    event("features", json_array)
}

/// An event with a name and a one-line JSON payload.
pub fn event(name: &str, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A comment line, used as a heartbeat.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(b": heartbeat\n\n")
}

/// The last event of a stream the server ends: `close` with the code and reason a WebSocket
/// session would get in its close frame (`{"code":1001,"reason":"server shutting down"}`).
pub fn close_event(cause: &CloseCause) -> Bytes {
    let data = serde_json::json!({ "code": cause.code(), "reason": cause.reason() });
    event("close", data.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_close_event_carries_code_and_reason() {
        assert_eq!(
            &close_event(&CloseCause::ShuttingDown)[..],
            b"event: close\ndata: {\"code\":1001,\"reason\":\"server shutting down\"}\n\n"
        );
    }
}
