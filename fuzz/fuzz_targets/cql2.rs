//! CQL2 text (both dialects) never panics; what it translates to is where text the where
//! engine either compiles or refuses with an error, never a panic; an envelope it yields is
//! ordered. RFC 3339 date-times never panic and round-trip when they parse.
#![no_main]

use featurestream::feature::{Field, FieldType, GeometryType, Schema};
use featurestream::filter::cql2::{Dialect, translate_dialect};
use featurestream::filter::{FilterLimits, WhereClause, format_rfc3339, parse_rfc3339};
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
    for dialect in [Dialect::Cql2Text, Dialect::CqlText] {
        if let Ok(filter) = translate_dialect(text, "geometry", dialect) {
            if let Some(clause) = &filter.where_clause {
                let _ = WhereClause::compile(&schema, clause, FilterLimits::default());
            }
            if let Some([xmin, ymin, xmax, ymax]) = filter.envelope {
                assert!(xmin <= xmax && ymin <= ymax, "{text}");
            }
        }
    }
    if let Some(epoch_ms) = parse_rfc3339(text) {
        assert_eq!(parse_rfc3339(&format_rfc3339(epoch_ms)), Some(epoch_ms), "{text}");
    }
});
