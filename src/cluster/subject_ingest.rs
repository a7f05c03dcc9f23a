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
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
use futures_util::StreamExt;

use super::naming;
use super::start::Shared;
use crate::broker::ServiceRuntime;
use crate::ingest::{IngestError, NdjsonPosition, Reason, Report};
use crate::service::{Delivery, IngestSubject};

/// At most this many log lines about refused messages per minute and service.
const LOG_PER_MINUTE: u32 = 20;

/// Messages of a JetStream ingest stream a node works on at once.
const DURABLE_IN_FLIGHT: usize = 64;

/// Most bytes a JetStream ingest stream keeps waiting for nodes.
const INGEST_STREAM_BYTES: i64 = 1 << 30;

/// How long a node may hold a message of a JetStream ingest stream before it goes to another.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Logs why a message was refused, at most [`LOG_PER_MINUTE`] lines a minute.
struct Complaints {
    service: String,
    window: std::sync::Mutex<(Instant, u32)>,
}

impl Complaints {
    fn note(
        &self,
        subject: &str,
        report: &Report,
        refused: Option<&IngestError>,
    ) -> Option<String> {
        let problem = refused.map(|err| err.to_string()).or_else(|| {
            report.errors.first().map(|first| {
                format!(
                    "{} of {} features rejected, the first (index {}): {}",
                    report.errors.len(),
                    report.received,
                    first.index,
                    first.reason
                )
            })
        });
        if let Some(problem) = &problem {
            let mut window = self
                .window
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if window.0.elapsed() > Duration::from_secs(60) {
                *window = (Instant::now(), 0);
            }
            window.1 += 1;
            if window.1 <= LOG_PER_MINUTE {
                log::warn!("service {}: message on {subject}: {problem}", self.service);
            }
        }
        problem
    }
}

/// Takes `ingest`'s subject for `runtime`'s service while the node runs.
pub(super) async fn serve(
    shared: Arc<Shared>,
    ingest: IngestSubject,
    runtime: Arc<ServiceRuntime>,
    max_features: usize,
) {
    let complaints = Arc::new(Complaints {
        service: runtime.service.name.clone(),
        window: std::sync::Mutex::new((Instant::now(), 0)),
    });
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
            let (report, refused) = take(&runtime, &message.payload, max_features).await;
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
                let (report, refused) = take(&runtime, &message.payload, max_features).await;
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

/// Parses, publishes and settles one message: its report, and why it was refused whole.
async fn take(
    runtime: &ServiceRuntime,
    payload: &[u8],
    max_features: usize,
) -> (Report, Option<IngestError>) {
    let mut report = Report::default();
    let Ok(text) = std::str::from_utf8(payload) else {
        runtime
            .ingest
            .refused_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return (
            report,
            Some(crate::ingest::DocumentError::NotJson("the message is not UTF-8".into()).into()),
        );
    };
    let received_ms = crate::broker::now_ms();
    let schema = &runtime.service.schema;
    let parsed = match crate::ingest::parse_document(text, schema, received_ms, 0, max_features) {
        Err(IngestError::Document(_)) if text.trim().contains('\n') => {
            let mut position = NdjsonPosition::default();
            match crate::ingest::parse_ndjson(
                text,
                schema,
                received_ms,
                max_features,
                &mut position,
            ) {
                (ingested, None) => Ok(ingested),
                (_, Some((_, err))) => Err(err),
            }
        }
        other => other,
    };
    let mut ingested = match parsed {
        Ok(ingested) => ingested,
        Err(err) => {
            runtime
                .ingest
                .refused_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return (report, Some(err));
        }
    };
    let receipt = runtime.publish(&mut ingested, received_ms);
    if runtime
        .settle(&mut report, ingested, receipt, usize::MAX)
        .await
        .is_err()
    {
        return (report, None);
    }
    (report, None)
}
