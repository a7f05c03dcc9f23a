//! Differential test: random well-typed where clauses over a random table must select exactly
//! the rows that SQLite selects (`PRAGMA case_sensitive_like = ON`). What the generator leaves
//! out, and why, is written in `support/where_gen.rs`.

use featurestream::feature::FieldValue;
use featurestream::filter::{FilterLimits, WhereClause};
use rusqlite::{Connection, params_from_iter, types::Value};

use crate::support::where_gen;

const ROWS: i64 = 60;
const CLAUSES: usize = 3000;

fn sqlite_value(value: &FieldValue) -> Value {
    match value {
        FieldValue::Null => Value::Null,
        FieldValue::Integer(value) | FieldValue::Date(value) => Value::Integer(*value),
        FieldValue::Double(value) => Value::Real(*value),
        FieldValue::String(text) => Value::Text(text.to_string()),
        FieldValue::Boolean(value) => Value::Integer(i64::from(*value)),
    }
}

#[test]
fn random_clauses_select_the_same_rows_as_sqlite() {
    let schema = where_gen::schema();
    let mut rng = where_gen::seeded(0x5EED_F11E);
    let rows: Vec<Vec<FieldValue>> = (1..=ROWS)
        .map(|id| where_gen::random_row(&mut rng, id))
        .collect();

    let connection = Connection::open_in_memory().expect("sqlite");
    connection
        .execute_batch(
            "PRAGMA case_sensitive_like = ON;
             CREATE TABLE t (OBJECTID INTEGER PRIMARY KEY, i1 INTEGER, i2 INTEGER, d1 REAL, d2 REAL,
                             s1 TEXT, s2 TEXT, b1 INTEGER, dt INTEGER);",
        )
        .expect("schema");
    for row in &rows {
        connection
            .execute(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params_from_iter(row.iter().map(sqlite_value)),
            )
            .expect("insert");
    }

    let mut compared = 0;
    let mut selected_somewhere = 0;
    for _ in 0..CLAUSES {
        let clause = where_gen::clause(&mut rng, 4);
        let compiled = WhereClause::compile(&schema, &clause.ours, FilterLimits::default())
            .unwrap_or_else(|errors| {
                panic!("generated clause {:?} failed: {errors:?}", clause.ours)
            });
        let ours: Vec<i64> = rows
            .iter()
            .filter(|row| compiled.matches(row))
            .map(|row| match row[0] {
                FieldValue::Integer(id) => id,
                _ => unreachable!("object ids are integers"),
            })
            .collect();
        let query = format!(
            "SELECT OBJECTID FROM t WHERE {} ORDER BY OBJECTID",
            clause.sqlite
        );
        let mut statement = connection
            .prepare(&query)
            .unwrap_or_else(|err| panic!("{query}: {err}"));
        let theirs: Vec<i64> = statement
            .query_map([], |row| row.get(0))
            .expect("query")
            .map(|id| id.expect("id"))
            .collect();
        assert_eq!(
            ours,
            theirs,
            "\nours:   {}\nsqlite: {}\ncanonical: {}",
            clause.ours,
            clause.sqlite,
            compiled.canonical()
        );
        // The canonical form must select the same rows.
        let canonical =
            WhereClause::compile(&schema, compiled.canonical(), FilterLimits::default())
                .expect("re-parses");
        assert!(
            rows.iter()
                .all(|row| canonical.matches(row) == compiled.matches(row)),
            "{}",
            compiled.canonical()
        );
        compared += 1;
        if !ours.is_empty() && ours.len() < ROWS as usize {
            selected_somewhere += 1;
        }
    }
    assert_eq!(compared, CLAUSES);
    // Guard against a generator that only produces trivially true or false clauses.
    assert!(
        selected_somewhere > CLAUSES / 4,
        "only {selected_somewhere} clauses split the table"
    );
}
