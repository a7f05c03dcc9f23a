//! The compiled where clause: fields resolved to schema indexes, literals typed once, IN lists
//! sorted for binary search, LIKE patterns tokenised. `Display` prints the canonical, fully
//! parenthesised clause that re-parses to the same tree; the broker groups sessions by it.

use std::fmt;

use super::lexer::CompareOp;
use super::parser::is_reserved;

/// A boolean expression over one feature's attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Predicate {
    /// True when any child is true (two or more children).
    Or(Vec<Predicate>),
    /// True when every child is true (two or more children).
    And(Vec<Predicate>),
    /// Negation; NOT unknown is unknown.
    Not(Box<Predicate>),
    /// `left op right`.
    Compare {
        /// Left operand (a field whenever one side is a field).
        left: Operand,
        /// The operator.
        op: CompareOp,
        /// Right operand.
        right: Operand,
    },
    /// `operand IS [NOT] NULL`.
    IsNull {
        /// What is tested.
        operand: Operand,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `operand [NOT] IN (...)`.
    In {
        /// What is looked up.
        operand: Operand,
        /// The sorted, de-duplicated list.
        list: InList,
        /// `NOT IN`.
        negated: bool,
    },
    /// `operand [NOT] LIKE 'pattern' [ESCAPE 'c']`.
    Like {
        /// A string operand.
        operand: Operand,
        /// The compiled pattern.
        pattern: LikePattern,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `operand [NOT] BETWEEN low AND high`, i.e. `low <= operand AND operand <= high`.
    Between {
        /// What is tested.
        operand: Operand,
        /// Inclusive lower bound.
        low: Operand,
        /// Inclusive upper bound.
        high: Operand,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// A boolean field or literal used as a predicate (`active`).
    IsTrue(Operand),
}

/// A field or a literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A schema field.
    Field(FieldRef),
    /// A typed constant.
    Literal(Literal),
}

/// A field resolved against the schema.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldRef {
    /// Index into the feature's attributes.
    pub index: usize,
    /// The schema's spelling, for `Display`.
    pub name: String,
}

/// A typed constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// SQL NULL.
    Null,
    /// Any number; exact for integers up to 2^53.
    Number(f64),
    /// Text.
    String(Box<str>),
    /// Epoch milliseconds, UTC.
    Date(i64),
    /// TRUE or FALSE.
    Boolean(bool),
}

/// The members of an IN list, of one kind, sorted and de-duplicated.
#[derive(Clone, Debug, PartialEq)]
pub enum InItems {
    /// Numbers (also used for numbers against a date field's epoch milliseconds).
    Numbers(Vec<f64>),
    /// Strings, byte-wise sorted.
    Strings(Vec<Box<str>>),
    /// Dates as epoch milliseconds.
    Dates(Vec<i64>),
    /// Booleans.
    Booleans(Vec<bool>),
}

/// An IN list: the typed members, plus whether NULL was listed (which makes a miss unknown).
#[derive(Clone, Debug, PartialEq)]
pub struct InList {
    /// The non-NULL members.
    pub items: InItems,
    /// Whether the list contained NULL.
    pub has_null: bool,
}

/// One element of a compiled LIKE pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LikeToken {
    /// A character that must match exactly (case-sensitive).
    Char(char),
    /// `_`: exactly one character.
    One,
    /// `%`: any run of characters, possibly empty.
    Any,
}

/// A LIKE pattern as written and compiled.
#[derive(Clone, Debug)]
pub struct LikePattern {
    /// The pattern text as written (unescaped quotes).
    pub raw: Box<str>,
    /// The ESCAPE character, if any.
    pub escape: Option<char>,
    /// The compiled tokens.
    pub tokens: Vec<LikeToken>,
}

impl PartialEq for LikePattern {
    fn eq(&self, other: &LikePattern) -> bool {
        self.tokens == other.tokens
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::Or(children) => join(formatter, children, " OR "),
            Predicate::And(children) => join(formatter, children, " AND "),
            Predicate::Not(inner) => write!(formatter, "NOT ({inner})"),
            Predicate::Compare { left, op, right } => {
                write!(formatter, "{left} {} {right}", op.symbol())
            }
            Predicate::IsNull { operand, negated } => {
                write!(
                    formatter,
                    "{operand} IS {}NULL",
                    if *negated { "NOT " } else { "" }
                )
            }
            Predicate::In {
                operand,
                list,
                negated,
            } => {
                write!(
                    formatter,
                    "{operand} {}IN ({list})",
                    if *negated { "NOT " } else { "" }
                )
            }
            Predicate::Like {
                operand,
                pattern,
                negated,
            } => {
                write!(
                    formatter,
                    "{operand} {}LIKE ",
                    if *negated { "NOT " } else { "" }
                )?;
                write_pattern(formatter, pattern)
            }
            Predicate::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(formatter, "{operand} {not}BETWEEN {low} AND {high}")
            }
            Predicate::IsTrue(operand) => write!(formatter, "{operand}"),
        }
    }
}

fn join(
    formatter: &mut fmt::Formatter<'_>,
    children: &[Predicate],
    separator: &str,
) -> fmt::Result {
    for (index, child) in children.iter().enumerate() {
        if index > 0 {
            formatter.write_str(separator)?;
        }
        write!(formatter, "({child})")?;
    }
    Ok(())
}

/// Prints the pattern canonically: `\` as escape when one is needed, so that equal token
/// sequences print the same whatever escape character the client chose.
fn write_pattern(formatter: &mut fmt::Formatter<'_>, pattern: &LikePattern) -> fmt::Result {
    let needs_escape = pattern
        .tokens
        .iter()
        .any(|token| matches!(token, LikeToken::Char('%' | '_')));
    let mut text = String::new();
    for token in &pattern.tokens {
        match token {
            LikeToken::Any => text.push('%'),
            LikeToken::One => text.push('_'),
            LikeToken::Char(character @ ('%' | '_' | '\\')) if needs_escape => {
                text.push('\\');
                text.push(*character);
            }
            LikeToken::Char(character) => text.push(*character),
        }
    }
    write_string(formatter, &text)?;
    if needs_escape {
        formatter.write_str(" ESCAPE '\\'")
    } else {
        Ok(())
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Field(field) => write_field_name(formatter, &field.name),
            Operand::Literal(literal) => write!(formatter, "{literal}"),
        }
    }
}

fn write_field_name(formatter: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    let plain = name
        .chars()
        .next()
        .is_some_and(|first| first.is_alphabetic() || first == '_')
        && name
            .chars()
            .all(|character| character.is_alphanumeric() || character == '_')
        && !is_reserved(name)
        && !name.eq_ignore_ascii_case("DATE")
        && !name.eq_ignore_ascii_case("TIMESTAMP");
    if plain {
        formatter.write_str(name)
    } else {
        write!(formatter, "\"{}\"", name.replace('"', "\"\""))
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => formatter.write_str("NULL"),
            Literal::Number(value) => write_number(formatter, *value),
            Literal::String(text) => write_string(formatter, text),
            Literal::Date(epoch_ms) => write!(
                formatter,
                "TIMESTAMP '{}'",
                super::date::format_timestamp(*epoch_ms)
            ),
            Literal::Boolean(value) => formatter.write_str(if *value { "TRUE" } else { "FALSE" }),
        }
    }
}

/// Integers print without a fraction (`10`, not `10.0`), everything else in Rust's shortest
/// round-trip form, so that `speed > 10` and `speed > 10.0` print alike.
pub(crate) fn write_number(formatter: &mut fmt::Formatter<'_>, value: f64) -> fmt::Result {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        write!(formatter, "{}", value as i64)
    } else {
        write!(formatter, "{value:?}")
    }
}

fn write_string(formatter: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    write!(formatter, "'{}'", text.replace('\'', "''"))
}

impl fmt::Display for InList {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut separator = |formatter: &mut fmt::Formatter<'_>| {
            if !std::mem::take(&mut first) {
                formatter.write_str(", ")?;
            }
            Ok::<(), fmt::Error>(())
        };
        match &self.items {
            InItems::Numbers(values) => {
                for value in values {
                    separator(formatter)?;
                    write_number(formatter, *value)?;
                }
            }
            InItems::Strings(values) => {
                for value in values {
                    separator(formatter)?;
                    write_string(formatter, value)?;
                }
            }
            InItems::Dates(values) => {
                for value in values {
                    separator(formatter)?;
                    write!(formatter, "{}", Literal::Date(*value))?;
                }
            }
            InItems::Booleans(values) => {
                for value in values {
                    separator(formatter)?;
                    write!(formatter, "{}", Literal::Boolean(*value))?;
                }
            }
        }
        if self.has_null {
            separator(formatter)?;
            formatter.write_str("NULL")?;
        }
        Ok(())
    }
}
