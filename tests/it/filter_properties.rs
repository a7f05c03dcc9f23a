//! Property tests of the where engine: canonical text re-parses to the same tree, arbitrary
//! input never panics, and the compiled evaluator agrees with a naive tree walker.

use featurestream::feature::FieldValue;
use featurestream::filter::{
    CompareOp, FilterLimits, InItems, LikeToken, Literal, Operand, Predicate, Truth, WhereClause,
};
use proptest::prelude::*;

use crate::support::where_gen;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn canonical_text_reparses_to_the_same_tree(seed in any::<u64>()) {
        let schema = where_gen::schema();
        let mut rng = where_gen::seeded(seed);
        let clause = where_gen::clause(&mut rng, 5);
        let compiled = WhereClause::compile(&schema, &clause.ours, FilterLimits::default()).expect("generated clauses compile");
        let reparsed = WhereClause::compile(&schema, compiled.canonical(), FilterLimits::default()).expect("canonical compiles");
        prop_assert_eq!(reparsed.predicate(), compiled.predicate());
        prop_assert_eq!(reparsed.canonical(), compiled.canonical());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = WhereClause::compile(&where_gen::schema(), &text, FilterLimits::default());
    }

    #[test]
    fn token_soup_never_panics(pieces in proptest::collection::vec(prop::sample::select(vec![
        "(", ")", "NOT", "AND", "OR", "IN", "LIKE", "BETWEEN", "IS", "NULL", "ESCAPE", "'a'", "'", "\"",
        "i1", "s1", "b1", "dt", "=", "<>", "<", ">=", ",", "1", "-2.5e3", "DATE", "TIMESTAMP", "'2024-01-01'",
        "TRUE", "%", "é", "!", "1e999", ".", "-",
    ]), 0..40)) {
        let text = pieces.join(" ");
        let _ = WhereClause::compile(&where_gen::schema(), &text, FilterLimits::default());
        let glued = pieces.concat();
        let _ = WhereClause::compile(&where_gen::schema(), &glued, FilterLimits::default());
    }

    #[test]
    fn compiled_evaluator_agrees_with_naive_walker(seed in any::<u64>()) {
        let schema = where_gen::schema();
        let mut rng = where_gen::seeded(seed);
        let clause = where_gen::clause(&mut rng, 4);
        let compiled = WhereClause::compile(&schema, &clause.ours, FilterLimits::default()).expect("compiles");
        for id in 0..20 {
            let row = where_gen::random_row(&mut rng, id);
            prop_assert_eq!(compiled.predicate().evaluate(&row), naive(compiled.predicate(), &row), "{}", compiled.canonical());
        }
    }
}

/// A deliberately simple evaluator: Option<bool> for three-valued logic, linear IN search,
/// recursive LIKE on char vectors.
fn naive(predicate: &Predicate, row: &[FieldValue]) -> Truth {
    match naive_value(predicate, row) {
        Some(true) => Truth::True,
        Some(false) => Truth::False,
        None => Truth::Unknown,
    }
}

#[derive(Clone, Debug)]
enum Value {
    Number(f64),
    Text(String),
    Bool(bool),
}

fn value(operand: &Operand, row: &[FieldValue]) -> Option<Value> {
    match operand {
        Operand::Field(field) => match &row[field.index] {
            FieldValue::Null => None,
            FieldValue::Integer(value) | FieldValue::Date(value) => {
                Some(Value::Number(*value as f64))
            }
            FieldValue::Double(value) => Some(Value::Number(*value)),
            FieldValue::String(text) => Some(Value::Text(text.to_string())),
            FieldValue::Boolean(value) => Some(Value::Bool(*value)),
        },
        Operand::Literal(literal) => match literal {
            Literal::Null => None,
            Literal::Number(value) => Some(Value::Number(*value)),
            Literal::Date(value) => Some(Value::Number(*value as f64)),
            Literal::String(text) => Some(Value::Text(text.to_string())),
            Literal::Boolean(value) => Some(Value::Bool(*value)),
        },
    }
}

fn order(left: &Value, right: &Value) -> Option<std::cmp::Ordering> {
    let number = |value: &Value| match value {
        Value::Number(number) => Some(*number),
        Value::Bool(flag) => Some(if *flag { 1.0 } else { 0.0 }),
        Value::Text(_) => None,
    };
    match (left, right) {
        (Value::Text(left), Value::Text(right)) => Some(left.cmp(right)),
        _ => number(left)?.partial_cmp(&number(right)?),
    }
}

fn holds(ordering: std::cmp::Ordering, op: CompareOp) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        CompareOp::Equal => ordering == Equal,
        CompareOp::NotEqual => ordering != Equal,
        CompareOp::Less => ordering == Less,
        CompareOp::LessOrEqual => ordering != Greater,
        CompareOp::Greater => ordering == Greater,
        CompareOp::GreaterOrEqual => ordering != Less,
    }
}

fn like(tokens: &[LikeToken], text: &[char]) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((LikeToken::Any, rest)) => (0..=text.len()).any(|skip| like(rest, &text[skip..])),
        Some((LikeToken::One, rest)) => !text.is_empty() && like(rest, &text[1..]),
        Some((LikeToken::Char(expected), rest)) => {
            text.first() == Some(expected) && like(rest, &text[1..])
        }
    }
}

// The folds must not stop at the first unknown (a later FALSE or TRUE decides), so they are
// plain folds on purpose.
#[allow(clippy::manual_try_fold)]
fn naive_value(predicate: &Predicate, row: &[FieldValue]) -> Option<bool> {
    let not = |value: Option<bool>| value.map(|value| !value);
    match predicate {
        Predicate::Or(children) => children.iter().fold(Some(false), |acc, child| {
            match (acc, naive_value(child, row)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            }
        }),
        Predicate::And(children) => children.iter().fold(Some(true), |acc, child| {
            match (acc, naive_value(child, row)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            }
        }),
        Predicate::Not(inner) => not(naive_value(inner, row)),
        Predicate::Compare { left, op, right } => {
            Some(holds(order(&value(left, row)?, &value(right, row)?)?, *op))
        }
        Predicate::IsNull { operand, negated } => Some(value(operand, row).is_none() != *negated),
        Predicate::In {
            operand,
            list,
            negated,
        } => {
            let target = value(operand, row);
            let members: Vec<Value> = match &list.items {
                InItems::Numbers(values) => {
                    values.iter().map(|value| Value::Number(*value)).collect()
                }
                InItems::Strings(values) => values
                    .iter()
                    .map(|value| Value::Text(value.to_string()))
                    .collect(),
                InItems::Dates(values) => values
                    .iter()
                    .map(|value| Value::Number(*value as f64))
                    .collect(),
                InItems::Booleans(values) => {
                    values.iter().map(|value| Value::Bool(*value)).collect()
                }
            };
            let result = match target {
                None => None,
                Some(target)
                    if members.iter().any(|member| {
                        order(&target, member) == Some(std::cmp::Ordering::Equal)
                    }) =>
                {
                    Some(true)
                }
                Some(_) if list.has_null => None,
                Some(_) => Some(false),
            };
            if *negated { not(result) } else { result }
        }
        Predicate::Like {
            operand,
            pattern,
            negated,
        } => match value(operand, row)? {
            Value::Text(text) => {
                Some(like(&pattern.tokens, &text.chars().collect::<Vec<_>>()) != *negated)
            }
            _ => None,
        },
        Predicate::Between {
            operand,
            low,
            high,
            negated,
        } => {
            let target = value(operand, row);
            let above = target
                .as_ref()
                .zip(value(low, row))
                .and_then(|(target, low)| order(target, &low))
                .map(|o| o != std::cmp::Ordering::Less);
            let below = target
                .as_ref()
                .zip(value(high, row))
                .and_then(|(target, high)| order(target, &high))
                .map(|o| o != std::cmp::Ordering::Greater);
            let inside = match (above, below) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            if *negated { not(inside) } else { inside }
        }
        Predicate::IsTrue(operand) => match value(operand, row)? {
            Value::Bool(flag) => Some(flag),
            Value::Number(number) => Some(number != 0.0),
            Value::Text(_) => None,
        },
    }
}
