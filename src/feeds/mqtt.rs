//! A service's MQTT topics (MQTT 3.1.1, `rumqttc`): each message one document in any form the
//! HTTP ingest takes, or the flat form devices send (`{"id":..,"lat":..,"lon":..}`), taken
//! with the same validation, receipts and latest state as every other source.
//!
//! - QoS 1: a persistent session under one client id (the broker keeps messages while no node
//!   is connected) with manual acknowledgements: a message is acknowledged (PUBACK, in the
//!   order received, as MQTT asks) only once its observations are recorded, and with a state
//!   directory durable; observations the store could not take (`unstored`) are taken again a
//!   second later, and the message is not acknowledged until they are. A crash loses nothing
//!   the broker thinks was delivered: it delivers again to the next session.
//! - QoS 0: a clean session; messages are taken as they come (a bounded number at once).
//! - A message that cannot be read is counted by reason and logged (rate-limited) and, with
//!   QoS 1, acknowledged: sending it again would not help.
//! - The connection is retried with backoff (1 s doubling to 30 s); `/readyz`, `/api/stats`
//!   and `/metrics` show it. In a cluster only the node holding the service's source lease is
//!   connected.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS, Transport};

use crate::broker::ServiceRuntime;
use crate::ingest::{Complaints, IngestError, Reason, Report};
use crate::service::MqttFeed;
use crate::source::{FeedHealth, Lease};

/// QoS 0 messages taken at once.
const IN_FLIGHT: usize = 256;
/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest MQTT packet taken (mosquitto's default limit is 256 MiB; ingest's body limit is
/// what matters, and a message holds one document).
const MAX_PACKET: usize = 16 << 20;

/// Runs the feed while the node runs: connected while `lease` is held.
pub(super) async fn run(
    feed: MqttFeed,
    runtime: Arc<ServiceRuntime>,
    lease: Arc<Lease>,
    health: Arc<FeedHealth>,
    max_features: usize,
) {
    let name = runtime.service.name.clone();
    let complaints = Arc::new(Complaints::new(&name));
    loop {
        while !lease.is_held() {
            health.set_running_here(false);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        health.set_running_here(true);
        let options = match options(&feed) {
            Ok(options) => options,
            Err(err) => {
                log::error!("service {name}: MQTT {}: {err}", feed.origin());
                health.set_connected(false, Some(err));
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let (client, mut events) = AsyncClient::new(options, 64);
        let qos = if feed.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let acks = Acks::new(client.clone());
        let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut backoff = Duration::from_secs(1);
        while lease.is_held() {
            // Bounded: with the lease gone, the loop ends within a keep-alive.
            let event = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
            match event {
                Err(_) => continue,
                Ok(Ok(Event::Incoming(Packet::ConnAck(connack)))) => {
                    backoff = Duration::from_secs(1);
                    health.set_connected(true, None);
                    log::info!(
                        "service {name}: connected to MQTT {} (session {})",
                        feed.origin(),
                        if connack.session_present {
                            "resumed"
                        } else {
                            "new"
                        }
                    );
                    if !connack.session_present {
                        for topic in &feed.topics {
                            if let Err(err) = client.try_subscribe(topic.clone(), qos) {
                                log::warn!("service {name}: subscribing to {topic}: {err}");
                            }
                        }
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    health.count("message", 1);
                    let take = take(
                        runtime.clone(),
                        publish.payload.clone(),
                        feed.flat.clone(),
                        max_features,
                        health.clone(),
                        complaints.clone(),
                        publish.topic.clone(),
                    );
                    if publish.qos == QoS::AtMostOnce {
                        let permit = in_flight
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("the semaphore is never closed");
                        actix::spawn(async move {
                            take.await;
                            drop(permit);
                        });
                    } else {
                        acks.push(publish, actix::spawn(take));
                    }
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(suback)))) => {
                    if suback
                        .return_codes
                        .iter()
                        .any(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure))
                    {
                        let err = "the broker refused a subscription".to_owned();
                        log::warn!("service {name}: MQTT {}: {err}", feed.origin());
                        health.set_connected(true, Some(err));
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    let refused = matches!(err, ConnectionError::ConnectionRefused(_));
                    health.set_connected(false, Some(err.to_string()));
                    health.count("reconnect", 1);
                    log::warn!(
                        "service {name}: MQTT {}: {err}; again in {backoff:?}",
                        feed.origin()
                    );
                    // Unacknowledged messages will come again in the resumed session.
                    acks.clear();
                    tokio::time::sleep(if refused { MAX_BACKOFF } else { backoff }).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        log::info!(
            "service {name}: another node runs MQTT {} now",
            feed.origin()
        );
        let _ = client.try_disconnect();
        health.set_connected(false, None);
    }
}

/// The client's options: a persistent session for QoS 1, manual acknowledgements.
fn options(feed: &MqttFeed) -> Result<MqttOptions, String> {
    let mut options = MqttOptions::new(feed.client_id.clone(), feed.host.clone(), feed.port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(feed.qos == 0)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET, 64 * 1024);
    if let Some(username) = &feed.username {
        options.set_credentials(username.clone(), feed.password.clone().unwrap_or_default());
    }
    if feed.tls {
        options.set_transport(Transport::tls_with_config(tls_config(feed)?.into()));
    }
    Ok(options)
}

/// TLS checked against the system's root certificates, or the feed's own CA file.
fn tls_config(feed: &MqttFeed) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &feed.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|err| format!("caFile {path}: {err}"))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|err| format!("caFile {path}: {err}"))?;
                roots
                    .add(cert)
                    .map_err(|err| format!("caFile {path}: {err}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no root certificate to check the broker's against".into());
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}

/// Takes one message: parsed, published, recorded; taken again a second later while what it
/// holds is unstored (the state store or NATS away), so that it is acknowledged only once
/// recorded. Counts and logs what could not be read.
async fn take(
    runtime: Arc<ServiceRuntime>,
    payload: bytes::Bytes,
    flat: crate::ingest::FlatFields,
    max_features: usize,
    health: Arc<FeedHealth>,
    complaints: Arc<Complaints>,
    topic: String,
) {
    loop {
        let (report, refused): (Report, Option<IngestError>) = runtime
            .take_message(|schema, received_ms| {
                crate::ingest::parse_message_or_flat(
                    &payload,
                    schema,
                    received_ms,
                    max_features,
                    &flat,
                )
            })
            .await;
        if let Some(err) = &refused {
            health.count(err.code(), 1);
        }
        complaints.note(&topic, &report, refused.as_ref());
        let unstored = report
            .errors
            .iter()
            .any(|rejection| rejection.reason == Reason::Unstored);
        if !unstored {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// QoS 1 messages being taken, acknowledged in the order they came once each is taken (MQTT
/// asks for PUBACKs in order). After a lost connection the pending ones are not acknowledged
/// (their packet ids belong to the old connection): the broker sends them again.
struct Acks {
    sender: tokio::sync::mpsc::UnboundedSender<Pending>,
    connection: Arc<std::sync::atomic::AtomicU64>,
}

struct Pending {
    publish: Publish,
    taking: tokio::task::JoinHandle<()>,
    connection: u64,
}

impl Acks {
    fn new(client: AsyncClient) -> Acks {
        use std::sync::atomic::Ordering::Relaxed;
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        let connection = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let current = connection.clone();
        actix::spawn(async move {
            while let Some(pending) = receiver.recv().await {
                let _ = pending.taking.await;
                if pending.connection == current.load(Relaxed)
                    && let Err(err) = client.ack(&pending.publish).await
                {
                    log::debug!("acknowledging an MQTT message: {err}");
                }
            }
        });
        Acks { sender, connection }
    }

    /// Acknowledges `publish` once `taking` is done and every message before it is.
    fn push(&self, publish: Publish, taking: tokio::task::JoinHandle<()>) {
        let connection = self.connection.load(std::sync::atomic::Ordering::Relaxed);
        let _ = self.sender.send(Pending {
            publish,
            taking,
            connection,
        });
    }

    /// The connection was lost: what is pending is not acknowledged.
    fn clear(&self) {
        self.connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
