//! A lease in JetStream: one subject per leased thing in the lease stream, its last message
//! naming the holder. The holder renews it by storing a new message conditioned on the last
//! one being its own (compare-and-set on the subject's sequence); another node takes it only
//! after seeing the same last message for a whole `LEASE_TTL` on its own clock, and the holder
//! stops using it once half of that passed without a renewal, so two holders never overlap
//! and no clock is compared with another machine's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;

use super::LEASE_TTL;
use super::naming;
use super::start::Shared;
use crate::source::Lease;

/// How often the holder renews and the others look.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What a lease is for: a service's simulator, or writing its checkpoints.
#[derive(Clone, Copy)]
pub(super) enum Role {
    Simulator,
    Checkpoints,
}

impl Role {
    fn subject(self, service: &str) -> String {
        match self {
            Role::Simulator => naming::simulator_lease(service),
            Role::Checkpoints => naming::checkpoint_lease(service),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Role::Simulator => "the simulator",
            Role::Checkpoints => "the checkpoints",
        }
    }
}

/// Holds, renews and takes over `service`'s lease for `role`, forever.
pub(super) async fn hold(lease: Arc<Lease>, shared: Arc<Shared>, service: String, role: Role) {
    let subject = role.subject(&service);
    let what = role.what();
    let payload = bytes::Bytes::from(format!("{{\"node\":{:?}}}", shared.node));
    // Our own last message, while we hold it.
    let mut own: Option<u64> = None;
    // The last message seen while someone else held it, and since when (our clock).
    let mut seen: Option<(u64, Instant)> = None;
    let mut stream_ready = false;
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if !shared.health.is_connected() {
            (own, seen, stream_ready) = (None, None, false);
            continue;
        }
        if !stream_ready {
            stream_ready = ensure_stream(&shared).await.is_ok();
            continue;
        }
        let expected = match own {
            Some(sequence) if lease.is_held() => sequence,
            _ => {
                own = None;
                match last_holder(&shared, &subject).await {
                    Ok(Some(sequence)) => match seen {
                        Some((last, since)) if last == sequence => {
                            if since.elapsed() < LEASE_TTL {
                                continue;
                            }
                            sequence
                        }
                        _ => {
                            seen = Some((sequence, Instant::now()));
                            continue;
                        }
                    },
                    Ok(None) => 0,
                    Err(()) => continue,
                }
            }
        };
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .expected_last_subject_sequence(expected);
        let acked = match shared
            .jetstream
            .send_publish(subject.clone(), publish)
            .await
        {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match acked {
            Ok(ack) => {
                if own.is_none() {
                    log::info!("service {service}: this node ({}) runs {what}", shared.node);
                }
                own = Some(ack.sequence);
                lease.renewed_now();
                seen = None;
            }
            Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                if own.is_some() {
                    log::warn!("service {service}: another node took the lease on {what}");
                }
                own = None;
                lease.release();
            }
            // Unknown outcome: keep the lease until it runs out, try again.
            Err(err) => log::warn!("service {service}: renewing the lease on {what}: {err}"),
        }
    }
}

/// The sequence of the lease's last message (`None`: never taken).
async fn last_holder(shared: &Shared, subject: &str) -> Result<Option<u64>, ()> {
    let stream = shared
        .jetstream
        .get_stream_no_info(naming::LEASE_STREAM)
        .await
        .map_err(|_| ())?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message.sequence)),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => {
            log::warn!("reading the lease {subject}: {err}");
            Err(())
        }
    }
}

async fn ensure_stream(shared: &Shared) -> Result<(), ()> {
    shared
        .jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: naming::LEASE_STREAM.to_owned(),
            subjects: vec![naming::LEASE_SUBJECTS.to_owned()],
            max_messages_per_subject: 1,
            num_replicas: shared.replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|err| log::warn!("the lease stream: {err}"))
}
