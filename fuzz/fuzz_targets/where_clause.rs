//! The where parser never panics, and whatever compiles prints a canonical form that compiles
//! back to the same tree.
#![no_main]

use featurestream::feature::{Field, FieldType, GeometryType, Schema};
use featurestream::filter::{FilterLimits, WhereClause};
use featurestream::geometry::Wkid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let schema = Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("n", FieldType::Double),
            Field::new("i", FieldType::Integer).nullable(),
            Field::new("s", FieldType::String).nullable(),
            Field::new("b", FieldType::Boolean),
            Field::new("d", FieldType::Date),
        ],
        "OBJECTID",
        "OBJECTID",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .expect("schema");
    if let Ok(clause) = WhereClause::compile(&schema, text, FilterLimits::default()) {
        let again = WhereClause::compile(&schema, clause.canonical(), FilterLimits::default())
            .expect("canonical form compiles");
        assert_eq!(again.predicate(), clause.predicate(), "{}", clause.canonical());
    }
});
