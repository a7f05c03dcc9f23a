//! Names on the backbone: a JetStream stream per service holding one subject per track (at
//! most one message each: exactly the latest state), a stream of leases, and the subjects of
//! the messages nodes send one another.

use std::fmt::Write as _;

use crate::latest::TrackKey;

/// Every name starts with this, so that one NATS account can host other things.
const PREFIX: &str = "featurestream";

/// The stream holding a service's latest state (service names are letters, digits, `_`, `-`).
pub fn state_stream(service: &str) -> String {
    format!("{PREFIX}_{service}")
}

/// Every track subject of a service (the state stream's subjects and its consumers' filter).
pub fn track_subjects(service: &str) -> String {
    format!("{PREFIX}.{service}.track.>")
}

/// The subject of one track: one subject token made of its id. Integer ids are written as
/// they are (`i42`), text ids made of subject-safe characters too (`sbus-7`); anything else is
/// written in hex (`x…`), so that no id can split or wildcard a subject.
pub fn track_subject(service: &str, track: &TrackKey) -> String {
    let mut subject = format!("{PREFIX}.{service}.track.");
    match track {
        TrackKey::Integer(id) => {
            let _ = write!(subject, "i{id}");
        }
        TrackKey::Text(id) if is_plain(id) => {
            let _ = write!(subject, "s{id}");
        }
        TrackKey::Text(id) => hex(&mut subject, 'x', id.as_bytes()),
        TrackKey::Other(id) => hex(&mut subject, 'o', id.as_bytes()),
    }
    subject
}

fn is_plain(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

fn hex(out: &mut String, tag: char, bytes: &[u8]) {
    out.push(tag);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
}

/// The stream of leases (one subject per leased thing, its last message the holder).
pub const LEASE_STREAM: &str = "featurestream_leases";

/// The lease subjects.
pub const LEASE_SUBJECTS: &str = "featurestream.lease.>";

/// The subject of the lease on a service's simulator.
pub fn simulator_lease(service: &str) -> String {
    format!("{PREFIX}.lease.simulator.{service}")
}

/// Where a node asks every node to act on a service's sessions (a server-initiated message,
/// an SSE filter update).
pub fn control_subject(service: &str) -> String {
    format!("{PREFIX}.{service}.control")
}

/// The queue group that shares an external ingest subject among a service's nodes (each
/// message is taken by one node).
pub fn ingest_queue(service: &str) -> String {
    format!("{PREFIX}_{service}_ingest")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_track_id_is_one_subject_token() {
        let cases = [
            (TrackKey::Integer(42), "featurestream.v.track.i42"),
            (TrackKey::Integer(-3), "featurestream.v.track.i-3"),
            (
                TrackKey::Text(Arc::from("bus-7_a")),
                "featurestream.v.track.sbus-7_a",
            ),
            (
                TrackKey::Text(Arc::from("a.b *>")),
                "featurestream.v.track.x612e62202a3e",
            ),
            (TrackKey::Text(Arc::from("")), "featurestream.v.track.x"),
            (
                TrackKey::Other("1.5".into()),
                "featurestream.v.track.o312e35",
            ),
        ];
        for (key, subject) in cases {
            assert_eq!(track_subject("v", &key), subject);
        }
    }
}
