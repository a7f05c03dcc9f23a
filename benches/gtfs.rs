//! What one GTFS-Realtime poll costs the server once the feed's bytes have arrived: decoding
//! a VehiclePositions feed of 10,000 vehicles (`prost`), mapping each to an observation and
//! validating them against the GTFS schema, as `feeds::gtfs_realtime` does every interval.
//! Recording them is what any 10,000-observation batch costs (`benches/ingest.rs`).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use featurestream::feeds::gtfs_realtime::{
    FeedEntity, FeedHeader, FeedMessage, Mapping, Position, TripDescriptor, VehicleDescriptor,
    VehiclePosition, document, ingest,
};
use prost::Message;

/// A feed of `count` vehicles, as an agency serves it.
fn feed(count: usize) -> Vec<u8> {
    let entity = (0..count)
        .map(|index| FeedEntity {
            id: Some(format!("entity-{index}")),
            is_deleted: None,
            vehicle: Some(VehiclePosition {
                trip: Some(TripDescriptor {
                    trip_id: Some(format!("trip-{}", index * 7)),
                    start_date: Some("20261207".into()),
                    route_id: Some(format!("route-{}", index % 150)),
                    direction_id: Some((index % 2) as u32),
                }),
                position: Some(Position {
                    latitude: Some(40.6 + (index % 100) as f32 * 1e-3),
                    longitude: Some(-73.9 - (index / 100) as f32 * 1e-3),
                    bearing: Some((index % 360) as f32),
                    speed: Some(8.0 + (index % 10) as f32),
                }),
                current_stop_sequence: Some((index % 40) as u32),
                current_status: Some(2),
                timestamp: Some(1_800_000_000 + (index % 30) as u64),
                stop_id: Some(format!("stop-{}", index % 3000)),
                vehicle: Some(VehicleDescriptor {
                    id: Some(format!("vehicle-{index}")),
                    label: Some(format!("{index}")),
                    license_plate: None,
                }),
                occupancy_status: Some((index % 6) as i32),
            }),
        })
        .collect();
    FeedMessage {
        header: Some(FeedHeader {
            gtfs_realtime_version: Some("2.0".into()),
            incrementality: Some(0),
            timestamp: Some(1_800_000_030),
        }),
        entity,
    }
    .encode_to_vec()
}

fn benches(criterion: &mut Criterion) {
    let schema = featurestream::service::gtfs_realtime_schema();
    let bytes = feed(10_000);
    let mapping = Mapping::for_schema(&schema);
    let mut group = criterion.benchmark_group("gtfs_realtime");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("decode_only", |bench| {
        bench.iter(|| FeedMessage::decode(black_box(bytes.as_slice())).expect("a feed"))
    });
    group.bench_function("decode_and_map", |bench| {
        bench.iter(|| {
            let decoded = FeedMessage::decode(black_box(bytes.as_slice())).expect("a feed");
            document(&decoded, &mapping)
        })
    });
    group.bench_function("poll_of_10000_vehicles", |bench| {
        bench.iter(|| {
            let decoded = FeedMessage::decode(black_box(bytes.as_slice())).expect("a feed");
            let (text, vehicles, _) = document(&decoded, &mapping);
            let ingested = ingest(&text, vehicles, &schema, 1_800_000_040_000).expect("valid");
            assert_eq!(ingested.features.len(), 10_000);
            black_box(ingested)
        })
    });
    group.finish();
    println!("feed of 10,000 vehicles: {} bytes", bytes.len());
}

criterion_group!(gtfs, benches);
criterion_main!(gtfs);
