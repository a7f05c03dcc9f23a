//! Ingest from a NATS subject other systems publish to: each message is one document in any
//! form the HTTP ingest takes (Esri JSON, GeoJSON, or NDJSON lines), validated the same way.
//! The service's nodes share the subject in a queue group, so each message is taken once.
//! A message sent as a request gets the same report the HTTP ingest answers; rejected
//! features and unreadable messages are counted (`/metrics`) and logged with the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::naming;
use super::start::Shared;
use crate::broker::ServiceRuntime;
use crate::ingest::{IngestError, NdjsonPosition, Report};

/// At most this many log lines about refused messages per minute and service.
const LOG_PER_MINUTE: u32 = 20;

/// Takes `subject` for `runtime`'s service while the node runs.
pub(super) async fn serve(
    shared: Arc<Shared>,
    subject: String,
    runtime: Arc<ServiceRuntime>,
    max_features: usize,
) {
    let name = runtime.service.name.clone();
    let mut log_window = (Instant::now(), 0u32);
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
                if log_window.0.elapsed() > Duration::from_secs(60) {
                    log_window = (Instant::now(), 0);
                }
                log_window.1 += 1;
                if log_window.1 <= LOG_PER_MINUTE {
                    log::warn!("service {name}: message on {}: {problem}", message.subject);
                }
            }
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
