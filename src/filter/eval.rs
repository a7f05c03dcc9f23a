//! Evaluates a compiled `Predicate` over attribute values by field index, in SQL three-valued
//! logic. Allocates nothing; literals were typed at compile time, IN lists are searched by
//! binary search, LIKE runs the linear-backtracking wildcard match (one restart point).

use std::cmp::Ordering;

use super::ast::{InItems, InList, LikeToken, Literal, Operand, Predicate};
use super::lexer::CompareOp;
use crate::feature::FieldValue;

/// SQL's three truth values. Only `True` selects a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// Selected.
    True,
    /// Not selected.
    False,
    /// A comparison involving NULL; not selected, and `NOT Unknown` is `Unknown`.
    Unknown,
}

impl Truth {
    fn from_bool(value: bool) -> Truth {
        if value { Truth::True } else { Truth::False }
    }

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }

    fn negate_if(self, negated: bool) -> Truth {
        if negated { self.not() } else { self }
    }
}

/// A borrowed, typed view of a field value or literal.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Null,
    Integer(i64),
    Number(f64),
    String(&'a str),
    Date(i64),
    Boolean(bool),
}

impl Predicate {
    /// Evaluates the predicate over one feature's attributes.
    pub fn evaluate(&self, attributes: &[FieldValue]) -> Truth {
        match self {
            Predicate::Or(children) => {
                let mut result = Truth::False;
                for child in children {
                    match child.evaluate(attributes) {
                        Truth::True => return Truth::True,
                        Truth::Unknown => result = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                result
            }
            Predicate::And(children) => {
                let mut result = Truth::True;
                for child in children {
                    match child.evaluate(attributes) {
                        Truth::False => return Truth::False,
                        Truth::Unknown => result = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                result
            }
            Predicate::Not(inner) => inner.evaluate(attributes).not(),
            // The common case (`speed > 50`) without the general scalar dispatch.
            Predicate::Compare {
                left: Operand::Field(field),
                op,
                right: Operand::Literal(Literal::Number(number)),
            } => match attributes.get(field.index) {
                Some(FieldValue::Double(value)) => number_truth(*value, *number, *op),
                Some(FieldValue::Integer(value)) => number_truth(*value as f64, *number, *op),
                Some(other) => compare_truth(field_scalar(other), Scalar::Number(*number), *op),
                None => Truth::Unknown,
            },
            Predicate::Compare { left, op, right } => {
                compare_truth(scalar(left, attributes), scalar(right, attributes), *op)
            }
            Predicate::IsNull { operand, negated } => {
                Truth::from_bool(matches!(scalar(operand, attributes), Scalar::Null) != *negated)
            }
            Predicate::In {
                operand,
                list,
                negated,
            } => in_list(scalar(operand, attributes), list).negate_if(*negated),
            Predicate::Like {
                operand,
                pattern,
                negated,
            } => match scalar(operand, attributes) {
                Scalar::String(text) => {
                    Truth::from_bool(like_matches(&pattern.tokens, text) != *negated)
                }
                _ => Truth::Unknown,
            },
            Predicate::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let value = scalar(operand, attributes);
                let above =
                    compare_truth(value, scalar(low, attributes), CompareOp::GreaterOrEqual);
                let below = compare_truth(value, scalar(high, attributes), CompareOp::LessOrEqual);
                let inside = match (above, below) {
                    (Truth::False, _) | (_, Truth::False) => Truth::False,
                    (Truth::True, Truth::True) => Truth::True,
                    _ => Truth::Unknown,
                };
                inside.negate_if(*negated)
            }
            Predicate::IsTrue(operand) => match scalar(operand, attributes) {
                Scalar::Boolean(value) => Truth::from_bool(value),
                Scalar::Integer(value) => Truth::from_bool(value != 0),
                Scalar::Number(value) => Truth::from_bool(value != 0.0),
                _ => Truth::Unknown,
            },
        }
    }
}

#[inline]
fn number_truth(value: f64, number: f64, op: CompareOp) -> Truth {
    let result = match op {
        CompareOp::Equal => value == number,
        CompareOp::NotEqual => value != number,
        CompareOp::Less => value < number,
        CompareOp::LessOrEqual => value <= number,
        CompareOp::Greater => value > number,
        CompareOp::GreaterOrEqual => value >= number,
    };
    // NaN compares with nothing: unknown, as `partial_cmp` gives in the general path.
    if value.is_nan() {
        Truth::Unknown
    } else {
        Truth::from_bool(result)
    }
}

#[inline]
fn field_scalar(value: &FieldValue) -> Scalar<'_> {
    match value {
        FieldValue::Integer(value) => Scalar::Integer(*value),
        FieldValue::Double(value) => Scalar::Number(*value),
        FieldValue::String(text) => Scalar::String(text),
        FieldValue::Date(epoch_ms) => Scalar::Date(*epoch_ms),
        FieldValue::Boolean(value) => Scalar::Boolean(*value),
        FieldValue::Null => Scalar::Null,
    }
}

#[inline]
fn scalar<'a>(operand: &'a Operand, attributes: &'a [FieldValue]) -> Scalar<'a> {
    match operand {
        Operand::Field(field) => attributes
            .get(field.index)
            .map_or(Scalar::Null, field_scalar),
        Operand::Literal(literal) => match literal {
            Literal::Null => Scalar::Null,
            Literal::Number(value) => Scalar::Number(*value),
            Literal::String(text) => Scalar::String(text),
            Literal::Date(epoch_ms) => Scalar::Date(*epoch_ms),
            Literal::Boolean(value) => Scalar::Boolean(*value),
        },
    }
}

#[inline]
fn compare_truth(left: Scalar<'_>, right: Scalar<'_>, op: CompareOp) -> Truth {
    let Some(ordering) = compare(left, right) else {
        return Truth::Unknown;
    };
    Truth::from_bool(match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::LessOrEqual => ordering != Ordering::Greater,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::GreaterOrEqual => ordering != Ordering::Less,
    })
}

/// Orders two values of comparable kinds; `None` for NULL, NaN or incomparable kinds.
#[inline]
fn compare(left: Scalar<'_>, right: Scalar<'_>) -> Option<Ordering> {
    use Scalar::{Boolean, Date, Integer, String};
    match (left, right) {
        (Integer(left), Integer(right)) | (Date(left), Date(right)) => Some(left.cmp(&right)),
        (String(left), String(right)) => Some(left.as_bytes().cmp(right.as_bytes())),
        (Boolean(left), Boolean(right)) => Some(left.cmp(&right)),
        (Scalar::Null, _) | (_, Scalar::Null) | (String(_), _) | (_, String(_)) => None,
        (left, right) => numeric(left)?.partial_cmp(&numeric(right)?),
    }
}

#[inline]
fn numeric(value: Scalar<'_>) -> Option<f64> {
    match value {
        Scalar::Integer(value) | Scalar::Date(value) => Some(value as f64),
        Scalar::Number(value) => Some(value),
        Scalar::Boolean(value) => Some(if value { 1.0 } else { 0.0 }),
        Scalar::Null | Scalar::String(_) => None,
    }
}

fn in_list(value: Scalar<'_>, list: &InList) -> Truth {
    let found = match (&list.items, value) {
        (_, Scalar::Null) => return Truth::Unknown,
        (InItems::Strings(values), Scalar::String(text)) => values
            .binary_search_by(|probe| probe.as_bytes().cmp(text.as_bytes()))
            .is_ok(),
        (InItems::Dates(values), Scalar::Date(epoch_ms)) => values.binary_search(&epoch_ms).is_ok(),
        (InItems::Booleans(values), Scalar::Boolean(flag)) => values.contains(&flag),
        (InItems::Numbers(values), other) => match numeric(other) {
            Some(number) if !number.is_nan() => values
                .binary_search_by(|probe| probe.partial_cmp(&number).unwrap_or(Ordering::Less))
                .is_ok(),
            _ => return Truth::Unknown,
        },
        _ => false,
    };
    if found {
        Truth::True
    } else if list.has_null {
        Truth::Unknown
    } else {
        Truth::False
    }
}

/// Whole-string wildcard match with backtracking to the last `%` only: O(text × pattern)
/// worst case, never exponential.
pub(crate) fn like_matches(tokens: &[LikeToken], text: &str) -> bool {
    let (mut token_index, mut text_index) = (0, 0);
    let mut restart: Option<(usize, usize)> = None;
    loop {
        if let Some(token) = tokens.get(token_index) {
            let next_char = text[text_index..].chars().next();
            match (token, next_char) {
                (LikeToken::Any, _) => {
                    token_index += 1;
                    restart = Some((token_index, text_index));
                    continue;
                }
                (LikeToken::One, Some(character)) => {
                    token_index += 1;
                    text_index += character.len_utf8();
                    continue;
                }
                (LikeToken::Char(expected), Some(character)) if *expected == character => {
                    token_index += 1;
                    text_index += character.len_utf8();
                    continue;
                }
                _ => {}
            }
        } else if text_index == text.len() {
            return true;
        }
        match restart {
            Some((after_any, from)) if from < text.len() => {
                let skipped = text[from..].chars().next().map_or(1, char::len_utf8);
                restart = Some((after_any, from + skipped));
                token_index = after_any;
                text_index = from + skipped;
            }
            _ => return false,
        }
    }
}
