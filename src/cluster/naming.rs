//! Names on the backbone: a JetStream stream per service holding its log (batches of
//! observations, in the one order every node applies them) and its checkpoints (the state as
//! of a log position, so that the log before it can be dropped), a stream of leases, and the
//! subjects of the messages nodes send one another.

/// Every name starts with this, so that one NATS account can host other things.
const PREFIX: &str = "featurestream";

/// The stream holding a service's log and checkpoints (service names are letters, digits,
/// `_`, `-`). Named apart from the one-subject-per-track streams of earlier versions, which
/// this version neither reads nor changes.
pub fn state_stream(service: &str) -> String {
    format!("{PREFIX}_{service}_log")
}

/// The subject of a service's log: one message per batch of observations.
pub fn log_subject(service: &str) -> String {
    format!("{PREFIX}.{service}.log")
}

/// The subject of a service's checkpoints: each one a run of messages holding the whole state
/// as of a log position.
pub fn checkpoint_subject(service: &str) -> String {
    format!("{PREFIX}.{service}.checkpoint")
}

/// The stream of leases (one subject per leased thing, its last message the holder).
pub const LEASE_STREAM: &str = "featurestream_leases";

/// The lease subjects.
pub const LEASE_SUBJECTS: &str = "featurestream.lease.>";

/// The subject of the lease on a service's simulator.
pub fn simulator_lease(service: &str) -> String {
    format!("{PREFIX}.lease.simulator.{service}")
}

/// The subject of the lease on writing a service's checkpoints (one writer at a time).
pub fn checkpoint_lease(service: &str) -> String {
    format!("{PREFIX}.lease.checkpoint.{service}")
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

/// The JetStream stream that keeps what is published on a service's ingest subject until a
/// node has stored it (at-least-once ingest).
pub fn ingest_stream(service: &str) -> String {
    format!("{PREFIX}_{service}_ingest")
}

/// The durable consumer that shares a service's ingest stream among its nodes.
pub fn ingest_consumer(service: &str) -> String {
    format!("{PREFIX}_{service}_ingest")
}
