//! Ingest from a NATS subject other systems publish to: each message is one document in any
//! form the HTTP ingest takes (Esri JSON, GeoJSON, or NDJSON lines), validated the same way.
//! Taken one of two ways (`Delivery`):
//! - at most once: the service's nodes share the subject in a core-NATS queue group, so each
//!   message is taken once; a message sent as a request gets the same report the HTTP ingest
//!   answers; a message published while no node listens, or dropped by a node that fell
//!   behind, is lost;
//! - at least once: a JetStream stream (`featurestream_<service>_ingest`, work-queue
//!   retention) keeps every message published on the subject, and the nodes share one durable
//!   consumer of it; a message is acknowledged only once its observations are stored in the
//!   service's log (or refused for good), and redelivered otherwise, also to another node when
//!   the one that took it dies. A redelivered observation already stored is stale, not twice.
//!
//! Rejected features and unreadable messages are counted (`/metrics`) and logged with the
//! reason.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
use futures_util::StreamExt;

use super::naming;
use super::start::Shared;
use crate::broker::ServiceRuntime;
use crate::ingest::{Complaints, Reason};
use crate::service::{Delivery, IngestSubject};

/// Messages of a JetStream ingest stream a node works on at once.
const DURABLE_IN_FLIGHT: usize = 64;

/// Most bytes a JetStream ingest stream keeps waiting for nodes.
const INGEST_STREAM_BYTES: i64 = 1 << 30;

/// How long a node may hold a message of a JetStream ingest stream before it goes to another.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Takes `ingest`'s subject for `runtime`'s service while the node runs.
pub(super) async fn serve(
    shared: Arc<Shared>,
    ingest: IngestSubject,
    runtime: Arc<ServiceRuntime>,
    max_features: usize,
) {
    let complaints = Arc::new(Complaints::new(&runtime.service.name));
    match ingest.delivery {
        Delivery::AtMostOnce => {
            serve_at_most_once(shared, ingest.subject, runtime, max_features, complaints).await
        }
        Delivery::AtLeastOnce => {
            serve_at_least_once(shared, ingest.subject, runtime, max_features, complaints).await
        }
    }
}

async fn serve_at_most_once(
    shared: Arc<Shared>,
    subject: String,
    runtime: Arc<ServiceRuntime>,
    max_features: usize,
    complaints: Arc<Complaints>,
) {
    let name = runtime.service.name.clone();
    loop {
        let mut messages = match shared
            .client
            .queue_subscribe(subject.clone(), naming::ingest_queue(&name))
            .await
        {
            Ok(messages) => messages,
            Err(err) => {
                log::warn!("service {name}: subscribing to {subject}: {err}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        log::info!("service {name}: taking observations from NATS subject {subject}");
        while let Some(message) = messages.next().await {
            let (report, refused) = runtime
                .take_message(|schema, received_ms| {
                    crate::ingest::parse_message(
                        &message.payload,
                        schema,
                        received_ms,
                        max_features,
                    )
                })
                .await;
            let problem = complaints.note(&message.subject, &report, refused.as_ref());
            if let Some(reply) = message.reply {
                let body = match &problem {
                    Some(problem) if report.received == 0 => {
                        serde_json::json!({ "error": problem }).to_string()
                    }
                    _ => crate::protocol::ingest_report::report_json(&report).to_string(),
                };
                let _ = shared.client.publish(reply, body.into()).await;
            }
        }
    }
}

/// The durable consumer of the service's ingest stream (made if missing).
async fn ingest_consumer(
    shared: &Shared,
    subject: &str,
    service: &str,
) -> Result<pull::Stream, async_nats::Error> {
    let stream = shared
        .jetstream
        .get_or_create_stream(Config {
            name: naming::ingest_stream(service),
            subjects: vec![subject.to_owned()],
            retention: RetentionPolicy::WorkQueue,
            // A flood of publishers outrunning every node is refused by JetStream once this
            // much waits (publishers get an error), instead of filling the server's disk.
            max_bytes: INGEST_STREAM_BYTES,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            storage: StorageType::File,
            num_replicas: shared.replicas,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .get_or_create_consumer(
            &naming::ingest_consumer(service),
            pull::Config {
                durable_name: Some(naming::ingest_consumer(service)),
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer.messages().await?)
}

async fn serve_at_least_once(
    shared: Arc<Shared>,
    subject: String,
    runtime: Arc<ServiceRuntime>,
    max_features: usize,
    complaints: Arc<Complaints>,
) {
    let name = runtime.service.name.clone();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(DURABLE_IN_FLIGHT));
    loop {
        if !shared.health.is_connected() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let mut messages = match ingest_consumer(&shared, &subject, &name).await {
            Ok(messages) => messages,
            Err(err) => {
                log::warn!("service {name}: the ingest stream for {subject}: {err}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        log::info!(
            "service {name}: taking observations from JetStream stream {} (subject {subject}, at least once)",
            naming::ingest_stream(&name)
        );
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    log::warn!("service {name}: reading the ingest stream: {err}");
                    break;
                }
            };
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (runtime, complaints) = (runtime.clone(), complaints.clone());
            actix::spawn(async move {
                let (report, refused) = runtime
                    .take_message(|schema, received_ms| {
                        crate::ingest::parse_message(
                            &message.payload,
                            schema,
                            received_ms,
                            max_features,
                        )
                    })
                    .await;
                complaints.note(&message.subject, &report, refused.as_ref());
                let unstored = report
                    .errors
                    .iter()
                    .any(|rejection| rejection.reason == Reason::Unstored);
                let acked = if unstored {
                    // The log did not take it (NATS away, a leader election): again later.
                    message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await
                } else if refused.is_some() {
                    // Never readable: taking it again would not help.
                    message.ack_with(AckKind::Term).await
                } else {
                    message.double_ack().await
                };
                if let Err(err) = acked {
                    log::warn!(
                        "service {}: acknowledging an ingest message: {err}",
                        runtime.service.name
                    );
                }
                drop(permit);
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
