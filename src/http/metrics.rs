//! `GET /metrics`: the same counters as `/api/stats` in Prometheus text format, built with
//! the official `prometheus-client` crate (a fresh registry per scrape, filled from the
//! brokers' counters and the connection counters).

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{HttpResponse, web};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::broker::GetStats;

type Labels = Vec<(String, String)>;

/// `GET /metrics`.
pub async fn metrics(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, super::admin::AdminError> {
    state.check_operator(&req)?;
    let sessions = Family::<Labels, Gauge>::default();
    let groups = Family::<Labels, Gauge>::default();
    let features_in = Family::<Labels, Counter>::default();
    let features_out = Family::<Labels, Counter>::default();
    let conflated = Family::<Labels, Counter>::default();
    let merged = Family::<Labels, Counter>::default();
    let lag = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let conditions = Family::<Labels, Gauge>::default();
    let tracks = Family::<Labels, Gauge>::default();
    let stale = Family::<Labels, Counter>::default();
    let snapshots = Family::<Labels, Counter>::default();
    let expired = Family::<Labels, Counter>::default();
    let deletes = Family::<Labels, Counter>::default();
    let deflate_plain = Family::<Labels, Counter>::default();
    let deflate_wire = Family::<Labels, Counter>::default();
    let accepted = Family::<Labels, Counter>::default();
    let rejected = Family::<Labels, Counter>::default();
    let refused_requests = Family::<Labels, Counter>::default();
    let state_commits = Family::<Labels, Counter>::default();
    let state_bytes = Family::<Labels, Counter>::default();
    let state_failures = Family::<Labels, Counter>::default();
    let state_checkpoints = Family::<Labels, Counter>::default();
    let state_unavailable = Family::<Labels, Gauge>::default();
    let feed_connected = Family::<Labels, Gauge>::default();
    let feed_events = Family::<Labels, Counter>::default();
    for (name, runtime) in &state.services {
        if let Some(feed) = &runtime.feed {
            let labels = vec![
                ("service".to_owned(), name.clone()),
                ("feed".to_owned(), feed.kind.to_owned()),
            ];
            feed_connected
                .get_or_create(&labels)
                .set(i64::from(feed.is_running_here() && feed.is_connected()));
            for (outcome, count) in feed.outcomes() {
                let mut labels = labels.clone();
                labels.push(("outcome".to_owned(), outcome.to_owned()));
                feed_events.get_or_create(&labels).inc_by(count);
            }
        }
        if let Some(health) = &runtime.store {
            let labels = vec![("service".to_owned(), name.clone())];
            let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            state_commits
                .get_or_create(&labels)
                .inc_by(load(&health.commits));
            state_bytes
                .get_or_create(&labels)
                .inc_by(load(&health.bytes));
            state_failures
                .get_or_create(&labels)
                .inc_by(load(&health.failures));
            state_checkpoints
                .get_or_create(&labels)
                .inc_by(load(&health.checkpoints));
            state_unavailable
                .get_or_create(&labels)
                .set(i64::from(health.fault().is_some()));
        }
        let Ok(stats) = runtime.broker.send(GetStats).await else {
            continue;
        };
        let labels = vec![("service".to_owned(), name.clone())];
        sessions.get_or_create(&labels).set(stats.sessions as i64);
        groups.get_or_create(&labels).set(stats.groups as i64);
        features_in
            .get_or_create(&labels)
            .inc_by(stats.fanout.features_in);
        features_out
            .get_or_create(&labels)
            .inc_by(stats.fanout.features_out);
        conflated
            .get_or_create(&labels)
            .inc_by(stats.fanout.frames_conflated);
        merged.get_or_create(&labels).inc_by(stats.batches_merged);
        lag.get_or_create(&labels).set(stats.lag_ms as f64 / 1000.0);
        conditions
            .get_or_create(&labels)
            .set(runtime.where_ledger.usage().0 as i64);
        tracks.get_or_create(&labels).set(stats.tracks as i64);
        stale.get_or_create(&labels).inc_by(stats.fanout.stale);
        snapshots
            .get_or_create(&labels)
            .inc_by(stats.fanout.snapshot_frames);
        expired
            .get_or_create(&labels)
            .inc_by(stats.fanout.tracks_expired);
        deletes
            .get_or_create(&labels)
            .inc_by(stats.fanout.delete_frames);
        deflate_plain
            .get_or_create(&labels)
            .inc_by(stats.fanout.deflate_plain_bytes);
        deflate_wire
            .get_or_create(&labels)
            .inc_by(stats.fanout.deflate_wire_bytes);
        accepted
            .get_or_create(&labels)
            .inc_by(runtime.ingest.accepted.load(Ordering::Relaxed));
        refused_requests
            .get_or_create(&labels)
            .inc_by(runtime.ingest.refused_requests.load(Ordering::Relaxed));
        for (reason, count) in runtime.ingest.rejected_by_reason() {
            let labels = vec![
                ("service".to_owned(), name.clone()),
                ("reason".to_owned(), reason.to_owned()),
            ];
            rejected.get_or_create(&labels).inc_by(count);
        }
    }
    let attempts = Family::<Labels, Counter>::default();
    let connections = &state.connections;
    let outcomes: [(&str, &AtomicU64); 9] = [
        ("accepted", &connections.accepted),
        ("unknown_service", &connections.unknown_service),
        ("invalid_parameters", &connections.invalid_parameters),
        ("not_websocket", &connections.not_websocket),
        ("shutting_down", &connections.shutting_down),
        ("over_capacity", &connections.over_capacity),
        ("rate_limited", &connections.rate_limited),
        ("origin_refused", &connections.origin_refused),
        ("token_refused", &connections.token_refused),
    ];
    for (outcome, counter) in outcomes {
        attempts
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc_by(counter.load(Ordering::Relaxed));
    }
    let (open, per_address, full) = state.admission.gate().counts();
    let refused = Family::<Labels, Counter>::default();
    for (reason, count) in [("per_address", per_address), ("full", full)] {
        refused
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc_by(count);
    }
    let reset = Counter::<u64>::default();
    reset.inc_by(state.teardown.reset.load(Ordering::Relaxed));
    let open_connections = Gauge::<i64>::default();
    open_connections.set(open as i64);
    let active = Gauge::<i64>::default();
    active.set(state.admission.active() as i64);

    let mut registry = Registry::with_prefix("featurestream");
    registry.register("sessions", "Sessions receiving data, by service", sessions);
    registry.register("groups", "Distinct subscriptions, by service", groups);
    registry.register(
        "features_in",
        "Features received from the source, by service",
        features_in,
    );
    registry.register(
        "features_out",
        "Features queued to sessions, by service",
        features_out,
    );
    registry.register(
        "frames_conflated",
        "Data frames dropped for sessions behind their queue limit (they get a snapshot instead), by service",
        conflated,
    );
    registry.register(
        "batches_merged",
        "Batches merged into a later one because the broker was still busy, by service",
        merged,
    );
    registry.register(
        "broker_lag_seconds",
        "From the newest observation of the last batch to the start of its fan-out, by service",
        lag,
    );
    registry.register(
        "where_conditions",
        "Conditions per feature over the distinct where clauses in use, by service",
        conditions,
    );
    registry.register(
        "tracks_live",
        "Tracks in the latest state, by service",
        tracks,
    );
    registry.register(
        "stale_observations",
        "Observations older than their track's latest (not streamed), by service",
        stale,
    );
    registry.register(
        "snapshot_frames",
        "Snapshot frames queued to sessions on subscribe and after filter changes, by service",
        snapshots,
    );
    registry.register(
        "tracks_expired",
        "Tracks removed because they stopped reporting, by service",
        expired,
    );
    registry.register(
        "delete_frames",
        "Delete messages queued to sessions for expired tracks, by service",
        deletes,
    );
    registry.register(
        "deflate_plain_bytes",
        "Bytes of data frames queued to sessions that negotiated compression, before compression, by service",
        deflate_plain,
    );
    registry.register(
        "deflate_wire_bytes",
        "The same frames' bytes as sent (compressed, or plain when small), by service",
        deflate_wire,
    );
    registry.register(
        "observations_accepted",
        "Ingested observations recorded and streamed, by service",
        accepted,
    );
    registry.register(
        "observations_rejected",
        "Ingested observations refused, by service and reason",
        rejected,
    );
    registry.register(
        "ingest_requests_refused",
        "Ingest requests and broadcast messages refused whole, by service",
        refused_requests,
    );
    registry.register(
        "state_commits",
        "Group commits of the latest state's journal flushed to stable storage (one fdatasync each), by service",
        state_commits,
    );
    registry.register(
        "state_journal_bytes",
        "Bytes appended to the latest state's journal, by service",
        state_bytes,
    );
    registry.register(
        "state_write_failures",
        "Writes of the latest state's journal or checkpoint that failed (disk full, I/O error, directory gone), by service",
        state_failures,
    );
    registry.register(
        "state_checkpoints",
        "Checkpoints of the whole latest state written (the journal compacted), by service",
        state_checkpoints,
    );
    registry.register(
        "state_unavailable",
        "1 while the latest state cannot be made durable and ingest is refused, by service",
        state_unavailable,
    );
    registry.register(
        "feed_connected",
        "1 while this node runs the service's outside feed and it is connected (MQTT) or its last poll succeeded (GTFS-Realtime), by service and feed",
        feed_connected,
    );
    registry.register(
        "feed_events",
        "What a service's outside feed did, by service, feed and outcome (message, reconnect, poll, notModified, vehicles, noPosition, httpError, timeout, badProtobuf, notJson, notFeatures, tooManyFeatures)",
        feed_events,
    );
    registry.register(
        "connection_attempts",
        "Session attempts, by outcome",
        attempts,
    );
    registry.register(
        "tcp_connections_refused",
        "TCP connections refused before any request was read, by reason",
        refused,
    );
    registry.register(
        "connections_reset",
        "Connections reset (SO_LINGER 0) because the client did not read its last frames",
        reset,
    );
    registry.register(
        "tcp_connections_open",
        "TCP connections open (sessions, requests, idle heads)",
        open_connections,
    );
    registry.register(
        "connections_active",
        "Sessions holding a place under the cap",
        active,
    );
    if let Some(health) = &state.backbone {
        register_cluster(&mut registry, health, state.control.as_deref());
    }
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        return Ok(HttpResponse::InternalServerError().finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// The node's standing with the NATS backbone (a node of a cluster only).
fn register_cluster(
    registry: &mut Registry,
    health: &crate::cluster::Health,
    control: Option<&crate::cluster::control::Control>,
) {
    let gauge = |value: i64| {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        gauge
    };
    let counter = |value: u64| {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        counter
    };
    registry.register(
        "nats_connected",
        "1 while this node is connected to NATS",
        gauge(health.is_connected() as i64),
    );
    registry.register(
        "ready",
        "1 while this node is connected and caught up with every service's latest state (/readyz)",
        gauge(health.is_ready() as i64),
    );
    registry.register(
        "nats_peers",
        "Other nodes heard from in the last seconds",
        gauge(control.map_or(0, |control| control.live_peers().len() as i64)),
    );
    for each in health.counters() {
        registry.register(each.metric, each.help, counter(each.value));
    }
}
