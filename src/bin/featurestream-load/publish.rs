//! Ingest mode: publishers sending observations of `--tracks` tracks at `--publish-rate`
//! observations per second in all, through the broadcast WebSocket
//! (`/arcgis/ws/services/{service}/StreamServer/broadcast`) or one long HTTP NDJSON body
//! (`POST /api/services/{service}/features`, chunked), or an MQTT broker the service's `mqtt`
//! feed subscribes to, each observation's timestamp attribute
//! set when its message is sent, so that sessions measure latency from send to arrival.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::{Args, Shared, now_ms};

/// How publishers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PublishVia {
    /// The broadcast WebSocket, one message per send.
    Ws,
    /// One chunked HTTP NDJSON body per publisher, one line per send.
    Http,
    /// An MQTT broker (`--publish-url mqtt://host:port`, `--mqtt-qos`), one message per send
    /// on the topic `featurestream-load/{service}/{publisher}`: the server reads it through
    /// its service's `mqtt` feed.
    Mqtt,
}

/// Sends per second per publisher.
const SENDS_PER_SECOND: f64 = 50.0;

/// What the publishers did.
#[derive(Default)]
pub(crate) struct Published {
    /// Observations sent with a timestamp inside the window.
    pub(crate) in_window: AtomicU64,
    /// Observations sent in all.
    pub(crate) sent: AtomicU64,
    /// Messages the server answered with an error or rejection.
    pub(crate) refused_messages: AtomicU64,
    /// Publishers that could not connect or lost their connection.
    pub(crate) failed: AtomicU64,
    /// Each send's timestamp and observation count (the window is judged at the end, as the
    /// sessions judge what they receive).
    sends: std::sync::Mutex<Vec<(i64, u64)>>,
    /// Each acknowledged send's timestamp, latency (ms) and observation count.
    acks: std::sync::Mutex<Vec<(i64, f64, u64)>>,
    /// Send-to-acknowledgement latency of the sends in the window (`--publish-ack`).
    pub(crate) ack_latency: std::sync::Mutex<crate::stats::Histogram>,
}

impl Published {
    /// Counts the observations sent with a timestamp in `[start, end]` into `in_window`.
    pub(crate) fn settle_window(&self, start: i64, end: i64) {
        let sends = self.sends.lock().expect("sends");
        let count = sends
            .iter()
            .filter(|(observed, _)| (start..=end).contains(observed))
            .map(|(_, count)| count)
            .sum();
        self.in_window.store(count, Ordering::Relaxed);
        let mut latency = crate::stats::Histogram::default();
        for (observed, latency_ms, count) in self.acks.lock().expect("acks").iter() {
            if (start..=end).contains(observed) {
                latency.record_n(*latency_ms, *count);
            }
        }
        *self.ack_latency.lock().expect("ack latency") = latency;
    }
}

/// Starts the publishers on a thread of their own; they stop with the sessions.
pub(crate) fn spawn(
    args: Arc<Args>,
    shared: Arc<Shared>,
    published: Arc<Published>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let mut tasks = Vec::new();
            for publisher in 0..args.publishers {
                let (args, shared, published) = (args.clone(), shared.clone(), published.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    run(publisher, &args, &shared, &published).await;
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        });
    })
}

/// Appends one observation as Esri JSON (the load tester writes a hundred thousand a second on
/// the machine it measures: numbers are written by hand, not through `format!`).
fn observation(out: &mut String, track: usize, observed: i64, rng: &mut StdRng, extent: [f64; 4]) {
    let [xmin, ymin, xmax, ymax] = extent;
    let (mut integer, mut name) = (itoa::Buffer::new(), itoa::Buffer::new());
    let track = name.format(track);
    out.push_str(r#"{"attributes":{"TRACKID":"#);
    out.push_str(track);
    out.push_str(r#","name":"pub-"#);
    out.push_str(track);
    out.push_str(r#"","route":"load","status":"moving","speed":"#);
    fixed(out, rng.random_range(5.0..130.0), 1);
    out.push_str(r#","heading":"#);
    fixed(out, rng.random_range(0.0..360.0), 1);
    out.push_str(r#","active":true,"observed":"#);
    out.push_str(integer.format(observed));
    out.push_str(r#"},"geometry":{"x":"#);
    fixed(out, rng.random_range(xmin..xmax), 6);
    out.push_str(r#","y":"#);
    fixed(out, rng.random_range(ymin..ymax), 6);
    out.push_str("}}");
}

/// Appends `value` with `decimals` digits after the point, rounded, as `{:.N}` writes it (but
/// for a negative value that rounds to zero, written without its sign).
fn fixed(out: &mut String, value: f64, decimals: u32) {
    let scale = 10i64.pow(decimals);
    let scaled = (value * scale as f64).round() as i64;
    if scaled < 0 {
        out.push('-');
    }
    let (whole, fraction) = (
        scaled.unsigned_abs() / scale as u64,
        scaled.unsigned_abs() % scale as u64,
    );
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(whole));
    out.push('.');
    let fraction = digits.format(fraction);
    for _ in fraction.len()..decimals as usize {
        out.push('0');
    }
    out.push_str(fraction);
}

async fn run(publisher: usize, args: &Args, shared: &Shared, published: &Published) {
    let tracks: Vec<usize> = (1..=args.tracks)
        .filter(|track| track % args.publishers == publisher)
        .collect();
    if tracks.is_empty() {
        return;
    }
    let per_send =
        ((args.publish_rate / args.publishers as f64 / SENDS_PER_SECOND).ceil() as usize).max(1);
    let mut rng = StdRng::seed_from_u64(args.seed + publisher as u64);
    let base = args
        .publish_url
        .as_deref()
        .unwrap_or(&args.url)
        .trim_end_matches('/');
    let mut sink = match args.publish_via {
        PublishVia::Ws => {
            let url = format!(
                "{base}/arcgis/ws/services/{}/StreamServer/broadcast{}",
                args.service,
                if args.publish_ack { "?ack=true" } else { "" }
            );
            match tokio_tungstenite::connect_async(&url).await {
                Ok((socket, _)) => Sink::Ws {
                    socket: Box::new(socket),
                    unanswered: Default::default(),
                    sequence: 0,
                    acknowledged: args.publish_ack,
                },
                Err(err) => {
                    eprintln!("featurestream-load: publisher {publisher}: {err}");
                    published.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        PublishVia::Mqtt => {
            let authority = base.strip_prefix("mqtt://").unwrap_or(base);
            let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "1883"));
            let mut options = rumqttc::MqttOptions::new(
                format!("featurestream-load-{}-{publisher}", std::process::id()),
                host,
                port.parse().unwrap_or(1883),
            );
            options.set_keep_alive(Duration::from_secs(15));
            options.set_max_packet_size(16 << 20, 16 << 20);
            options.set_inflight(1000);
            let (client, mut events) = rumqttc::AsyncClient::new(options, 1000);
            let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let lost = failed.clone();
            tokio::task::spawn_local(async move {
                loop {
                    if let Err(err) = events.poll().await {
                        eprintln!("featurestream-load: publisher {publisher}: MQTT: {err}");
                        lost.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            });
            Sink::Mqtt {
                client,
                topic: format!("featurestream-load/{}/{publisher}", args.service),
                qos: if args.mqtt_qos == 0 {
                    rumqttc::QoS::AtMostOnce
                } else {
                    rumqttc::QoS::AtLeastOnce
                },
                failed,
            }
        }
        PublishVia::Http => {
            let authority = base.split("://").nth(1).unwrap_or(base);
            let Ok(mut stream) = tokio::net::TcpStream::connect(authority).await else {
                published.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let head = format!(
                "POST /api/services/{}/features HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
                args.service
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                published.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Sink::Http(stream)
        }
    };
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / SENDS_PER_SECOND));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.stop.clone();
    let mut next = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
            reply = sink.next_reply() => {
                match reply {
                    Reply::Refused => {
                        published.refused_messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Reply::Acknowledged { observed, latency_ms, count } => {
                        published.acks.lock().expect("acks").push((observed, latency_ms, count));
                    }
                    Reply::Other => {}
                }
                continue;
            }
        }
        let observed = now_ms() as i64;
        let mut message = String::with_capacity(per_send * 220 + 2);
        message.push('[');
        for index in 0..per_send {
            if index > 0 {
                message.push(',');
            }
            observation(&mut message, tracks[next], observed, &mut rng, args.extent);
            next = (next + 1) % tracks.len();
        }
        message.push(']');
        if sink.send(message, observed, per_send as u64).await.is_err() {
            published.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        published.sent.fetch_add(per_send as u64, Ordering::Relaxed);
        published
            .sends
            .lock()
            .expect("sends")
            .push((observed, per_send as u64));
    }
    sink.finish().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Sink {
    Ws {
        socket: Box<Socket>,
        /// Messages sent and not answered yet (with acknowledgements asked for): sequence,
        /// when, its timestamp and observation count.
        unanswered: std::collections::VecDeque<(u64, std::time::Instant, i64, u64)>,
        sequence: u64,
        acknowledged: bool,
    },
    Http(tokio::net::TcpStream),
    Mqtt {
        client: rumqttc::AsyncClient,
        topic: String,
        qos: rumqttc::QoS,
        /// The connection to the broker was lost.
        failed: Arc<std::sync::atomic::AtomicBool>,
    },
}

/// What a message from the server said.
enum Reply {
    /// A rejection or an error.
    Refused,
    /// The acknowledgement of a send.
    Acknowledged {
        observed: i64,
        latency_ms: f64,
        count: u64,
    },
    Other,
}

impl Sink {
    async fn send(&mut self, message: String, observed: i64, count: u64) -> Result<(), ()> {
        match self {
            Sink::Ws {
                socket,
                unanswered,
                sequence,
                acknowledged,
            } => {
                *sequence += 1;
                if *acknowledged {
                    unanswered.push_back((*sequence, std::time::Instant::now(), observed, count));
                }
                socket.send(Message::text(message)).await.map_err(|_| ())
            }
            Sink::Http(stream) => {
                let chunk = format!("{:x}\r\n{message}\n\r\n", message.len() + 1);
                stream.write_all(chunk.as_bytes()).await.map_err(|_| ())
            }
            Sink::Mqtt {
                client,
                topic,
                qos,
                failed,
            } => {
                if failed.load(Ordering::Relaxed) {
                    return Err(());
                }
                client
                    .publish(topic.clone(), *qos, false, message)
                    .await
                    .map_err(|_| ())
            }
        }
    }

    /// Waits for a message from the server (the WebSocket answers rejections and errors,
    /// and acknowledgements when asked; the HTTP answer comes at the end). Pends forever for
    /// HTTP.
    async fn next_reply(&mut self) -> Reply {
        match self {
            Sink::Ws {
                socket, unanswered, ..
            } => match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let reply: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let sequence = reply["sequence"].as_u64().unwrap_or(0);
                    let mut sent = None;
                    while let Some(&(first, ..)) = unanswered.front()
                        && first <= sequence
                    {
                        sent = unanswered.pop_front();
                    }
                    match (reply["type"].as_str(), sent) {
                        (Some("ack"), Some((_, at, observed, count))) => Reply::Acknowledged {
                            observed,
                            latency_ms: at.elapsed().as_secs_f64() * 1000.0,
                            count,
                        },
                        (Some("rejected" | "error"), _) => Reply::Refused,
                        _ => Reply::Other,
                    }
                }
                Some(Ok(_)) => Reply::Other,
                _ => std::future::pending().await,
            },
            Sink::Http(_) | Sink::Mqtt { .. } => std::future::pending().await,
        }
    }

    async fn finish(self) {
        match self {
            Sink::Ws { mut socket, .. } => {
                let _ = SinkExt::close(&mut socket).await;
            }
            Sink::Mqtt { client, .. } => {
                let _ = client.disconnect().await;
            }
            Sink::Http(mut stream) => {
                let _ = stream.write_all(b"0\r\n\r\n").await;
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
                )
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn numbers_are_written_as_format_writes_them() {
        for (value, decimals, written) in [
            (0.0, 1, "0.0"),
            (5.04, 1, "5.0"),
            (129.96, 1, "130.0"),
            (-117.123_456_4, 6, "-117.123456"),
            (-0.000_000_4, 6, "0.000000"),
            (-0.5, 6, "-0.500000"),
            (34.000_001, 6, "34.000001"),
        ] {
            let mut out = String::new();
            fixed(&mut out, value, decimals);
            assert_eq!(out, written, "{value}");
        }
    }

    #[test]
    fn an_observation_is_a_feature_of_the_vehicles_schema() {
        let mut out = String::new();
        let mut rng = StdRng::seed_from_u64(7);
        observation(
            &mut out,
            42,
            1_700_000_000_000,
            &mut rng,
            [-118.0, 33.0, -117.0, 34.0],
        );
        let feature: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(feature["attributes"]["TRACKID"], 42);
        assert_eq!(feature["attributes"]["name"], "pub-42");
        assert_eq!(feature["attributes"]["observed"], 1_700_000_000_000i64);
        let x = feature["geometry"]["x"].as_f64().expect("x");
        assert!((-118.0..=-117.0).contains(&x), "{out}");
        let speed = feature["attributes"]["speed"].as_f64().expect("speed");
        assert!((5.0..=130.0).contains(&speed), "{out}");
    }
}
