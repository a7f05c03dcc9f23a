//! The report: expected counts from the reference session, delivery ratio, latency
//! percentiles, fairness, close codes, filter replies, CPU; a human table and one JSON line.

use std::collections::BTreeMap;
use std::sync::Arc;

use featurestream::feature::{Field, FieldType, FieldValue, GeometryType, Schema};
use featurestream::filter::{FilterLimits, WhereClause};
use featurestream::geometry::Wkid;
use serde_json::{Value, json};

use crate::Args;
use crate::reference::Reference;
use crate::session::{FilterSpec, SessionOutcome};
use crate::stats::Histogram;

pub(crate) struct Report {
    json: Value,
}

/// A schema inferred from the reference features, so that where clauses can be judged for
/// any server (featurestream or a peer with other field names).
fn inferred_schema(reference: &Reference) -> Option<(Schema, Vec<String>)> {
    let first = reference.features.first()?;
    let mut fields = vec![Field::new("__oid", FieldType::ObjectId)];
    let mut names = Vec::new();
    for (name, value) in &first.attributes {
        let field_type = match value {
            Value::String(_) => FieldType::String,
            Value::Bool(_) => FieldType::Boolean,
            _ => FieldType::Double,
        };
        fields.push(Field::new(name, field_type).nullable());
        names.push(name.clone());
    }
    let schema = Schema::new(fields, "__oid", "__oid", GeometryType::Point, Wkid::Wgs84).ok()?;
    Some((schema, names))
}

fn values(names: &[String], attributes: &serde_json::Map<String, Value>) -> Vec<FieldValue> {
    let mut values = vec![FieldValue::Integer(0)];
    for name in names {
        values.push(match attributes.get(name) {
            Some(Value::String(text)) => FieldValue::String(Arc::from(text.as_str())),
            Some(Value::Bool(flag)) => FieldValue::Boolean(*flag),
            Some(Value::Number(number)) => FieldValue::Double(number.as_f64().unwrap_or(f64::NAN)),
            _ => FieldValue::Null,
        });
    }
    values
}

/// Bytes on the wire per feature received, over the whole run.
fn wire_per_feature(outcomes: &[SessionOutcome]) -> Option<f64> {
    let wire: u64 = outcomes.iter().map(|outcome| outcome.traffic.wire).sum();
    let features: u64 = outcomes
        .iter()
        .map(|outcome| outcome.features_received)
        .sum();
    (features > 0).then(|| (wire as f64 / features as f64 * 10.0).round() / 10.0)
}

impl Report {
    pub(crate) fn build(
        args: &Args,
        outcomes: &[SessionOutcome],
        reference: &Reference,
        latency: &Histogram,
        published: Option<&crate::publish::Published>,
        load_cores: Option<f64>,
        server: Option<(f64, u64)>,
    ) -> Report {
        let inferred = inferred_schema(reference);
        let rows: Vec<Vec<FieldValue>> = match &inferred {
            Some((_, names)) => reference
                .features
                .iter()
                .map(|feature| values(names, &feature.attributes))
                .collect(),
            None => Vec::new(),
        };
        let mut expected_by_filter: BTreeMap<String, u64> = BTreeMap::new();
        let mut expected = |filter: &FilterSpec| -> Option<u64> {
            let key = format!("{filter:?}");
            if let Some(count) = expected_by_filter.get(&key) {
                return Some(*count);
            }
            let count = match (filter, published) {
                // Ingest mode: an unfiltered session should get everything published in the
                // window; filtered ones have no reference to be judged against.
                (FilterSpec::None, Some(published)) => published
                    .in_window
                    .load(std::sync::atomic::Ordering::Relaxed),
                (_, Some(_)) => return None,
                (filter, None) => match filter {
                    FilterSpec::None => reference.features.len() as u64,
                    FilterSpec::Where(clause) => {
                        let (schema, _) = inferred.as_ref()?;
                        let compiled =
                            WhereClause::compile(schema, clause, FilterLimits::default()).ok()?;
                        rows.iter().filter(|row| compiled.matches(row)).count() as u64
                    }
                    FilterSpec::Envelope([xmin, ymin, xmax, ymax]) => reference
                        .features
                        .iter()
                        .filter(|feature| {
                            feature.x >= *xmin
                                && feature.x <= *xmax
                                && feature.y >= *ymin
                                && feature.y <= *ymax
                        })
                        .count()
                        as u64,
                },
            };
            expected_by_filter.insert(key, count);
            Some(count)
        };
        let connected = outcomes.iter().filter(|outcome| outcome.connected).count();
        let (mut delivered_measured, mut expected_measured, mut over_delivered) =
            (0u64, 0u64, 0u64);
        let mut per_session: Vec<u64> = Vec::new();
        for outcome in outcomes
            .iter()
            .filter(|outcome| outcome.connected && !outcome.changes)
        {
            let Some(filter) = &outcome.filter else {
                continue;
            };
            if let Some(count) = expected(filter) {
                delivered_measured += outcome.features_in_window.min(count);
                expected_measured += count;
                // More than the filter allows means a filter leak, never "extra delivery".
                over_delivered += outcome.features_in_window.saturating_sub(count);
            }
            per_session.push(outcome.features_in_window);
        }
        per_session.sort_unstable();
        let delivered: u64 = outcomes
            .iter()
            .map(|outcome| outcome.features_in_window)
            .sum();
        let frames: u64 = outcomes.iter().map(|outcome| outcome.frames).sum();
        let mut closes: BTreeMap<String, u64> = BTreeMap::new();
        for outcome in outcomes {
            if let Some(code) = outcome.server_close {
                *closes.entry(code.to_string()).or_default() += 1;
            }
            if let Some(err) = &outcome.connect_error {
                let key = if err.contains("HTTP error") {
                    err.clone()
                } else {
                    "connect failed".to_owned()
                };
                *closes.entry(key).or_default() += 1;
            }
        }
        let ratio = if expected_measured > 0 {
            delivered_measured as f64 / expected_measured as f64
        } else {
            0.0
        };
        let json = json!({
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "url": args.url,
            "sessions": args.sessions,
            "connected": connected,
            "window_s": args.duration,
            "features_per_tick_reference": reference_per_tick(reference),
            "delivered_features": delivered,
            "delivered_features_per_s": delivered as f64 / args.duration,
            "frames_per_s": frames as f64 / (args.duration + args.warmup),
            "delivery_ratio": ratio,
            "over_delivered_features": over_delivered,
            "latency_ms": {
                "samples": latency.count(),
                "p50": latency.percentile(0.50),
                "p90": latency.percentile(0.90),
                "p99": latency.percentile(0.99),
                "p99_9": latency.percentile(0.999),
                "max": (latency.max_ms() * 10.0).round() / 10.0,
            },
            "fairness": {
                "min": per_session.first().copied().unwrap_or(0),
                "median": per_session.get(per_session.len() / 2).copied().unwrap_or(0),
            },
            "closes": closes,
            "filter_replies": {
                "ok": outcomes.iter().map(|outcome| outcome.replies_ok).sum::<u64>(),
                "error": outcomes.iter().map(|outcome| outcome.replies_error).sum::<u64>(),
            },
            "published": published.map(|published| json!({
                "sent": published.sent.load(std::sync::atomic::Ordering::Relaxed),
                "in_window": published.in_window.load(std::sync::atomic::Ordering::Relaxed),
                "per_s": published.in_window.load(std::sync::atomic::Ordering::Relaxed) as f64 / args.duration,
                "refused_messages": published.refused_messages.load(std::sync::atomic::Ordering::Relaxed),
                "failed_publishers": published.failed.load(std::sync::atomic::Ordering::Relaxed),
                "ack_latency_ms": args.publish_ack.then(|| {
                    let latency = published.ack_latency.lock().expect("ack latency");
                    json!({
                        "samples": latency.count(),
                        "p50": latency.percentile(0.50),
                        "p99": latency.percentile(0.99),
                        "max": (latency.max_ms() * 10.0).round() / 10.0,
                    })
                }),
            })),
            "bytes": {
                "sessions_deflated": outcomes.iter().filter(|outcome| outcome.deflate).count(),
                "wire": outcomes.iter().map(|outcome| outcome.traffic.wire).sum::<u64>(),
                "messages": outcomes.iter().map(|outcome| outcome.traffic.messages).sum::<u64>(),
                "compressed_messages": outcomes.iter().map(|outcome| outcome.traffic.compressed_messages).sum::<u64>(),
                "wire_per_delivered_feature": wire_per_feature(outcomes),
            },
            "load_tester_cores": load_cores,
            "server_cores": server.map(|(cores, _)| cores),
            "server_rss_mb": server.map(|(_, rss)| rss as f64 / 1_048_576.0),
        });
        Report { json }
    }

    pub(crate) fn print_table(&self) {
        let j = &self.json;
        let latency = &j["latency_ms"];
        eprintln!(
            "sessions            {} connected of {} ({} mode)",
            j["connected"],
            j["sessions"],
            j["mode"].as_str().unwrap_or("")
        );
        if j["published"].is_null() {
            eprintln!("features per tick   {}", j["features_per_tick_reference"]);
        } else {
            eprintln!("published           {}", j["published"]);
        }
        eprintln!(
            "delivered           {:.0} features/s, {:.0} frames/s",
            j["delivered_features_per_s"].as_f64().unwrap_or(0.0),
            j["frames_per_s"].as_f64().unwrap_or(0.0)
        );
        eprintln!(
            "delivery ratio      {:.4}",
            j["delivery_ratio"].as_f64().unwrap_or(0.0)
        );
        eprintln!(
            "latency ms          p50 {} p90 {} p99 {} p99.9 {} max {:.0}",
            latency["p50"],
            latency["p90"],
            latency["p99"],
            latency["p99_9"],
            latency["max"].as_f64().unwrap_or(0.0)
        );
        eprintln!(
            "fairness            min {} median {} features per session",
            j["fairness"]["min"], j["fairness"]["median"]
        );
        eprintln!("closes              {}", j["closes"]);
        eprintln!("filter replies      {}", j["filter_replies"]);
        eprintln!("bytes received      {}", j["bytes"]);
        eprintln!(
            "load tester cores   {:.2}",
            j["load_tester_cores"].as_f64().unwrap_or(f64::NAN)
        );
        if !j["server_cores"].is_null() {
            eprintln!(
                "server              {:.2} cores, {:.0} MB RSS",
                j["server_cores"].as_f64().unwrap_or(0.0),
                j["server_rss_mb"].as_f64().unwrap_or(0.0)
            );
        }
    }

    pub(crate) fn json(&self) -> String {
        self.json.to_string()
    }
}

/// Features per tick: the most frequent count of features sharing one timestamp (robust to a
/// late tick landing in the same millisecond as the next, or a tick cut by the window).
fn reference_per_tick(reference: &Reference) -> usize {
    let mut per_tick: BTreeMap<i64, usize> = BTreeMap::new();
    for feature in &reference.features {
        *per_tick.entry(feature.timestamp as i64).or_default() += 1;
    }
    let mut frequency: BTreeMap<usize, usize> = BTreeMap::new();
    for count in per_tick.values() {
        *frequency.entry(*count).or_default() += 1;
    }
    frequency
        .into_iter()
        .max_by_key(|(count, times)| (*times, *count))
        .map_or(0, |(count, _)| count)
}
