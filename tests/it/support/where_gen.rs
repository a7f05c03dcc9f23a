//! A random generator of well-typed where clauses over `schema()`, emitting each clause in
//! featurestream's dialect and in SQLite's, plus random rows. Used by the SQLite differential
//! test and the property tests.
//!
//! Excluded from generation, because SQLite does not share ArcGIS's meaning for them:
//! comparisons across types (SQLite orders any number before any text instead of refusing),
//! and date literals (SQLite has no date type: we generate
//! `TIMESTAMP '...'` for featurestream and the same instant as integer milliseconds for SQLite).

use std::sync::Arc;

use featurestream::feature::{Field, FieldType, FieldValue, GeometryType, Schema};
use featurestream::geometry::Wkid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn schema() -> Schema {
    Schema::new(
        vec![
            Field::new("OBJECTID", FieldType::ObjectId),
            Field::new("i1", FieldType::Integer).nullable(),
            Field::new("i2", FieldType::Integer),
            Field::new("d1", FieldType::Double).nullable(),
            Field::new("d2", FieldType::Double),
            Field::new("s1", FieldType::String).nullable(),
            Field::new("s2", FieldType::String),
            Field::new("b1", FieldType::Boolean),
            Field::new("dt", FieldType::Date).nullable(),
        ],
        "OBJECTID",
        "OBJECTID",
        GeometryType::Point,
        Wkid::Wgs84,
    )
    .expect("valid schema")
}

const INTS: [i64; 7] = [-3, -1, 0, 1, 2, 3, 1000];
const DOUBLES: [f64; 8] = [-1.5, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 1e-3];
const STRINGS: [&str; 14] = [
    "", "a", "A", "ab", "abc", "aBc", "b%", "a_c", "é", "éa", "Zoë", "a'b", "%", "ba",
];
const DATES: [i64; 5] = [
    0,
    86_400_000,
    1_704_067_200_000,
    1_704_067_200_500,
    1_795_420_842_492,
];
const PATTERN_PIECES: [&str; 12] = [
    "%", "_", "a", "b", "c", "é", "A", "!%", "!_", "'", "Zo", "%a",
];

fn pick<T: Copy>(rng: &mut StdRng, values: &[T]) -> T {
    values[rng.random_range(0..values.len())]
}

/// One random row, as attributes in schema order.
pub fn random_row(rng: &mut StdRng, object_id: i64) -> Vec<FieldValue> {
    let nullable = |rng: &mut StdRng, value: FieldValue| {
        if rng.random_bool(0.2) {
            FieldValue::Null
        } else {
            value
        }
    };
    let text = |value: &str| FieldValue::String(Arc::from(value));
    let i1 = FieldValue::Integer(pick(rng, &INTS));
    let d1 = FieldValue::Double(pick(rng, &DOUBLES));
    let s1 = text(pick(rng, &STRINGS));
    let dt = FieldValue::Date(pick(rng, &DATES));
    vec![
        FieldValue::Integer(object_id),
        nullable(rng, i1),
        FieldValue::Integer(pick(rng, &INTS)),
        nullable(rng, d1),
        FieldValue::Double(pick(rng, &DOUBLES)),
        nullable(rng, s1),
        text(pick(rng, &STRINGS)),
        FieldValue::Boolean(rng.random_bool(0.5)),
        nullable(rng, dt),
    ]
}

/// A clause in both dialects.
pub struct Clause {
    pub ours: String,
    pub sqlite: String,
}

fn both(ours: impl Into<String>, sqlite: impl Into<String>) -> Clause {
    Clause {
        ours: ours.into(),
        sqlite: sqlite.into(),
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn timestamp(epoch_ms: i64) -> String {
    let seconds = epoch_ms.div_euclid(1000);
    let millis = epoch_ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let (year, month, day) = civil(days);
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "TIMESTAMP '{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}'",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A field name in random case (names are case-insensitive), sometimes double-quoted.
fn field(rng: &mut StdRng, name: &str) -> Clause {
    let spelled: String = name
        .chars()
        .map(|character| {
            if rng.random_bool(0.5) {
                character.to_ascii_uppercase()
            } else {
                character
            }
        })
        .collect();
    let ours = if rng.random_bool(0.2) {
        format!("\"{spelled}\"")
    } else {
        spelled
    };
    both(ours, name)
}

fn number_operand(rng: &mut StdRng) -> Clause {
    match rng.random_range(0..6) {
        0 => field(rng, "i1"),
        1 => field(rng, "i2"),
        2 => field(rng, "d1"),
        3 => field(rng, "d2"),
        4 => {
            let value = pick(rng, &INTS);
            both(value.to_string(), value.to_string())
        }
        _ => {
            let value = pick(rng, &DOUBLES);
            let text = if rng.random_bool(0.5) {
                format!("{value:?}")
            } else {
                format!("{value:e}")
            };
            both(text, format!("{value:?}"))
        }
    }
}

fn number_field(rng: &mut StdRng) -> Clause {
    let name = pick(rng, &["i1", "i2", "d1", "d2"]);
    field(rng, name)
}

fn string_field(rng: &mut StdRng) -> Clause {
    let name = pick(rng, &["s1", "s2"]);
    field(rng, name)
}

fn string_operand(rng: &mut StdRng) -> Clause {
    if rng.random_bool(0.3) {
        return string_field(rng);
    }
    let literal = quote(pick(rng, &STRINGS));
    both(literal.clone(), literal)
}

fn date_operand(rng: &mut StdRng) -> Clause {
    let value = pick(rng, &DATES);
    match rng.random_range(0..3) {
        0 => field(rng, "dt"),
        1 => both(timestamp(value), value.to_string()),
        _ => both(value.to_string(), value.to_string()),
    }
}

fn compare_op(rng: &mut StdRng) -> &'static str {
    pick(rng, &["=", "<>", "!=", "<", "<=", ">", ">="])
}

fn not_kw(rng: &mut StdRng) -> &'static str {
    if rng.random_bool(0.3) { "NOT " } else { "" }
}

fn predicate(rng: &mut StdRng) -> Clause {
    match rng.random_range(0..11) {
        0 | 1 => {
            let (left, op, right) = (number_field(rng), compare_op(rng), number_operand(rng));
            both(
                format!("{} {op} {}", left.ours, right.ours),
                format!("{} {op} {}", left.sqlite, right.sqlite),
            )
        }
        2 => {
            let (left, op, right) = (string_field(rng), compare_op(rng), string_operand(rng));
            both(
                format!("{} {op} {}", left.ours, right.ours),
                format!("{} {op} {}", left.sqlite, right.sqlite),
            )
        }
        3 => {
            let (left, op, right) = (field(rng, "dt"), compare_op(rng), date_operand(rng));
            both(
                format!("{} {op} {}", left.ours, right.ours),
                format!("{} {op} {}", left.sqlite, right.sqlite),
            )
        }
        4 => {
            let name = pick(rng, &["i1", "d1", "s1", "dt", "i2", "s2"]);
            let target = field(rng, name);
            let not = if rng.random_bool(0.5) { "NOT " } else { "" };
            both(
                format!("{} IS {not}NULL", target.ours),
                format!("{} IS {not}NULL", target.sqlite),
            )
        }
        5 => {
            let target = number_field(rng);
            let count = rng.random_range(1..5);
            let mut items: Vec<String> = (0..count).map(|_| pick(rng, &INTS).to_string()).collect();
            if rng.random_bool(0.2) {
                items.push("NULL".into());
            }
            let not = not_kw(rng);
            let list = items.join(", ");
            both(
                format!("{} {not}IN ({list})", target.ours),
                format!("{} {not}IN ({list})", target.sqlite),
            )
        }
        6 => {
            let target = string_field(rng);
            let count = rng.random_range(1..5);
            let mut items: Vec<String> = (0..count).map(|_| quote(pick(rng, &STRINGS))).collect();
            if rng.random_bool(0.2) {
                items.push("NULL".into());
            }
            let not = not_kw(rng);
            let list = items.join(",");
            both(
                format!("{} {not}IN ({list})", target.ours),
                format!("{} {not}IN ({list})", target.sqlite),
            )
        }
        7 => {
            let target = string_field(rng);
            let pieces = rng.random_range(0..4);
            let pattern: String = (0..pieces).map(|_| pick(rng, &PATTERN_PIECES)).collect();
            let not = not_kw(rng);
            let (pattern, escape) = if pattern.contains('!') {
                (pattern, " ESCAPE '!'")
            } else {
                (pattern, "")
            };
            let quoted = quote(&pattern);
            both(
                format!("{} {not}LIKE {quoted}{escape}", target.ours),
                format!("{} {not}LIKE {quoted}{escape}", target.sqlite),
            )
        }
        8 => {
            let (target, low, high) = (number_field(rng), number_operand(rng), number_operand(rng));
            let not = not_kw(rng);
            both(
                format!(
                    "{} {not}BETWEEN {} AND {}",
                    target.ours, low.ours, high.ours
                ),
                format!(
                    "{} {not}BETWEEN {} AND {}",
                    target.sqlite, low.sqlite, high.sqlite
                ),
            )
        }
        9 => small_integer_predicate(rng),
        _ => {
            let (left, right) = (pick(rng, &INTS), pick(rng, &INTS));
            both(format!("{left} = {right}"), format!("{left} = {right}"))
        }
    }
}

/// A predicate on the boolean field `b1`, which the metadata advertises as a small integer
/// (0 or 1): every operator a client may use on a small integer, with integer, decimal and
/// TRUE/FALSE operands (SQLite reads TRUE and FALSE as 1 and 0).
fn small_integer_predicate(rng: &mut StdRng) -> Clause {
    let target = field(rng, "b1");
    let value = |rng: &mut StdRng| -> String {
        match rng.random_range(0..4) {
            0 => pick(rng, &["TRUE", "FALSE"]).to_owned(),
            1 => format!("{:?}", pick(rng, &DOUBLES)),
            _ => pick(rng, &[0, 1, 2, -1]).to_string(),
        }
    };
    let (ours, sqlite) = match rng.random_range(0..5) {
        0 => (String::new(), String::new()),
        1 => {
            let (op, right) = (compare_op(rng), value(rng));
            (format!(" {op} {right}"), format!(" {op} {right}"))
        }
        2 => {
            let count = rng.random_range(1..4);
            let mut items: Vec<String> = (0..count).map(|_| value(rng)).collect();
            if rng.random_bool(0.2) {
                items.push("NULL".into());
            }
            let list = format!(" {}IN ({})", not_kw(rng), items.join(", "));
            (list.clone(), list)
        }
        3 => {
            let (low, high) = (value(rng), value(rng));
            let between = format!(" {}BETWEEN {low} AND {high}", not_kw(rng));
            (between.clone(), between)
        }
        _ => {
            // A number field on the other side.
            let (op, other) = (compare_op(rng), number_field(rng));
            (
                format!(" {op} {}", other.ours),
                format!(" {op} {}", other.sqlite),
            )
        }
    };
    both(
        format!("{}{ours}", target.ours),
        format!("{}{sqlite}", target.sqlite),
    )
}

/// A random clause of up to `depth` levels of AND/OR/NOT/parentheses.
pub fn clause(rng: &mut StdRng, depth: u32) -> Clause {
    if depth == 0 || rng.random_bool(0.35) {
        return predicate(rng);
    }
    match rng.random_range(0..4) {
        0 => {
            let inner = clause(rng, depth - 1);
            let keyword = if rng.random_bool(0.5) { "NOT" } else { "not" };
            both(
                format!("{keyword} ({})", inner.ours),
                format!("NOT ({})", inner.sqlite),
            )
        }
        1 => {
            let inner = clause(rng, depth - 1);
            both(format!("({})", inner.ours), format!("({})", inner.sqlite))
        }
        kind => {
            let (left, right) = (clause(rng, depth - 1), clause(rng, depth - 1));
            let keyword = if kind == 2 { "AND" } else { "OR" };
            let spelled = if rng.random_bool(0.3) {
                keyword.to_ascii_lowercase()
            } else {
                keyword.to_owned()
            };
            // No parentheses on purpose half the time: the two engines must agree on precedence.
            if rng.random_bool(0.5) {
                both(
                    format!("{} {spelled} {}", left.ours, right.ours),
                    format!("{} {keyword} {}", left.sqlite, right.sqlite),
                )
            } else {
                both(
                    format!("({}) {spelled} ({})", left.ours, right.ours),
                    format!("({}) {keyword} ({})", left.sqlite, right.sqlite),
                )
            }
        }
    }
}

/// A deterministic generator.
pub fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
