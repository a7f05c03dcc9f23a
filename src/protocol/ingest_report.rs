//! How ingest answers: the HTTP response body of `POST /api/services/{name}/features` and the
//! messages of the broadcast WebSocket (docs/protocol.md §9).

use serde_json::{Value, json};

use crate::ingest::{Rejection, Report};

/// Most errors listed in one answer; past it `errorsTruncated` is true (the counts stay exact).
pub const MAX_LISTED_ERRORS: usize = 1000;

fn errors(errors: &[Rejection]) -> Vec<Value> {
    errors
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|rejection| {
            json!({
                "index": rejection.index,
                "code": rejection.reason.code(),
                "message": rejection.reason.to_string(),
            })
        })
        .collect()
}

/// The body of an HTTP ingest answer:
/// `{"received":3,"accepted":1,"stale":1,"rejected":1,"staleIndexes":[2],"errors":[{"index":1,"code":"unknownField","message":".."}]}`.
pub fn report_json(report: &Report) -> Value {
    let mut body = json!({
        "received": report.received,
        "accepted": report.accepted,
        "stale": report.stale.len(),
        "rejected": report.errors.len(),
        "staleIndexes": report.stale.iter().take(MAX_LISTED_ERRORS).collect::<Vec<_>>(),
        "errors": errors(&report.errors),
    });
    if report.errors.len() > MAX_LISTED_ERRORS || report.stale.len() > MAX_LISTED_ERRORS {
        body["errorsTruncated"] = Value::Bool(true);
    }
    body
}

/// What the broadcast socket answers to its `sequence`-th message (from 1): `rejected` with
/// every refused feature when there is one; `ack` with the counts when the client asked for
/// acknowledgements; nothing otherwise.
pub fn broadcast_reply(sequence: u64, report: &Report, acknowledge: bool) -> Option<String> {
    let kind = if !report.errors.is_empty() {
        "rejected"
    } else if acknowledge {
        "ack"
    } else {
        return None;
    };
    let mut reply = report_json(report);
    reply["type"] = Value::from(kind);
    reply["sequence"] = Value::from(sequence);
    Some(reply.to_string())
}

/// What the broadcast socket answers to a message it cannot read at all:
/// `{"type":"error","sequence":4,"error":"the body is not JSON: .."}`.
pub fn broadcast_error(sequence: u64, error: &str) -> String {
    json!({ "type": "error", "sequence": sequence, "error": error }).to_string()
}
