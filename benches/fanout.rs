//! Batch encoding per view and fan-out of one batch to many sessions.
//! Run: `cargo bench --bench fanout`.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler};
use criterion::{Criterion, criterion_group, criterion_main};
use featurestream::broker::queue::OutboundQueue;
use featurestream::broker::subscription::{Deflate, Subscription, WireMode};
use featurestream::broker::{Fanout, SessionEnded, SessionId, Subscriber};
use featurestream::feature::GeometryType;
use featurestream::filter::{FilterLimits, FilterState, FilterUpdate, OutFields, Patch};
use featurestream::geometry::{EnvelopeInput, Wkid};
use featurestream::protocol::feature_result::{FeatureEncoder, View};
use featurestream::service::vehicles_schema;
use featurestream::simulator::Fleet;
use featurestream::source::Batch;

struct Sink;
impl Actor for Sink {
    type Context = Context<Sink>;
}
impl Handler<SessionEnded> for Sink {
    type Result = ();
    fn handle(&mut self, _: SessionEnded, _: &mut Context<Sink>) {}
}

fn batch(features: usize) -> Batch {
    let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
    let mut fleet = Fleet::new(schema, features, 42, 4);
    fleet.step(1.0, 0);
    fleet.step(1.0, 1_795_420_842_492)
}

/// Session `index` of `groups` distinct subscriptions: even groups a where clause, odd groups
/// an envelope covering about 1 % of the routes' extent (some of which every group shares).
fn subscription(group: usize, groups: usize) -> Subscription {
    let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
    let mut state = FilterState::default();
    if groups > 1 {
        let (where_clause, geometry) = if group.is_multiple_of(2) {
            (
                Patch::Set(format!(
                    "speed > {}",
                    20.0 + (group as f64) * 100.0 / groups as f64
                )),
                Patch::Keep,
            )
        } else {
            let step = group as f64 / groups as f64;
            let (x, y) = (-117.30 + 0.198 * step, 34.03 + 0.081 * ((step * 7.0) % 1.0));
            (
                Patch::Keep,
                Patch::Set(EnvelopeInput {
                    corners: [x, y, x + 0.022, y + 0.009],
                    wkid: Some(4326),
                }),
            )
        };
        let update = FilterUpdate::Parts {
            where_clause,
            geometry,
            spatial_rel: Patch::Keep,
            out_fields: Patch::Keep,
        };
        state
            .apply(update, &schema, Wkid::Wgs84, FilterLimits::default())
            .expect("valid");
    }
    Subscription::new(WireMode::Custom(Deflate::Off), Wkid::Wgs84, &state, &schema)
}

fn benches(criterion: &mut Criterion) {
    let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
    let batch_3000 = batch(3000);
    for (label, wkid) in [("4326", Wkid::Wgs84), ("3857", Wkid::WebMercator(3857))] {
        let encoder = FeatureEncoder::new(&schema, &View::new(wkid, OutFields::All));
        criterion.bench_function(&format!("encode/3000 features, view {label}"), |bencher| {
            bencher.iter(|| encoder.encode_batch(black_box(&batch_3000.features)))
        });
    }

    // Compressing a group's custom-mode frame once (permessage-deflate): the frame of 3,000
    // features (the Esri sample's tick) and of 100.
    for features in [3000, 100, 10] {
        let encoded = FeatureEncoder::new(&schema, &View::new(Wkid::Wgs84, OutFields::All))
            .encode_batch(&batch(features).features);
        let frame = encoded.custom_frame(featurestream::protocol::feature_result::Selection::All);
        for level in [1, 2, 6] {
            let compressed = featurestream::protocol::deflate::compress_frames(&frame, level);
            println!(
                "deflate level {level}, {features} features: {} -> {} bytes ({:.1} %)",
                frame.len(),
                compressed.len(),
                100.0 * compressed.len() as f64 / frame.len() as f64
            );
            criterion.bench_function(
                &format!("deflate/{features} features, level {level}"),
                |bencher| {
                    bencher.iter(|| {
                        featurestream::protocol::deflate::compress_frames(black_box(&frame), level)
                    })
                },
            );
        }
    }

    let system = actix::System::new();
    let sink = system.block_on(async { Sink.start() });
    let batch_100 = batch(100);
    for groups in [1, 100, 10_000] {
        let mut fanout = Fanout::new(schema.clone(), Duration::from_secs(3600), usize::MAX);
        let mut queues = Vec::new();
        for session in 0..10_000 {
            let queue = OutboundQueue::new(1 << 30);
            queues.push(queue.clone());
            let subscriber = Subscriber {
                id: SessionId(session as u64),
                queue,
                control: sink.clone().recipient(),
            };
            fanout.subscribe(subscriber, subscription(session % groups, groups));
        }
        criterion.bench_function(
            &format!("fanout/100 features to 10000 sessions in {groups} groups"),
            |bencher| {
                bencher.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let mut batch = Batch {
                            features: batch_100.features.clone(),
                            observed_ms: batch_100.observed_ms,
                        };
                        let started = Instant::now();
                        black_box(
                            fanout.publish(&mut batch, featurestream::latest::Received::Here(0)),
                        );
                        total += started.elapsed();
                        queues.iter().for_each(|queue| queue.clear());
                    }
                    total
                })
            },
        );
    }
    drop(Arc::new(()));
}

criterion_group!(fanout, benches);
criterion_main!(fanout);
