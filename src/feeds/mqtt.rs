//! A service's MQTT topics (MQTT 3.1.1 or 5, `rumqttc`): each message one document in any form the
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

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS, Transport, v5,
};

use crate::broker::ServiceRuntime;
use crate::ingest::{Complaints, IngestError, Reason, Report};
use crate::service::{MqttFeed, MqttVersion};
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
        let (client, mut events) = match connection(&feed) {
            Ok(connection) => connection,
            Err(err) => {
                log::error!("service {name}: MQTT {}: {err}", feed.origin());
                health.set_connected(false, Some(err));
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        let acks = Acks::new(client.clone());
        let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut backoff = Duration::from_secs(1);
        while lease.is_held() {
            // Bounded: with the lease gone, the loop ends within a second.
            let Ok(event) = tokio::time::timeout(Duration::from_secs(1), events.next()).await
            else {
                continue;
            };
            match event {
                FeedEvent::Connected { session_present } => {
                    backoff = Duration::from_secs(1);
                    health.set_connected(true, None);
                    log::info!(
                        "service {name}: connected to MQTT {} (session {})",
                        feed.origin(),
                        if session_present { "resumed" } else { "new" }
                    );
                    if !session_present {
                        for topic in &feed.topics {
                            if let Err(err) = client.subscribe(topic, feed.qos) {
                                log::warn!("service {name}: subscribing to {topic}: {err}");
                            }
                        }
                    }
                }
                FeedEvent::Message(message) => {
                    health.count("message", 1);
                    let take = take(
                        runtime.clone(),
                        message.payload(),
                        feed.flat.clone(),
                        max_features,
                        health.clone(),
                        complaints.clone(),
                        message.topic(),
                    );
                    if message.is_qos1() {
                        acks.push(message, actix::spawn(take));
                    } else {
                        let permit = in_flight
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("the semaphore is never closed");
                        actix::spawn(async move {
                            take.await;
                            drop(permit);
                        });
                    }
                }
                FeedEvent::SubscriptionRefused => {
                    let err = "the broker refused a subscription".to_owned();
                    log::warn!("service {name}: MQTT {}: {err}", feed.origin());
                    health.set_connected(true, Some(err));
                }
                FeedEvent::Other => {}
                FeedEvent::Lost { error, refused } => {
                    health.set_connected(false, Some(error.clone()));
                    health.count("reconnect", 1);
                    let pause = if refused { MAX_BACKOFF } else { backoff };
                    log::warn!(
                        "service {name}: MQTT {}: {error}; again in {pause:?}",
                        feed.origin()
                    );
                    // Unacknowledged messages will come again in the resumed session.
                    acks.clear();
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        log::info!(
            "service {name}: another node runs MQTT {} now",
            feed.origin()
        );
        client.disconnect();
        health.set_connected(false, None);
    }
}

/// How long a broker keeps a QoS 1 session (MQTT 5) while no node is connected: a week.
const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// A client and its event loop for the feed's protocol version: a persistent session for
/// QoS 1, manual acknowledgements.
fn connection(feed: &MqttFeed) -> Result<(Client, Events), String> {
    let transport = if feed.tls {
        Transport::tls_with_config(tls_config(feed)?.into())
    } else {
        Transport::tcp()
    };
    let keep_alive = Duration::from_secs(15);
    match feed.version {
        MqttVersion::V311 => {
            let mut options =
                MqttOptions::new(feed.client_id.clone(), feed.host.clone(), feed.port);
            options
                .set_keep_alive(keep_alive)
                .set_clean_session(feed.qos == 0)
                .set_manual_acks(true)
                .set_max_packet_size(MAX_PACKET, 64 * 1024)
                .set_transport(transport);
            if let Some(username) = &feed.username {
                options
                    .set_credentials(username.clone(), feed.password.clone().unwrap_or_default());
            }
            let (client, events) = AsyncClient::new(options, 64);
            Ok((Client::V311(client), Events::V311(Box::new(events))))
        }
        MqttVersion::V5 => {
            let mut options =
                v5::MqttOptions::new(feed.client_id.clone(), feed.host.clone(), feed.port);
            options
                .set_keep_alive(keep_alive)
                .set_clean_start(feed.qos == 0)
                .set_session_expiry_interval((feed.qos == 1).then_some(SESSION_EXPIRY_SECS))
                .set_manual_acks(true)
                .set_max_packet_size(Some(MAX_PACKET as u32))
                .set_transport(transport);
            if let Some(username) = &feed.username {
                options
                    .set_credentials(username.clone(), feed.password.clone().unwrap_or_default());
            }
            let (client, events) = v5::AsyncClient::new(options, 64);
            Ok((Client::V5(client), Events::V5(Box::new(events))))
        }
    }
}

/// A client of either protocol version.
#[derive(Clone)]
enum Client {
    V311(AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    fn subscribe(&self, topic: &str, qos: u8) -> Result<(), String> {
        match self {
            Client::V311(client) => {
                let qos = if qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                client
                    .try_subscribe(topic, qos)
                    .map_err(|err| err.to_string())
            }
            Client::V5(client) => {
                let qos = if qos == 0 {
                    v5::mqttbytes::QoS::AtMostOnce
                } else {
                    v5::mqttbytes::QoS::AtLeastOnce
                };
                client
                    .try_subscribe(topic, qos)
                    .map_err(|err| err.to_string())
            }
        }
    }

    async fn ack(&self, message: &Received) -> Result<(), String> {
        match (self, message) {
            (Client::V311(client), Received::V311(publish)) => {
                client.ack(publish).await.map_err(|err| err.to_string())
            }
            (Client::V5(client), Received::V5(publish)) => {
                client.ack(publish).await.map_err(|err| err.to_string())
            }
            _ => Err("a message of another protocol version".into()),
        }
    }

    fn disconnect(&self) {
        match self {
            Client::V311(client) => drop(client.try_disconnect()),
            Client::V5(client) => drop(client.try_disconnect()),
        }
    }
}

/// The event loop of either protocol version.
enum Events {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A message received, of either protocol version.
enum Received {
    V311(Publish),
    V5(v5::mqttbytes::v5::Publish),
}

impl Received {
    fn payload(&self) -> bytes::Bytes {
        match self {
            Received::V311(publish) => publish.payload.clone(),
            Received::V5(publish) => publish.payload.clone(),
        }
    }

    fn topic(&self) -> String {
        match self {
            Received::V311(publish) => publish.topic.clone(),
            Received::V5(publish) => String::from_utf8_lossy(&publish.topic).into_owned(),
        }
    }

    fn is_qos1(&self) -> bool {
        match self {
            Received::V311(publish) => publish.qos != QoS::AtMostOnce,
            Received::V5(publish) => publish.qos != v5::mqttbytes::QoS::AtMostOnce,
        }
    }
}

/// What the connection did, whatever its version.
enum FeedEvent {
    /// Connected (again); the broker kept the session (and its subscriptions) or not.
    Connected { session_present: bool },
    /// A message on a subscribed topic.
    Message(Received),
    /// The broker refused a subscription.
    SubscriptionRefused,
    /// Anything else.
    Other,
    /// The connection was lost or refused (a refused login: `refused`).
    Lost { error: String, refused: bool },
}

impl Events {
    async fn next(&mut self) -> FeedEvent {
        match self {
            Events::V311(events) => match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => FeedEvent::Connected {
                    session_present: ack.session_present,
                },
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    FeedEvent::Message(Received::V311(publish))
                }
                Ok(Event::Incoming(Packet::SubAck(ack)))
                    if ack
                        .return_codes
                        .iter()
                        .any(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure)) =>
                {
                    FeedEvent::SubscriptionRefused
                }
                Ok(_) => FeedEvent::Other,
                Err(err) => FeedEvent::Lost {
                    refused: matches!(err, ConnectionError::ConnectionRefused(_)),
                    error: err.to_string(),
                },
            },
            Events::V5(events) => {
                use v5::mqttbytes::v5::{Packet as Packet5, SubscribeReasonCode};
                match events.poll().await {
                    Ok(v5::Event::Incoming(Packet5::ConnAck(ack))) => FeedEvent::Connected {
                        session_present: ack.session_present,
                    },
                    Ok(v5::Event::Incoming(Packet5::Publish(publish))) => {
                        FeedEvent::Message(Received::V5(publish))
                    }
                    Ok(v5::Event::Incoming(Packet5::SubAck(ack)))
                        if ack
                            .return_codes
                            .iter()
                            .any(|code| !matches!(code, SubscribeReasonCode::Success(_))) =>
                    {
                        FeedEvent::SubscriptionRefused
                    }
                    Ok(_) => FeedEvent::Other,
                    Err(err) => FeedEvent::Lost {
                        refused: matches!(err, v5::ConnectionError::ConnectionRefused(_)),
                        error: err.to_string(),
                    },
                }
            }
        }
    }
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
    publish: Received,
    taking: tokio::task::JoinHandle<()>,
    connection: u64,
}

impl Acks {
    fn new(client: Client) -> Acks {
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
    fn push(&self, publish: Received, taking: tokio::task::JoinHandle<()>) {
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
