//! featurestream-load: opens N WebSocket sessions against a stream server (custom handshake or
//! ArcGIS `/subscribe`), with a mix of where clauses, envelopes and filter changes, measures a
//! window after warm-up and reports delivered features, delivery ratio, latency percentiles
//! from each feature's timestamp attribute, fairness, close codes, filter replies and CPU.
//!
//! `cargo run --release --bin featurestream-load -- --sessions 1000 --mode server`
//!
//! Ingest mode (`--publishers P`) runs publishers beside the sessions: observations of
//! `--tracks` tracks at `--publish-rate` per second through the broadcast WebSocket or HTTP
//! NDJSON; unfiltered sessions are then expected to receive every observation published in
//! the window.

mod publish;
mod raw;
mod recall;
mod reference;
mod scan;
mod session;
mod stats;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use session::{FilterSpec, SessionOutcome, SessionSpec};
use stats::{Histogram, cores_between, sample_process};

/// Which protocol the sessions speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Custom mode: handshake, then featureResult frames.
    Custom,
    /// ArcGIS `/subscribe`: one feature per frame, filters in the URL.
    Server,
}

/// How a custom-mode session states its filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FilterVia {
    /// In the handshake's `filter` (the ArcGIS SDK's way).
    Handshake,
    /// In a `{"filter": ..}` message right after the handshake (what the peers understand).
    Message,
}

/// Load-test a featurestream (or compatible) server.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub(crate) struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    pub(crate) url: String,
    /// Protocol.
    #[arg(long, value_enum, default_value = "custom")]
    pub(crate) mode: Mode,
    /// Service name.
    #[arg(long, default_value = "vehicles")]
    pub(crate) service: String,
    /// Custom-mode path (default `/arcgis/ws/services/{service}/custom`; peers use `/`).
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// Sessions to open.
    #[arg(long, default_value_t = 100)]
    pub(crate) sessions: usize,
    /// Sessions opened per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) ramp: f64,
    /// Seconds between the last session opening and the measurement window.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup: f64,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Fraction of sessions with a random `FIELD > x` where clause.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) where_fraction: f64,
    /// Fraction of sessions with a random envelope.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) envelope_fraction: f64,
    /// Fraction of sessions that change their where clause every `--change-every` seconds.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) change_fraction: f64,
    /// Seconds between filter changes.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) change_every: f64,
    /// Numeric field for random where clauses.
    #[arg(long, default_value = "speed")]
    pub(crate) where_field: String,
    /// Range of the random threshold `x` in `FIELD > x`.
    #[arg(long, default_value = "20,120", value_parser = parse_pair)]
    pub(crate) where_range: (f64, f64),
    /// Extent random envelopes are drawn in (in the output reference): xmin,ymin,xmax,ymax.
    #[arg(long, default_value = "-117.30,34.03,-117.08,34.12", value_parser = parse_extent)]
    pub(crate) extent: [f64; 4],
    /// Side of a random envelope as a fraction of the extent's sides (0.1: 1 % of the area).
    #[arg(long, default_value_t = 0.1)]
    pub(crate) envelope_side: f64,
    /// Attribute holding each feature's epoch-millisecond timestamp.
    #[arg(long, default_value = "observed")]
    pub(crate) timestamp_field: String,
    /// Output spatial reference.
    #[arg(long, default_value_t = 4326)]
    pub(crate) out_sr: u32,
    /// PID of the server, to report its CPU and RSS.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Client threads (default: one per core), each with its own runtime.
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Seed for the filter mix.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Custom mode: send the filter in the handshake or in a filter message after it.
    #[arg(long, value_enum, default_value = "handshake")]
    pub filter_via: FilterVia,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// Print only the JSON line.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Ingest mode: publishers sending observations beside the sessions (0: none; the
    /// server's own simulator feeds the sessions).
    #[arg(long, default_value_t = 0)]
    pub(crate) publishers: usize,
    /// Ingest mode: observations per second, all publishers together.
    #[arg(long, default_value_t = 10_000.0)]
    pub(crate) publish_rate: f64,
    /// Ingest mode: tracks the observations belong to (spread over the publishers).
    #[arg(long, default_value_t = 1000)]
    pub(crate) tracks: usize,
    /// Ingest mode: the broadcast WebSocket or HTTP NDJSON.
    #[arg(long, value_enum, default_value = "ws")]
    pub(crate) publish_via: publish::PublishVia,
    /// Ingest mode: base URL the publishers send to (default: `--url`; another node of a
    /// cluster measures from ingest on one node to sessions on another).
    #[arg(long)]
    pub(crate) publish_url: Option<String>,
    /// Ingest mode over the broadcast WebSocket: ask for an acknowledgement of every message
    /// (`?ack=true`) and measure send-to-acknowledgement latency.
    #[arg(long)]
    pub(crate) publish_ack: bool,
    /// Ingest mode over MQTT (`--publish-via mqtt`): the QoS the publishers send with (0 or 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub(crate) mqtt_qos: u8,
    /// Offer WebSocket compression (permessage-deflate): compressed messages are inflated (and
    /// so checked) before they are read; the report counts wire and inflated bytes.
    #[arg(long)]
    pub(crate) deflate: bool,
}

fn parse_pair(text: &str) -> Result<(f64, f64), String> {
    let (low, high) = text.split_once(',').ok_or("expected low,high")?;
    let low: f64 = low.trim().parse().map_err(|_| "low is not a number")?;
    let high: f64 = high.trim().parse().map_err(|_| "high is not a number")?;
    if low <= high {
        Ok((low, high))
    } else {
        Err("low must not exceed high".into())
    }
}

fn parse_extent(text: &str) -> Result<[f64; 4], String> {
    let values: Vec<f64> = text
        .split(',')
        .map(|part| part.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| "expected four numbers")?;
    let [xmin, ymin, xmax, ymax] = values[..] else {
        return Err("expected xmin,ymin,xmax,ymax".into());
    };
    if xmin < xmax && ymin < ymax {
        Ok([xmin, ymin, xmax, ymax])
    } else {
        Err("min must be below max".into())
    }
}

/// State shared by every session of every thread.
pub(crate) struct Shared {
    /// Features with a timestamp in [start, end] are counted; `i64::MAX` until set.
    pub(crate) window_start_ms: AtomicI64,
    pub(crate) window_end_ms: AtomicI64,
    pub(crate) connected: AtomicUsize,
    pub(crate) features_seen: AtomicU64,
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

pub(crate) fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64() * 1000.0)
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host = host
        .rsplit_once(':')
        .map_or(host, |(host, _)| host)
        .trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn build_specs(args: &Args) -> Vec<SessionSpec> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let [xmin, ymin, xmax, ymax] = args.extent;
    (0..args.sessions)
        .map(|index| {
            let roll: f64 = rng.random();
            let (low, high) = args.where_range;
            let filter = if roll < args.where_fraction {
                FilterSpec::Where(format!(
                    "{} > {}",
                    args.where_field,
                    rng.random_range(low..=high).round()
                ))
            } else if roll < args.where_fraction + args.envelope_fraction {
                let (width, height) = (
                    (xmax - xmin) * args.envelope_side,
                    (ymax - ymin) * args.envelope_side,
                );
                let left = rng.random_range(xmin..=xmax - width);
                let bottom = rng.random_range(ymin..=ymax - height);
                FilterSpec::Envelope([left, bottom, left + width, bottom + height])
            } else {
                FilterSpec::None
            };
            let changes = rng.random::<f64>() < args.change_fraction;
            SessionSpec {
                index,
                filter,
                changes,
            }
        })
        .collect()
}

fn main() {
    let args = Args::parse();
    if !args.allow_remote
        && (!is_loopback(&args.url)
            || args
                .publish_url
                .as_deref()
                .is_some_and(|url| !is_loopback(url)))
    {
        eprintln!(
            "featurestream-load: {} is not on this machine; pass --allow-remote to load it anyway",
            args.url
        );
        std::process::exit(2);
    }
    // Each session is a socket: raise this process's open-file limit, not the system's.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("featurestream-load: cannot raise the open-file limit: {err}");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);
    let specs = build_specs(&args);
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        window_start_ms: AtomicI64::new(i64::MAX),
        window_end_ms: AtomicI64::new(i64::MIN),
        connected: AtomicUsize::new(0),
        features_seen: AtomicU64::new(0),
        stop,
    });
    let outcomes: Arc<Mutex<Vec<SessionOutcome>>> =
        Arc::new(Mutex::new(Vec::with_capacity(specs.len())));
    let histograms: Arc<Mutex<Vec<Histogram>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let args = Arc::new(args);

    // In ingest mode what was published is the reference: no session parses every frame.
    let reference = (args.publishers == 0).then(|| reference::spawn(args.clone(), shared.clone()));
    let published = Arc::new(publish::Published::default());
    let publishers = (args.publishers > 0)
        .then(|| publish::spawn(args.clone(), shared.clone(), published.clone()));
    let mut handles = Vec::new();
    for thread in 0..threads {
        let mine: Vec<SessionSpec> = specs
            .iter()
            .filter(|spec| spec.index % threads == thread)
            .cloned()
            .collect();
        let (args, shared, outcomes, histograms) = (
            args.clone(),
            shared.clone(),
            outcomes.clone(),
            histograms.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let (thread_outcomes, histogram) =
                runtime.block_on(session::run_all(mine, args, shared, started));
            outcomes.lock().expect("outcomes").extend(thread_outcomes);
            histograms.lock().expect("histograms").push(histogram);
        }));
    }

    let progress = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.sessions as u64)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} sessions {msg}",
        )
        .expect("a valid template"),
    );
    let ramp_secs = args.sessions as f64 / args.ramp;
    let tick = |label: &str, until: Instant| {
        let mut last = shared.features_seen.load(Ordering::Relaxed);
        while Instant::now() < until {
            std::thread::sleep(
                Duration::from_millis(500).min(until.saturating_duration_since(Instant::now())),
            );
            let seen = shared.features_seen.load(Ordering::Relaxed);
            progress.set_position(shared.connected.load(Ordering::Relaxed) as u64);
            progress.set_message(format!(
                "{label}: {:.0} features/s",
                (seen - last) as f64 * 2.0
            ));
            last = seen;
        }
    };
    tick("ramp", started + Duration::from_secs_f64(ramp_secs));
    tick(
        "warm-up",
        Instant::now() + Duration::from_secs_f64(args.warmup),
    );
    let window_start_ms = now_ms();
    let window_end_ms = window_start_ms + args.duration * 1000.0;
    shared
        .window_start_ms
        .store(window_start_ms as i64, Ordering::SeqCst);
    shared
        .window_end_ms
        .store(window_end_ms as i64, Ordering::SeqCst);
    let own_start = sample_process("self");
    let server_start = args
        .server_pid
        .and_then(|pid| sample_process(&pid.to_string()));
    tick(
        "measuring",
        Instant::now() + Duration::from_secs_f64(args.duration),
    );
    let own_end = sample_process("self");
    let server_end = args
        .server_pid
        .and_then(|pid| sample_process(&pid.to_string()));
    // Let features of the window's last tick arrive, then close every session cleanly.
    tick("draining", Instant::now() + Duration::from_secs(2));
    progress.finish_and_clear();
    let _ = stop_sender.send(true);
    for handle in handles {
        let _ = handle.join();
    }
    if let Some(publishers) = publishers {
        let _ = publishers.join();
        published.settle_window(
            shared.window_start_ms.load(Ordering::SeqCst),
            shared.window_end_ms.load(Ordering::SeqCst),
        );
    }
    let reference = reference
        .map(|reference| reference.join().unwrap_or_default())
        .unwrap_or_default();

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    let mut latency = Histogram::default();
    for histogram in histograms.lock().expect("histograms").iter() {
        latency.merge(histogram);
    }
    let cpu = |start: Option<stats::ProcessSample>, end: Option<stats::ProcessSample>| {
        start
            .zip(end)
            .map(|(start, end)| (cores_between(start, end), end.rss_bytes))
    };
    let report = report::Report::build(
        &args,
        &outcomes,
        &reference,
        &latency,
        (args.publishers > 0).then_some(&*published),
        cpu(own_start, own_end).map(|(cores, _)| cores),
        cpu(server_start, server_end),
    );
    if !args.quiet {
        report.print_table();
    }
    println!("{}", report.json());
}

mod report;
