//! One load session: connect (custom handshake or `/subscribe` URL), read and scan frames,
//! change filters when asked, close cleanly at the end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::cell::RefCell;
use std::rc::Rc;

use crate::raw::{Event, RawSocket, Traffic};
use crate::scan::{ReplyKind, Scanner};
use crate::stats::Histogram;
use crate::{Args, FilterVia, Mode, Shared, now_ms};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// A session's filter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FilterSpec {
    None,
    Where(String),
    Envelope([f64; 4]),
}

/// What a session is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct SessionSpec {
    pub(crate) index: usize,
    pub(crate) filter: FilterSpec,
    /// Re-sends a new where clause every few seconds.
    pub(crate) changes: bool,
}

/// What a session saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionOutcome {
    pub(crate) filter: Option<FilterSpec>,
    pub(crate) changes: bool,
    pub(crate) connected: bool,
    pub(crate) connect_error: Option<String>,
    /// Features whose timestamp lies in the window.
    pub(crate) features_in_window: u64,
    pub(crate) frames: u64,
    /// Every feature received, in the window or not (for bytes per feature).
    pub(crate) features_received: u64,
    pub(crate) replies_ok: u64,
    pub(crate) replies_error: u64,
    /// Close code sent by the server, if it closed the session.
    pub(crate) server_close: Option<u16>,
    /// Whether the server accepted permessage-deflate (`--deflate`).
    pub(crate) deflate: bool,
    /// What it received: wire bytes and message bytes.
    pub(crate) traffic: Traffic,
}

/// The outcome with what the socket received.
fn with_traffic(mut outcome: SessionOutcome, socket: &RawSocket) -> SessionOutcome {
    outcome.deflate = socket.deflate;
    outcome.traffic = socket.traffic();
    outcome
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub(crate) fn url_for(args: &Args, filter: &FilterSpec) -> String {
    let base = args.url.trim_end_matches('/');
    match args.mode {
        Mode::Custom => {
            let path = args
                .path
                .clone()
                .unwrap_or_else(|| format!("/arcgis/ws/services/{}/custom", args.service));
            format!("{base}{path}")
        }
        Mode::Server => {
            let mut url = format!(
                "{base}/arcgis/ws/services/{}/StreamServer/subscribe?outSR={}",
                args.service, args.out_sr
            );
            match filter {
                FilterSpec::None => {}
                FilterSpec::Where(clause) => {
                    url.push_str(&format!("&where={}", percent_encode(clause)))
                }
                FilterSpec::Envelope([xmin, ymin, xmax, ymax]) => {
                    url.push_str(&format!("&geometry={xmin},{ymin},{xmax},{ymax}"))
                }
            }
            url
        }
    }
}

pub(crate) fn handshake_for(args: &Args, filter: &FilterSpec) -> String {
    let filter = if args.filter_via == FilterVia::Message {
        &FilterSpec::None
    } else {
        filter
    };
    json!({ "format": "json", "spatialReference": { "wkid": args.out_sr }, "filter": filter_json(filter) }).to_string()
}

/// The filter object of a handshake or filter message.
pub(crate) fn filter_json(filter: &FilterSpec) -> serde_json::Value {
    match filter {
        FilterSpec::None => serde_json::Value::Null,
        FilterSpec::Where(clause) => json!({ "where": clause }),
        FilterSpec::Envelope([xmin, ymin, xmax, ymax]) => {
            json!({ "geometry": { "xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax } })
        }
    }
}

/// Runs this thread's sessions, each started at its ramp slot; returns outcomes and latencies.
pub(crate) async fn run_all(
    specs: Vec<SessionSpec>,
    args: Arc<Args>,
    shared: Arc<Shared>,
    started: Instant,
) -> (Vec<SessionOutcome>, Histogram) {
    // Every session of this thread runs on this thread: the histogram needs no lock.
    let histogram = Rc::new(RefCell::new(Histogram::default()));
    // Ingest mode: a server batch may hold observations sent at different times.
    let scanner = Rc::new(if args.publishers > 0 {
        Scanner::per_feature(&args.timestamp_field)
    } else {
        Scanner::new(&args.timestamp_field)
    });
    let local = tokio::task::LocalSet::new();
    let outcomes = local
        .run_until(async {
            let tasks: Vec<_> = specs
                .into_iter()
                .map(|spec| {
                    let (args, shared, histogram, scanner) = (
                        args.clone(),
                        shared.clone(),
                        histogram.clone(),
                        scanner.clone(),
                    );
                    tokio::task::spawn_local(async move {
                        let slot = started + Duration::from_secs_f64(spec.index as f64 / args.ramp);
                        tokio::time::sleep_until(slot.into()).await;
                        run_one(spec, &args, &shared, &histogram, scanner).await
                    })
                })
                .collect();
            let mut outcomes = Vec::with_capacity(tasks.len());
            for task in tasks {
                if let Ok(outcome) = task.await {
                    outcomes.push(outcome);
                }
            }
            outcomes
        })
        .await;
    let histogram = histogram.take();
    (outcomes, histogram)
}

async fn run_one(
    spec: SessionSpec,
    args: &Args,
    shared: &Shared,
    histogram: &RefCell<Histogram>,
    scanner: Rc<Scanner>,
) -> SessionOutcome {
    let mut outcome = SessionOutcome {
        filter: Some(spec.filter.clone()),
        changes: spec.changes,
        ..SessionOutcome::default()
    };
    let url = url_for(args, &spec.filter);
    let mut socket = match tokio::time::timeout(
        Duration::from_secs(30),
        RawSocket::connect(&url, scanner, args.deflate),
    )
    .await
    {
        Ok(Ok(socket)) => socket,
        Ok(Err(err)) => {
            outcome.connect_error = Some(err);
            return outcome;
        }
        Err(_) => {
            outcome.connect_error = Some("connect timed out".into());
            return outcome;
        }
    };
    if args.mode == Mode::Custom
        && socket
            .send_text(&handshake_for(args, &spec.filter))
            .await
            .is_err()
    {
        outcome.connect_error = Some("handshake send failed".into());
        return with_traffic(outcome, &socket);
    }
    let by_message = args.mode == Mode::Custom && args.filter_via == FilterVia::Message;
    if by_message && spec.filter != FilterSpec::None {
        let message = json!({ "filter": filter_json(&spec.filter) }).to_string();
        if socket.send_text(&message).await.is_err() {
            outcome.connect_error = Some("filter send failed".into());
            return with_traffic(outcome, &socket);
        }
    }
    outcome.connected = true;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut stop = shared.stop.clone();
    let mut rng =
        StdRng::seed_from_u64(args.seed ^ (spec.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let change_every = Duration::from_secs_f64(args.change_every.max(0.1));
    // Both futures live across reads, so neither re-registers a waker per read.
    let change_timer = tokio::time::sleep(change_every.mul_f64(rng.random_range(0.5..1.5)));
    tokio::pin!(change_timer);
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        // Everything one read brought is judged against one clock reading, and counted into
        // the shared progress figure once.
        let now = now_ms();
        let mut features = 0;
        // Consecutive messages of one tick share a timestamp: record them as one sample.
        let mut run = Run::default();
        while let Some(event) = socket.next_event() {
            match event {
                Event::Message(summary) => {
                    outcome.frames += 1;
                    features += u64::from(summary.features);
                    match summary.reply {
                        Some(ReplyKind::Ok) => outcome.replies_ok += 1,
                        Some(ReplyKind::Error) => outcome.replies_error += 1,
                        None => {}
                    }
                    for (timestamp, count) in &summary.runs {
                        if run.timestamp != *timestamp {
                            run.record(now, &mut outcome, shared, histogram);
                            run.timestamp = *timestamp;
                        }
                        run.features += u64::from(*count);
                    }
                    if let Some(timestamp) = summary
                        .first_timestamp
                        .filter(|_| summary.features > 0 && summary.runs.is_empty())
                    {
                        if run.timestamp != timestamp {
                            run.record(now, &mut outcome, shared, histogram);
                            run.timestamp = timestamp;
                        }
                        run.features += u64::from(summary.features);
                    }
                }
                Event::Close(code) => {
                    run.record(now, &mut outcome, shared, histogram);
                    outcome.server_close = Some(code.unwrap_or(1005));
                    return with_traffic(outcome, &socket);
                }
            }
        }
        run.record(now, &mut outcome, shared, histogram);
        if features > 0 {
            outcome.features_received += features;
            shared.features_seen.fetch_add(features, Ordering::Relaxed);
        }
        tokio::select! {
            _ = &mut stopped => {
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.close()).await;
                return with_traffic(outcome, &socket);
            }
            () = &mut change_timer, if spec.changes => {
                let (low, high) = args.where_range;
                let clause = format!("{} > {}", args.where_field, rng.random_range(low..=high).round());
                let message = json!({ "filter": { "where": clause } }).to_string();
                if socket.send_text(&message).await.is_err() {
                    return with_traffic(outcome, &socket);
                }
                let next = change_timer.deadline() + change_every;
                change_timer.as_mut().reset(next);
            }
            open = socket.fill() => if !open {
                return with_traffic(outcome, &socket);
            },
        }
    }
}

/// Features read at once that carry one timestamp. Every server measured here puts one tick
/// in a frame (custom mode) or one feature in a frame (server mode), so a frame's first
/// timestamp is every one of its features'.
#[derive(Default)]
struct Run {
    timestamp: f64,
    features: u64,
}

impl Run {
    /// Judges the run's features by their timestamp, and empties the run.
    fn record(
        &mut self,
        now: f64,
        outcome: &mut SessionOutcome,
        shared: &Shared,
        histogram: &RefCell<Histogram>,
    ) {
        let features = std::mem::take(&mut self.features);
        if features == 0 {
            return;
        }
        let (start, end) = (
            shared.window_start_ms.load(Ordering::Relaxed),
            shared.window_end_ms.load(Ordering::Relaxed),
        );
        if self.timestamp >= start as f64 && self.timestamp <= end as f64 {
            outcome.features_in_window += features;
            histogram
                .borrow_mut()
                .record_n(now - self.timestamp, features);
        }
    }
}
