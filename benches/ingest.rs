//! Server CPU per ingested observation against the floor of merely parsing the same bytes:
//! `serde_json` into a `Value`, versus what ingest does (parse, validate against the schema,
//! record in the latest state, encode once for a view), over one broadcast-sized message of
//! 1,000 Esri JSON observations (issue 14's target: at most 2x).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use featurestream::feature::GeometryType;
use featurestream::filter::OutFields;
use featurestream::geometry::Wkid;
use featurestream::ingest::parse_document;
use featurestream::latest::LatestState;
use featurestream::protocol::feature_result::{FeatureEncoder, View};
use featurestream::service::vehicles_schema;
use featurestream::source::Batch;

/// A message of `count` observations, as the load tester's publishers write them.
fn message(count: usize) -> String {
    let features: Vec<String> = (0..count)
        .map(|track| {
            format!(
                r#"{{"attributes":{{"TRACKID":{track},"name":"vehicle-{track}","route":"Redlands Blvd","status":"moving","speed":{speed},"heading":{heading},"active":true,"observed":{observed}}},"geometry":{{"x":{x},"y":{y}}}}}"#,
                speed = 40.0 + (track % 50) as f64 * 0.7,
                heading = (track * 7 % 360) as f64 + 0.5,
                observed = 1_795_420_842_492i64 + track as i64,
                x = -117.2 + (track % 1000) as f64 * 1e-4,
                y = 34.05 + (track / 1000) as f64 * 1e-4,
            )
        })
        .collect();
    format!("[{}]", features.join(","))
}

fn benches(criterion: &mut Criterion) {
    let schema = vehicles_schema(GeometryType::Point, Wkid::Wgs84);
    let text = message(1000);
    let mut group = criterion.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("serde_json Value parse, 1000 observations", |bencher| {
        bencher.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(&text))))
    });
    let encoder = FeatureEncoder::new(&schema, &View::new(Wkid::Wgs84, OutFields::All));
    let mut latest = LatestState::new(&schema);
    let mut now = 1_795_420_842_492i64;
    group.bench_function(
        "parse, validate, record, encode once: 1000 observations",
        |bencher| {
            bencher.iter(|| {
                now += 1;
                let ingested =
                    parse_document(black_box(&text), &schema, now, 0, 10_000).expect("a document");
                assert!(ingested.rejected.is_empty());
                let mut batch = Batch {
                    features: ingested.features,
                    observed_ms: now,
                };
                latest.record(
                    &mut batch,
                    featurestream::latest::Received::Here(now),
                    usize::MAX,
                );
                black_box(encoder.encode_batch(&batch.features))
            })
        },
    );
    group.finish();
}

criterion_group!(ingest, benches);
criterion_main!(ingest);
