//! Where-clause evaluation, compile time and projection.
//! Run: `cargo bench --bench filter`.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use featurestream::feature::{Field, FieldType, FieldValue, GeometryType, Schema};
use featurestream::filter::{FilterLimits, WhereClause};
use featurestream::geometry::Wkid;

fn schema() -> Schema {
    Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("TRACKID", FieldType::Integer),
            Field::new("name", FieldType::String),
            Field::new("status", FieldType::String).nullable(),
            Field::new("speed", FieldType::Double),
            Field::new("heading", FieldType::Double),
            Field::new("active", FieldType::Boolean),
        ],
        "OBJECTID",
        "TRACKID",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .expect("schema")
}

fn row() -> Vec<FieldValue> {
    vec![
        FieldValue::Integer(17),
        FieldValue::Integer(3),
        FieldValue::String(Arc::from("vehicle-3")),
        FieldValue::Null,
        FieldValue::Double(63.2),
        FieldValue::Double(181.0),
        FieldValue::Boolean(true),
    ]
}

const SIMPLE: &str = "speed > 50";
const COMPLEX: &str = "(speed > 50 AND name LIKE 'vehicle-%') OR (TRACKID IN (1, 3, 5, 7, 11) AND status IS NULL AND heading <= 270)";

fn benches(criterion: &mut Criterion) {
    let schema = schema();
    let row = row();
    let simple = WhereClause::compile(&schema, SIMPLE, FilterLimits::default()).expect("simple");
    let complex = WhereClause::compile(&schema, COMPLEX, FilterLimits::default()).expect("complex");
    criterion.bench_function("where/evaluate simple (speed > 50)", |bencher| {
        bencher.iter(|| simple.matches(black_box(&row)))
    });
    criterion.bench_function("where/evaluate complex (5 predicates)", |bencher| {
        bencher.iter(|| complex.matches(black_box(&row)))
    });
    criterion.bench_function("where/compile complex", |bencher| {
        bencher.iter(|| WhereClause::compile(&schema, black_box(COMPLEX), FilterLimits::default()))
    });
    criterion.bench_function("projection/4326 to 3857 one point", |bencher| {
        bencher.iter(|| {
            Wkid::Wgs84.project(
                Wkid::WebMercator(3857),
                black_box(-117.1956),
                black_box(34.0564),
            )
        })
    });
}

criterion_group!(filter, benches);
criterion_main!(filter);
