//! Table-driven tests of the where grammar, canonical form, three-valued logic, LIKE, dates,
//! limits, error messages, outFields and the filter-update state machine.

use std::sync::Arc;

use super::*;
use crate::feature::{Field, FieldType, FieldValue, GeometryType, Schema};
use crate::geometry::{EnvelopeInput, SpatialRel, Wkid};

fn schema() -> Schema {
    Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("TRACKID", FieldType::Integer),
            Field::new("name", FieldType::String),
            Field::new("status", FieldType::String).nullable(),
            Field::new("speed", FieldType::Double),
            Field::new("maxSpeed", FieldType::Double),
            Field::new("heading", FieldType::Double),
            Field::new("active", FieldType::Boolean),
            Field::new("parked", FieldType::Boolean),
            Field::new("observed", FieldType::Date),
            Field::new("count", FieldType::SmallInteger).nullable(),
            Field::new("Departure_Airport", FieldType::String),
        ],
        "OBJECTID",
        "TRACKID",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .expect("valid schema")
}

struct Row {
    name: &'static str,
    status: Option<&'static str>,
    speed: f64,
    max_speed: f64,
    active: bool,
    parked: bool,
    observed: i64,
    count: Option<i64>,
    airport: &'static str,
}

const ROWS: [Row; 5] = [
    Row {
        name: "Samantha",
        status: Some("moving"),
        speed: 55.5,
        max_speed: 50.0,
        active: true,
        parked: false,
        observed: 1_704_067_200_000,
        count: Some(3),
        airport: "KZSE",
    },
    Row {
        name: "James",
        status: None,
        speed: 10.0,
        max_speed: 60.0,
        active: false,
        parked: true,
        observed: 1_717_200_000_000,
        count: Some(0),
        airport: "kzse",
    },
    Row {
        name: "Calamity Jane",
        status: Some("stopped"),
        speed: 0.0,
        max_speed: 0.0,
        active: true,
        parked: true,
        observed: 0,
        count: None,
        airport: "KLAX",
    },
    Row {
        name: "O'Brien",
        status: Some(""),
        speed: -5.5,
        max_speed: 100.0,
        active: false,
        parked: false,
        observed: 1_795_521_600_000,
        count: Some(7),
        airport: "",
    },
    Row {
        name: "Zoë_%",
        status: Some("moving"),
        speed: 120.0,
        max_speed: 120.0,
        active: true,
        parked: false,
        observed: 1_795_420_842_492,
        count: Some(1),
        airport: "EGLL",
    },
];

fn attributes(index: usize) -> Vec<FieldValue> {
    let row = &ROWS[index];
    let text = |value: &str| FieldValue::String(Arc::from(value));
    vec![
        FieldValue::Integer(index as i64 + 1),
        FieldValue::Integer(index as i64 + 1),
        text(row.name),
        row.status.map_or(FieldValue::Null, text),
        FieldValue::Double(row.speed),
        FieldValue::Double(row.max_speed),
        FieldValue::Double(90.0 * index as f64),
        FieldValue::Boolean(row.active),
        FieldValue::Boolean(row.parked),
        FieldValue::Date(row.observed),
        row.count.map_or(FieldValue::Null, FieldValue::Integer),
        text(row.airport),
    ]
}

fn compile(clause: &str) -> Result<WhereClause, Vec<FilterError>> {
    WhereClause::compile(&schema(), clause, FilterLimits::default())
}

/// Which of the five rows a clause selects, as a string of 0/1.
fn selection(clause: &str) -> String {
    let compiled = compile(clause).unwrap_or_else(|errors| panic!("{clause}: {errors:?}"));
    (0..ROWS.len())
        .map(|index| {
            if compiled.matches(&attributes(index)) {
                '1'
            } else {
                '0'
            }
        })
        .collect()
}

#[test]
fn evaluation_table() {
    let cases: &[(&str, &str)] = &[
        // Seed 003 examples.
        ("speed > maxSpeed", "10000"),
        ("Departure_Airport='KZSE'", "10000"),
        ("name LIKE '_am%'", "11000"),
        ("name IN ('Bob','Jane','Henry')", "00000"),
        ("name IN ('James','Samantha','Bob')", "11000"),
        ("count IN (404,500,505)", "00000"),
        ("count IN (0, 7)", "01010"),
        ("active", "10101"),
        ("speed < 1000", "11111"),
        // Comparison operators.
        ("speed = 10", "01000"),
        ("speed != 10", "10111"),
        ("speed <> 10", "10111"),
        ("speed < 10", "00110"),
        ("speed <= 10", "01110"),
        ("speed > 10", "10001"),
        ("speed >= 10", "11001"),
        ("speed >= -5.5", "11111"),
        ("speed > -5.5e0", "11101"),
        ("speed < 1.2E2", "11110"),
        ("speed = 120.0", "00001"),
        ("10 < speed", "10001"),
        ("-5.5 = speed", "00010"),
        // Literal with literal.
        ("1=1", "11111"),
        ("1 = 1", "11111"),
        ("1 = 0", "00000"),
        ("'a' < 'b'", "11111"),
        ("TRUE", "11111"),
        ("FALSE", "00000"),
        // Keywords and names are case-insensitive, strings are not.
        ("SPEED > 10 and ACTIVE", "10001"),
        ("\"speed\" > 10", "10001"),
        ("\"SPEED\" > 10", "10001"),
        ("departure_airport = 'kzse'", "01000"),
        (
            "departure_airport = 'KZSE' Or departure_airport = 'kzse'",
            "11000",
        ),
        ("status = 'MOVING'", "00000"),
        ("status = 'moving'", "10001"),
        // Boolean fields.
        ("active AND NOT parked", "10001"),
        ("NOT active", "01010"),
        ("active = TRUE", "10101"),
        ("active = false", "01010"),
        ("active = 1", "10101"),
        ("parked <> 0", "01100"),
        ("active IN (TRUE)", "10101"),
        // A boolean is the small integer the metadata advertises: every clause valid for a
        // small integer holds, with SQL's results for 0 and 1.
        ("active IN (1)", "10101"),
        ("active IN (0, 1)", "11111"),
        ("active IN (0, 2.5)", "01010"),
        ("active NOT IN (0)", "10101"),
        ("active NOT IN (0, 1)", "00000"),
        ("active IN (TRUE, 0)", "11111"),
        ("active <> 1", "01010"),
        ("active < 1", "01010"),
        ("active >= 0.5", "10101"),
        ("active BETWEEN 1 AND 5", "10101"),
        ("active NOT BETWEEN 0 AND 0", "10101"),
        ("speed IN (FALSE)", "00100"),
        ("active AND parked", "00100"),
        ("active OR parked", "11101"),
        // Precedence: comparisons, then NOT, then AND, then OR.
        ("NOT speed = 10 AND active OR parked", "11101"),
        ("NOT (speed = 10 AND active OR parked)", "10011"),
        ("speed > 50 OR speed < 5 AND active", "10101"),
        ("(speed > 50 OR speed < 5) AND active", "10101"),
        ("(speed > 50 OR speed < 5) AND NOT active", "00010"),
        ("speed > 50 OR (speed < 5 AND NOT active)", "10011"),
        ("NOT NOT active", "10101"),
        ("NOT (NOT (active))", "10101"),
        ("((((speed > 10))))", "10001"),
        ("speed > 10 AND speed < 100 AND active", "10000"),
        ("speed = 0 OR speed = 10 OR speed = 120", "01101"),
        // NULL: three-valued logic.
        ("status IS NULL", "01000"),
        ("status IS NOT NULL", "10111"),
        ("status = 'moving' OR status <> 'moving'", "10111"),
        ("NOT (status = 'moving')", "00110"),
        ("NOT (status = 'moving') OR status IS NULL", "01110"),
        ("status = NULL", "00000"),
        ("status <> NULL", "00000"),
        ("NOT (status = NULL)", "00000"),
        ("NULL = NULL", "00000"),
        ("NULL IS NULL", "11111"),
        ("count > 0", "10011"),
        ("NOT (count > 0)", "01000"),
        ("count > 0 OR TRUE", "11111"),
        ("count > 0 AND FALSE", "00000"),
        ("NOT (count > 0 AND TRUE)", "01000"),
        ("count IN (1, NULL)", "00001"),
        ("count NOT IN (1, NULL)", "00000"),
        ("count NOT IN (1, 3)", "01010"),
        ("status NOT IN ('moving')", "00110"),
        ("status LIKE '%'", "10111"),
        ("status NOT LIKE 'x%'", "10111"),
        ("count BETWEEN 0 AND 5", "11001"),
        ("count NOT BETWEEN 0 AND 5", "00010"),
        ("count BETWEEN NULL AND 5", "00000"),
        ("count NOT BETWEEN 5 AND NULL", "11001"),
        // IN lists.
        ("TRACKID IN (1, 3, 5)", "10101"),
        ("TRACKID NOT IN (1, 3, 5)", "01010"),
        ("TRACKID IN (1.0, 2.5)", "10000"),
        ("OBJECTID IN (5,4,3,2,1,1)", "11111"),
        ("speed IN (-5.5, 55.5)", "10010"),
        ("name IN ('O''Brien')", "00010"),
        ("name in ('Zoë_%')", "00001"),
        // LIKE.
        ("name LIKE '%'", "11111"),
        ("name LIKE '%%'", "11111"),
        ("name LIKE ''", "00000"),
        ("status LIKE ''", "00010"),
        ("status LIKE '%'", "10111"),
        ("name LIKE 'James'", "01000"),
        ("name LIKE 'james'", "00000"),
        ("name LIKE 'J%'", "01000"),
        ("name LIKE '%e'", "00100"),
        ("name LIKE '%a%'", "11100"),
        ("name LIKE '_'", "00000"),
        ("name LIKE '_____'", "01001"),
        ("name LIKE '_ames'", "01000"),
        ("name LIKE 'Jame_'", "01000"),
        ("name LIKE '_%_'", "11111"),
        ("name LIKE 'Zo_\\_\\%' ESCAPE '\\'", "00001"),
        ("name LIKE 'Zoë!_!%' ESCAPE '!'", "00001"),
        ("name LIKE '%!%' ESCAPE '!'", "00001"),
        ("name LIKE '%!_%' ESCAPE '!'", "00001"),
        ("name LIKE 'Zo_%'", "00001"),
        ("name LIKE 'Zo__%'", "00001"),
        ("name LIKE 'Zo___'", "00001"),
        ("name LIKE 'Zo____'", "00000"),
        ("name LIKE 'O''%'", "00010"),
        ("name LIKE '%n%a%'", "10000"),
        ("name NOT LIKE '%a%'", "00011"),
        ("name LIKE 'C%J%e'", "00100"),
        ("'abc' LIKE 'a%'", "11111"),
        // BETWEEN.
        ("speed BETWEEN 0 AND 55.5", "11100"),
        ("speed NOT BETWEEN 0 AND 55.5", "00011"),
        ("speed BETWEEN 100 AND 0", "00000"),
        ("speed BETWEEN maxSpeed AND 200", "10101"),
        ("speed BETWEEN 0 AND 60 AND active", "10100"),
        // Field with field of mixed numeric types.
        ("speed >= maxSpeed", "10101"),
        ("count < speed", "11001"),
        ("TRACKID = count", "00000"),
        ("TRACKID < count", "10010"),
        ("OBJECTID = TRACKID", "11111"),
        ("heading > speed", "01111"),
        // Dates.
        ("observed > DATE '2024-01-01'", "01011"),
        ("observed >= DATE '2024-01-01'", "11011"),
        ("observed = TIMESTAMP '2024-01-01 00:00:00'", "10000"),
        ("observed < TIMESTAMP '1970-01-01 00:00:00.001'", "00100"),
        ("observed = 0", "00100"),
        ("observed > 1704067200000", "01011"),
        (
            "observed BETWEEN DATE '2024-01-01' AND DATE '2024-12-31'",
            "11000",
        ),
        ("observed IN (DATE '1970-01-01', 1717200000000)", "01100"),
        ("observed = TIMESTAMP '2026-11-24 12:00:00'", "00010"),
        ("observed > TIMESTAMP '2026-11-23 08:00:42.491'", "00011"),
        ("observed > TIMESTAMP '2026-11-23 08:00:42.492'", "00010"),
        ("observed > 1795420842491.5", "00011"),
    ];
    assert!(cases.len() >= 135, "{} cases", cases.len());
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(clause, expected)| selection(clause) != *expected)
        .map(|(clause, expected)| {
            format!("{clause}: expected {expected}, got {}", selection(clause))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn canonical_form_table() {
    let cases: &[(&str, &str)] = &[
        (
            "NOT a_bool = TRUE AND speed = 2 OR count = 3",
            "((NOT (active = TRUE)) AND (speed = 2)) OR (count = 3)",
        ),
        ("SPEED>10", "speed > 10"),
        ("speed > 10.0", "speed > 10"),
        ("speed>1e1", "speed > 10"),
        ("10 < speed", "speed > 10"),
        ("10 >= speed", "speed <= 10"),
        ("speed != 1.5", "speed <> 1.5"),
        ("speed > 0.1", "speed > 0.1"),
        ("speed > 1e-7", "speed > 1e-7"),
        ("speed > -0", "speed > 0"),
        ("\"NAME\" = 'x'", "name = 'x'"),
        ("name = 'O''Brien'", "name = 'O''Brien'"),
        ("a1 OR a2 OR a3", ""),
        (
            "(active AND parked) AND active",
            "(active) AND (parked) AND (active)",
        ),
        (
            "active AND (parked AND active)",
            "(active) AND (parked) AND (active)",
        ),
        (
            "active or (parked or active)",
            "(active) OR (parked) OR (active)",
        ),
        ("((active))", "active"),
        ("name IN ('b', 'a', 'b')", "name IN ('a', 'b')"),
        ("count in (3, 1.0, NULL, 2)", "count IN (1, 2, 3, NULL)"),
        ("name not like 'a%'", "name NOT LIKE 'a%'"),
        ("name LIKE 'a!%' ESCAPE '!'", "name LIKE 'a\\%' ESCAPE '\\'"),
        (
            "name LIKE 'a#_%' ESCAPE '#'",
            "name LIKE 'a\\_%' ESCAPE '\\'",
        ),
        ("name LIKE 'a%%b'", "name LIKE 'a%b'"),
        ("status is not null", "status IS NOT NULL"),
        ("speed between 1 and 2", "speed BETWEEN 1 AND 2"),
        (
            "observed > DATE '2024-01-01'",
            "observed > TIMESTAMP '2024-01-01 00:00:00'",
        ),
        (
            "observed > 1704067200000",
            "observed > TIMESTAMP '2024-01-01 00:00:00'",
        ),
        (
            "observed = TIMESTAMP '2024-01-01 00:00:00.5'",
            "observed = TIMESTAMP '2024-01-01 00:00:00.500'",
        ),
        ("1=1", "1 = 1"),
        // Simplified: what costs nothing to rewrite is rewritten, so that clauses meaning the
        // same share one canonical form (and one group).
        ("not not active", "active"),
        ("NOT NOT NOT active", "NOT (active)"),
        ("NOT (status IS NULL)", "status IS NOT NULL"),
        ("NOT name IN ('a')", "name NOT IN ('a')"),
        ("NOT (name NOT LIKE 'a%')", "name LIKE 'a%'"),
        ("NOT speed BETWEEN 1 AND 2", "speed NOT BETWEEN 1 AND 2"),
        ("NOT (speed > 1)", "NOT (speed > 1)"),
        (
            "(speed > 1 OR (speed < 0 OR count = 1)) AND (active AND parked)",
            "((speed > 1) OR (speed < 0) OR (count = 1)) AND (active) AND (parked)",
        ),
    ];
    for (clause, expected) in cases {
        let clause = clause
            .replace("a_bool", "active")
            .replace("a1", "active")
            .replace("a2", "parked")
            .replace("a3", "active");
        let compiled = compile(&clause).unwrap_or_else(|errors| panic!("{clause}: {errors:?}"));
        if !expected.is_empty() {
            assert_eq!(compiled.canonical(), *expected, "{clause}");
        }
        let reparsed = compile(compiled.canonical()).expect("canonical form re-parses");
        assert_eq!(reparsed.predicate(), compiled.predicate(), "{clause}");
        assert_eq!(reparsed.canonical(), compiled.canonical(), "{clause}");
    }
}

#[test]
fn quoted_field_names_that_are_keywords_round_trip() {
    let schema = Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("order", FieldType::Integer),
            Field::new("two_words", FieldType::String),
            Field::new("date", FieldType::Date),
        ],
        "OBJECTID",
        "OBJECTID",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .unwrap();
    let clause = "\"ORDER\" > 1 AND \"two_words\" = 'x' AND \"Date\" < 5";
    let compiled =
        WhereClause::compile(&schema, clause, FilterLimits::default()).expect("compiles");
    assert_eq!(
        compiled.canonical(),
        "(\"order\" > 1) AND (two_words = 'x') AND (\"date\" < TIMESTAMP '1970-01-01 00:00:00.005')"
    );
    let reparsed =
        WhereClause::compile(&schema, compiled.canonical(), FilterLimits::default()).unwrap();
    assert_eq!(reparsed.predicate(), compiled.predicate());
}

fn error_messages(clause: &str) -> Vec<String> {
    match compile(clause) {
        Ok(compiled) => panic!("{clause} compiled to {}", compiled.canonical()),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn error_table() {
    let unknown = |name: &str| {
        format!("The field \"{name}\" does not exist in this Stream Service's schema.")
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("no_such_field_xyz > 1", vec![unknown("no_such_field_xyz")]),
        ("foo = 1 AND bar = 'x' OR speed > baz", vec![unknown("foo"), unknown("bar"), unknown("baz")]),
        ("\"spe ed\" > 1", vec![unknown("spe ed")]),
        ("name = 5", vec!["Invalid where clause: cannot compare field \"name\" (string) with number 5 at position 7.".into()]),
        ("speed = 'fast'", vec!["Invalid where clause: cannot compare field \"speed\" (number) with string 'fast' at position 8.".into()]),
        ("speed > name", vec!["Invalid where clause: cannot compare field \"speed\" (number) with field \"name\" (string) at position 8.".into()]),
        ("speed LIKE '5%'", vec!["Invalid where clause: LIKE needs a string, but found field \"speed\" (number) at position 0.".into()]),
        ("observed > '2024-01-01'", vec!["Invalid where clause: cannot compare field \"observed\" (date) with string '2024-01-01' at position 11.".into()]),
        ("observed > DATE '2024-02-30'", vec!["Invalid where clause: malformed DATE literal '2024-02-30' (expected 'YYYY-MM-DD') at position 11.".into()]),
        ("observed > TIMESTAMP 'yesterday'", vec!["Invalid where clause: malformed TIMESTAMP literal 'yesterday' (expected 'YYYY-MM-DD HH:MM:SS[.fff]') at position 11.".into()]),
        ("speed", vec!["Invalid where clause: expected a comparison after field \"speed\" (number); only a boolean can stand alone at position 0.".into()]),
        ("name IN ('a', 1)", vec!["Invalid where clause: cannot compare field \"name\" (string) with number 1 at position 14.".into()]),
        ("name IN (speed)", vec!["Invalid where clause: IN lists take values, not field \"speed\" (number) at position 9.".into()]),
        ("name = 'abc", vec!["Invalid where clause: unterminated string starting at position 7.".into()]),
        ("(speed > 1", vec!["Invalid where clause: unbalanced parenthesis at position 0.".into()]),
        ("speed > 1)", vec!["Invalid where clause: unbalanced parenthesis at position 9.".into()]),
        ("((speed > 1) AND active", vec!["Invalid where clause: unbalanced parenthesis at position 0.".into()]),
        ("count IN ()", vec!["Invalid where clause: empty IN list at position 9.".into()]),
        ("speed > 1 speed", vec!["Invalid where clause: expected AND, OR or end of clause, found \"speed\" at position 10.".into()]),
        ("speed >", vec!["Invalid where clause: expected a field name or a value, found end of clause at position 7.".into()]),
        ("speed > AND", vec!["Invalid where clause: expected a field name or a value, found keyword AND at position 8.".into()]),
        ("speed == 1", vec!["Invalid where clause: expected a field name or a value, found \"=\" at position 7.".into()]),
        ("speed IS 1", vec!["Invalid where clause: expected NULL, found number 1 at position 9.".into()]),
        ("speed NOT 1", vec!["Invalid where clause: expected IN, LIKE or BETWEEN after NOT, found number 1 at position 10.".into()]),
        ("count IN 1", vec!["Invalid where clause: expected \"(\" after IN, found number 1 at position 9.".into()]),
        ("count IN (1 2)", vec!["Invalid where clause: expected \",\" or \")\", found number 2 at position 12.".into()]),
        ("speed BETWEEN 1 OR 2", vec!["Invalid where clause: expected AND, found \"OR\" at position 16.".into()]),
        ("name LIKE 'a' ESCAPE 'ab'", vec!["Invalid where clause: ESCAPE takes exactly one character, found 'ab' at position 21.".into()]),
        ("name LIKE 'a!' ESCAPE '!'", vec!["Invalid where clause: LIKE pattern 'a!' ends with its escape character at position 10.".into()]),
        ("name LIKE speed", vec!["Invalid where clause: LIKE needs a quoted string pattern at position 10.".into()]),
        ("", vec![]),
        ("speed > 10abc", vec!["Invalid where clause: \"10abc\" is not a valid number at position 8.".into()]),
        ("speed > 1 AND", vec!["Invalid where clause: expected a field name or a value, found end of clause at position 13.".into()]),
        ("speed ! 1", vec!["Invalid where clause: expected \"!=\", found \"!\" at position 6.".into()]),
        ("speed > 1; DROP TABLE x", vec!["Invalid where clause: expected an operand, operator or keyword, found \";\" at position 9.".into()]),
        ("NULL IN (1)", vec!["Invalid where clause: NULL cannot be tested with IN; use IS NULL at position 0.".into()]),
        ("active IN ('1')", vec!["Invalid where clause: cannot compare field \"active\" (boolean) with string '1' at position 11.".into()]),
        ("active IN (DATE '2024-01-01')", vec!["Invalid where clause: cannot compare field \"active\" (boolean) with date TIMESTAMP '2024-01-01 00:00:00' at position 11.".into()]),
    ];
    for (clause, expected) in cases {
        if clause.is_empty() {
            continue;
        }
        assert_eq!(error_messages(clause), expected, "{clause}");
    }
}

#[test]
fn errors_carry_field_names_and_positions() {
    let errors = compile("speed > 1 AND nope = 2 AND other IS NULL").unwrap_err();
    assert_eq!(
        errors,
        vec![
            FilterError::UnknownField {
                name: "nope".into(),
                position: 14
            },
            FilterError::UnknownField {
                name: "other".into(),
                position: 27
            },
        ]
    );
}

#[test]
fn limits_give_clear_errors() {
    let limits = FilterLimits::default();
    let long = format!("name = '{}'", "x".repeat(16 * 1024));
    assert_eq!(
        error_messages(&long),
        vec![format!(
            "Invalid where clause: the clause is {} bytes long; at most 16384 bytes are allowed.",
            long.len()
        )]
    );
    let deep = format!("{}active{}", "(".repeat(65), ")".repeat(65));
    assert_eq!(
        error_messages(&deep),
        vec!["Invalid where clause: nesting deeper than 64 levels at position 64.".to_owned()]
    );
    let ok_deep = format!("{}active{}", "(".repeat(64), ")".repeat(64));
    assert!(compile(&ok_deep).is_ok());
    let nots = format!("{}active", "NOT ".repeat(65));
    assert_eq!(
        error_messages(&nots),
        vec!["Invalid where clause: nesting deeper than 64 levels at position 256.".to_owned()]
    );
    let items: Vec<String> = (0..1001).map(|value| value.to_string()).collect();
    let in_list = format!("count IN ({})", items.join(","));
    let message = error_messages(&in_list);
    assert_eq!(
        message,
        vec![format!(
            "Invalid where clause: IN list longer than 1000 items at position {}.",
            in_list.len() - 5
        )]
    );
    let items: Vec<String> = (0..1000).map(|value| value.to_string()).collect();
    assert!(compile(&format!("count IN ({})", items.join(","))).is_ok());
    // A long flat chain is not nesting, but each link is a condition evaluated per feature:
    // past the node limit it is refused, with the count.
    let chain = vec!["active"; 1400].join(" AND ");
    assert!(chain.len() < limits.max_clause_bytes);
    assert_eq!(
        error_messages(&chain),
        vec!["Invalid where clause: 1401 conditions after simplification; at most 512 are allowed (use IN for lists of values).".to_owned()]
    );
    let chain = vec!["active"; 511].join(" AND ");
    assert!(compile(&chain).unwrap().matches(&attributes(0)));
    // The attack clause of 62 ORed comparisons under 30 NOTs each costs 63 conditions, the
    // same as without the NOTs, and shares its canonical form.
    let attack = (1..=62)
        .map(|n| format!("{}speed < -{n}", "NOT ".repeat(30)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let plain = (1..=62)
        .map(|n| format!("speed < -{n}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let (attack, plain) = (compile(&attack).unwrap(), compile(&plain).unwrap());
    assert_eq!(attack.predicate().node_count(), 63);
    assert_eq!(attack.canonical(), plain.canonical());
    // Unclosed parentheses at the depth limit do not overflow the stack either.
    assert!(compile(&"(".repeat(10_000)).is_err());
    assert!(compile(&"NOT ".repeat(4000)).is_err());
}

#[test]
fn evaluation_does_not_allocate() {
    let clause =
        compile("name LIKE '%a%' AND count IN (1, 3, NULL) OR status IS NULL OR speed > maxSpeed")
            .unwrap();
    let row = attributes(0);
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            std::hint::black_box(clause.matches(std::hint::black_box(&row)));
        }
    });
    assert_eq!(info.count_total, 0);
}

#[test]
fn out_fields_parse_and_always_include_ids() {
    let schema = schema();
    assert_eq!(OutFields::parse_list(&schema, "*").unwrap(), OutFields::All);
    assert_eq!(OutFields::parse_list(&schema, "").unwrap(), OutFields::All);
    assert_eq!(
        OutFields::parse_list(&schema, " Speed , NAME,speed").unwrap(),
        OutFields::Only {
            indexes: vec![0, 1, 2, 4],
            text: "speed,name".into()
        }
    );
    assert_eq!(
        OutFields::parse_names(&schema, &["heading".into()]).unwrap(),
        OutFields::Only {
            indexes: vec![0, 1, 6],
            text: "heading".into()
        }
    );
    assert_eq!(
        OutFields::parse_list(&schema, "speed,Invalid_Field_Name, nope").unwrap_err(),
        vec![
            FilterError::UnknownField {
                name: "Invalid_Field_Name".into(),
                position: 6
            },
            FilterError::UnknownField {
                name: "nope".into(),
                position: 26
            },
        ]
    );
    assert_eq!(
        FilterError::UnknownField {
            name: "Invalid_Field_Name".into(),
            position: 6
        }
        .to_string(),
        "The field \"Invalid_Field_Name\" does not exist in this Stream Service's schema."
    );
}

fn parts(
    where_clause: Patch<String>,
    geometry: Patch<GeometryInput>,
    out_fields: Patch<OutFieldsInput>,
) -> FilterUpdate {
    FilterUpdate::Parts {
        where_clause,
        geometry,
        spatial_rel: Patch::Keep,
        out_fields,
    }
}

fn envelope(corners: [f64; 4], wkid: Option<i64>) -> GeometryInput {
    EnvelopeInput { corners, wkid }
}

#[test]
fn filter_state_merges_parts_as_documented() {
    let schema = schema();
    let limits = FilterLimits::default();
    let mut state = FilterState::default();
    let apply = |state: &mut FilterState, update| state.apply(update, &schema, Wkid::Wgs84, limits);
    assert!(state.is_empty());

    apply(
        &mut state,
        parts(Patch::Set("speed > 10".into()), Patch::Keep, Patch::Keep),
    )
    .unwrap();
    assert_eq!(
        state.filter.where_clause.as_ref().unwrap().text(),
        "speed > 10"
    );

    // Absent keys leave parts unchanged.
    let box_input = envelope([-104.0, 35.6, -94.32, 41.0], None);
    apply(
        &mut state,
        parts(Patch::Keep, Patch::Set(box_input.clone()), Patch::Keep),
    )
    .unwrap();
    apply(
        &mut state,
        parts(
            Patch::Keep,
            Patch::Keep,
            Patch::Set(OutFieldsInput::List("speed".into())),
        ),
    )
    .unwrap();
    assert_eq!(
        state.filter.where_clause.as_ref().unwrap().text(),
        "speed > 10"
    );
    assert_eq!(state.filter.geometry.as_ref().unwrap().input, box_input);
    assert_eq!(state.out_fields.as_ref().unwrap().text(), "speed");

    // `{}` changes nothing.
    let before = state.clone();
    apply(&mut state, FilterUpdate::unchanged()).unwrap();
    assert_eq!(state, before);

    // An update with any error changes nothing and reports every problem.
    let errors = apply(
        &mut state,
        parts(
            Patch::Set("nope = 1".into()),
            Patch::Set(envelope([5.0, 0.0, 1.0, 1.0], None)),
            Patch::Set(OutFieldsInput::List("bad".into())),
        ),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(state, before);
    let errors = apply(
        &mut state,
        parts(
            Patch::Set("speed > 1".into()),
            Patch::Keep,
            Patch::Invalid(FilterError::Malformed("x".into())),
        ),
    )
    .unwrap_err();
    assert_eq!(errors, vec![FilterError::Malformed("x".into())]);
    assert_eq!(state, before);

    // `null` clears one part.
    apply(&mut state, parts(Patch::Clear, Patch::Keep, Patch::Keep)).unwrap();
    assert!(state.filter.where_clause.is_none());
    assert!(state.filter.geometry.is_some());

    // `{"filter": null}` clears everything.
    apply(&mut state, FilterUpdate::ClearAll).unwrap();
    assert!(state.is_empty());

    // outFields `*` is the same as no outFields filter.
    apply(
        &mut state,
        parts(
            Patch::Keep,
            Patch::Keep,
            Patch::Set(OutFieldsInput::List("*".into())),
        ),
    )
    .unwrap();
    assert!(state.is_empty());
}

#[test]
fn envelope_in_other_reference_is_projected_and_spatial_rel_kept() {
    let schema = schema();
    let mut state = FilterState::default();
    let update = FilterUpdate::Parts {
        where_clause: Patch::Keep,
        geometry: Patch::Set(envelope([-117.26, 33.98, -117.17, 34.02], Some(4326))),
        spatial_rel: Patch::Set(SpatialRel::EnvelopeIntersects),
        out_fields: Patch::Keep,
    };
    state
        .apply(
            update,
            &schema,
            Wkid::WebMercator(102100),
            FilterLimits::default(),
        )
        .unwrap();
    let geometry = state.filter.geometry.as_ref().unwrap();
    assert!(
        (geometry.envelope.xmin() - -13_053_323.490).abs() < 0.01,
        "{:?}",
        geometry.envelope
    );
    assert_eq!(geometry.relation, SpatialRel::EnvelopeIntersects);
    let unsupported = FilterUpdate::Parts {
        where_clause: Patch::Keep,
        geometry: Patch::Set(envelope([0.0, 0.0, 1.0, 1.0], Some(2193))),
        spatial_rel: Patch::Keep,
        out_fields: Patch::Keep,
    };
    let errors = state
        .apply(
            unsupported,
            &schema,
            Wkid::WebMercator(102100),
            FilterLimits::default(),
        )
        .unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "Invalid geometry: Unsupported spatial reference wkid 2193; supported wkids: 4326, 3857, 102100, 102113, 900913."
    );
}

#[test]
fn feature_filter_combines_where_and_envelope() {
    let schema = schema();
    let input = envelope([-118.0, 33.0, -117.0, 35.0], None);
    let filter = FeatureFilter::compile(
        &schema,
        Some("speed > 10"),
        Some(&input),
        SpatialRel::Intersects,
        Wkid::Wgs84,
        FilterLimits::default(),
    )
    .unwrap();
    let feature = |index: usize, x: f64| crate::feature::Feature {
        attributes: attributes(index),
        geometry: crate::geometry::Geometry::Point { x, y: 34.0 },
    };
    let inside_fast = feature(0, -117.5);
    let outside_fast = feature(0, -116.0);
    let inside_slow = feature(1, -117.5);
    assert!(filter.matches(&inside_fast, &inside_fast.geometry));
    assert!(!filter.matches(&outside_fast, &outside_fast.geometry));
    assert!(!filter.matches(&inside_slow, &inside_slow.geometry));
}
