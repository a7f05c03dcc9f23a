//! Resolves a syntax tree against a schema into a typed `Predicate`, collecting every unknown
//! field and type mismatch instead of stopping at the first.
//!
//! Typing rules (ArcGIS SQL, as a careful SQL engine would apply them):
//! - numbers compare with numbers of any width; strings with strings (byte-wise, so
//!   case-sensitive); dates with dates and with numbers (epoch milliseconds); booleans with
//!   booleans and with the numbers 0 and 1 (ArcGIS stores booleans as small integers);
//! - a string literal never compares with a date: write `DATE '2024-01-01'`;
//! - `NULL` may stand on either side of a comparison (the result is unknown, as in SQL);
//! - LIKE needs a string operand and a string pattern; IN lists hold values, not fields.

use super::ast::{FieldRef, InItems, InList, LikePattern, LikeToken, Literal, Operand, Predicate};
use super::date;
use super::error::FilterError;
use super::lexer::CompareOp;
use super::parser::{OperandKind, Syntax, SyntaxOperand};
use crate::feature::{Schema, ValueKind};

/// The kind of an operand after resolution; `Null` for the NULL literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Value(ValueKind),
    Null,
}

struct Typed {
    operand: Operand,
    kind: Kind,
    position: usize,
}

pub(crate) struct Compiler<'s> {
    schema: &'s Schema,
    errors: Vec<FilterError>,
}

impl<'s> Compiler<'s> {
    pub(crate) fn new(schema: &'s Schema) -> Compiler<'s> {
        Compiler {
            schema,
            errors: Vec::new(),
        }
    }

    /// Compiles the tree; every problem found is returned.
    pub(crate) fn compile(mut self, syntax: Syntax) -> Result<Predicate, Vec<FilterError>> {
        let predicate = self.predicate(syntax);
        match predicate {
            Some(predicate) if self.errors.is_empty() => Ok(predicate),
            _ => Err(self.errors),
        }
    }

    fn mismatch(&mut self, detail: String, position: usize) {
        self.errors
            .push(FilterError::TypeMismatch { detail, position });
    }

    fn predicate(&mut self, syntax: Syntax) -> Option<Predicate> {
        match syntax {
            Syntax::Or(children) => self.children(children).map(Predicate::Or),
            Syntax::And(children) => self.children(children).map(Predicate::And),
            Syntax::Not(inner) => self
                .predicate(*inner)
                .map(|inner| Predicate::Not(Box::new(inner))),
            Syntax::Compare { left, op, right } => self.compare(left, op, right),
            Syntax::IsNull { operand, negated } => {
                self.operand(operand).map(|typed| Predicate::IsNull {
                    operand: typed.operand,
                    negated,
                })
            }
            Syntax::In {
                operand,
                items,
                negated,
            } => self.in_list(operand, items, negated),
            Syntax::Like {
                operand,
                pattern,
                escape,
                negated,
            } => self.like(operand, pattern, escape, negated),
            Syntax::Between {
                operand,
                low,
                high,
                negated,
            } => self.between(operand, low, high, negated),
            Syntax::Bare(operand) => self.bare(operand),
        }
    }

    /// Compiles every child (to collect all errors) and fails if any failed.
    fn children(&mut self, children: Vec<Syntax>) -> Option<Vec<Predicate>> {
        let compiled: Vec<Option<Predicate>> = children
            .into_iter()
            .map(|child| self.predicate(child))
            .collect();
        compiled.into_iter().collect()
    }

    fn operand(&mut self, operand: SyntaxOperand) -> Option<Typed> {
        let position = operand.position;
        let (operand, kind) = match operand.kind {
            OperandKind::Field(name) => {
                let Some(index) = self.schema.field_index(&name) else {
                    self.errors
                        .push(FilterError::UnknownField { name, position });
                    return None;
                };
                let field = &self.schema.fields()[index];
                let kind = Kind::Value(field.field_type.kind());
                (
                    Operand::Field(FieldRef {
                        index,
                        name: field.name.clone(),
                    }),
                    kind,
                )
            }
            OperandKind::Number(value) => (
                Operand::Literal(Literal::Number(value)),
                Kind::Value(ValueKind::Number),
            ),
            OperandKind::String(text) => (
                Operand::Literal(Literal::String(text.into_boxed_str())),
                Kind::Value(ValueKind::String),
            ),
            OperandKind::Date { text, timestamp } => {
                let Some(epoch_ms) = date::parse(&text, timestamp) else {
                    let (keyword, shape) = if timestamp {
                        ("TIMESTAMP", "'YYYY-MM-DD HH:MM:SS[.fff]'")
                    } else {
                        ("DATE", "'YYYY-MM-DD'")
                    };
                    self.errors.push(FilterError::InvalidLiteral {
                        detail: format!("malformed {keyword} literal '{text}' (expected {shape})"),
                        position,
                    });
                    return None;
                };
                (
                    Operand::Literal(Literal::Date(epoch_ms)),
                    Kind::Value(ValueKind::Date),
                )
            }
            OperandKind::Boolean(value) => (
                Operand::Literal(Literal::Boolean(value)),
                Kind::Value(ValueKind::Boolean),
            ),
            OperandKind::Null => (Operand::Literal(Literal::Null), Kind::Null),
        };
        Some(Typed {
            operand,
            kind,
            position,
        })
    }

    fn compare(
        &mut self,
        left: SyntaxOperand,
        op: CompareOp,
        right: SyntaxOperand,
    ) -> Option<Predicate> {
        let (left, right) = (self.operand(left), self.operand(right));
        let (mut left, mut right) = (left?, right?);
        let mut op = op;
        // Canonical order: a field on the left whenever one side is a field.
        if matches!(left.operand, Operand::Literal(_)) && matches!(right.operand, Operand::Field(_))
        {
            std::mem::swap(&mut left, &mut right);
            op = mirror(op);
        }
        if !self.check_comparable(&left, &right) {
            return None;
        }
        let right = coerce_to(right.operand, left.kind);
        let left = coerce_to(left.operand, Kind::Value(kind_of_value(&right)));
        Some(Predicate::Compare { left, op, right })
    }

    fn check_comparable(&mut self, left: &Typed, right: &Typed) -> bool {
        let (Kind::Value(left_kind), Kind::Value(right_kind)) = (left.kind, right.kind) else {
            return true;
        };
        if comparable(left_kind, right_kind) {
            return true;
        }
        let detail = format!("cannot compare {} with {}", describe(left), describe(right));
        self.mismatch(detail, right.position);
        false
    }

    fn in_list(
        &mut self,
        operand: SyntaxOperand,
        items: Vec<SyntaxOperand>,
        negated: bool,
    ) -> Option<Predicate> {
        let operand = self.operand(operand);
        let typed_items: Vec<Option<Typed>> =
            items.into_iter().map(|item| self.operand(item)).collect();
        let operand = operand?;
        let Kind::Value(kind) = operand.kind else {
            self.mismatch(
                "NULL cannot be tested with IN; use IS NULL".to_owned(),
                operand.position,
            );
            return None;
        };
        let mut has_null = false;
        let mut literals = Vec::new();
        for item in typed_items {
            let item = item?;
            match (&item.operand, item.kind) {
                (Operand::Field(_), _) => {
                    self.mismatch(
                        format!("IN lists take values, not {}", describe(&item)),
                        item.position,
                    );
                }
                (_, Kind::Null) => has_null = true,
                (_, Kind::Value(item_kind)) if !in_list_compatible(kind, item_kind) => {
                    self.mismatch(
                        format!(
                            "cannot compare {} with {}",
                            describe(&operand),
                            describe(&item)
                        ),
                        item.position,
                    );
                }
                (Operand::Literal(literal), _) => literals.push(literal.clone()),
            }
        }
        let items = build_in_items(kind, literals);
        Some(Predicate::In {
            operand: operand.operand,
            list: InList { items, has_null },
            negated,
        })
    }

    fn like(
        &mut self,
        operand: SyntaxOperand,
        pattern: SyntaxOperand,
        escape: Option<SyntaxOperand>,
        negated: bool,
    ) -> Option<Predicate> {
        let operand = self.operand(operand)?;
        if operand.kind != Kind::Value(ValueKind::String) {
            self.mismatch(
                format!("LIKE needs a string, but found {}", describe(&operand)),
                operand.position,
            );
            return None;
        }
        let OperandKind::String(raw) = pattern.kind else {
            self.mismatch(
                "LIKE needs a quoted string pattern".to_owned(),
                pattern.position,
            );
            return None;
        };
        let escape_char = match escape {
            None => None,
            Some(SyntaxOperand {
                kind: OperandKind::String(text),
                position,
            }) => {
                let mut characters = text.chars();
                match (characters.next(), characters.next()) {
                    (Some(character), None) => Some(character),
                    _ => {
                        let detail = format!("ESCAPE takes exactly one character, found '{text}'");
                        self.errors
                            .push(FilterError::InvalidLiteral { detail, position });
                        return None;
                    }
                }
            }
            Some(other) => {
                self.mismatch(
                    "ESCAPE takes a quoted single character".to_owned(),
                    other.position,
                );
                return None;
            }
        };
        let Some(tokens) = compile_like(&raw, escape_char) else {
            let detail = format!("LIKE pattern '{raw}' ends with its escape character");
            self.errors.push(FilterError::InvalidLiteral {
                detail,
                position: pattern.position,
            });
            return None;
        };
        let pattern = LikePattern {
            raw: raw.into_boxed_str(),
            escape: escape_char,
            tokens,
        };
        Some(Predicate::Like {
            operand: operand.operand,
            pattern,
            negated,
        })
    }

    fn between(
        &mut self,
        operand: SyntaxOperand,
        low: SyntaxOperand,
        high: SyntaxOperand,
        negated: bool,
    ) -> Option<Predicate> {
        let (operand, low, high) = (self.operand(operand), self.operand(low), self.operand(high));
        let (operand, low, high) = (operand?, low?, high?);
        if operand.kind == Kind::Null {
            self.mismatch(
                "NULL cannot be tested with BETWEEN; use IS NULL".to_owned(),
                operand.position,
            );
            return None;
        }
        let low_ok = self.check_comparable(&operand, &low);
        let high_ok = self.check_comparable(&operand, &high);
        if !(low_ok && high_ok) {
            return None;
        }
        let low = coerce_to(low.operand, operand.kind);
        let high = coerce_to(high.operand, operand.kind);
        Some(Predicate::Between {
            operand: operand.operand,
            low,
            high,
            negated,
        })
    }

    fn bare(&mut self, operand: SyntaxOperand) -> Option<Predicate> {
        let typed = self.operand(operand)?;
        if typed.kind == Kind::Value(ValueKind::Boolean) {
            return Some(Predicate::IsTrue(typed.operand));
        }
        let detail = format!(
            "expected a comparison after {}; only a boolean can stand alone",
            describe(&typed)
        );
        self.mismatch(detail, typed.position);
        None
    }
}

fn comparable(left: ValueKind, right: ValueKind) -> bool {
    use ValueKind::{Boolean, Date, Number};
    left == right
        || matches!(
            (left, right),
            (Number, Date) | (Date, Number) | (Number, Boolean) | (Boolean, Number)
        )
}

/// IN list members are what `=` accepts against the operand: a value of its kind; numbers
/// and dates mix (epoch ms); booleans and numbers mix (a boolean is the small integer 0 or 1,
/// as the metadata advertises it).
fn in_list_compatible(operand: ValueKind, item: ValueKind) -> bool {
    comparable(operand, item)
}

fn mirror(op: CompareOp) -> CompareOp {
    match op {
        CompareOp::Less => CompareOp::Greater,
        CompareOp::LessOrEqual => CompareOp::GreaterOrEqual,
        CompareOp::Greater => CompareOp::Less,
        CompareOp::GreaterOrEqual => CompareOp::LessOrEqual,
        other => other,
    }
}

fn kind_of_value(operand: &Operand) -> ValueKind {
    match operand {
        Operand::Literal(Literal::Date(_)) => ValueKind::Date,
        _ => ValueKind::Number,
    }
}

/// A whole number compared with a date becomes a date literal (epoch milliseconds), so that
/// `observed > 1700000000000` and `observed > TIMESTAMP '2023-11-14 22:13:20'` are one clause.
fn coerce_to(operand: Operand, target: Kind) -> Operand {
    match operand {
        Operand::Literal(Literal::Number(value)) if target == Kind::Value(ValueKind::Date) => {
            match as_epoch_ms(value) {
                Some(epoch_ms) => Operand::Literal(Literal::Date(epoch_ms)),
                None => Operand::Literal(Literal::Number(value)),
            }
        }
        other => other,
    }
}

fn as_epoch_ms(value: f64) -> Option<i64> {
    let in_range = value.fract() == 0.0
        && value >= date::MIN_EPOCH_MS as f64
        && value <= date::MAX_EPOCH_MS as f64;
    in_range.then_some(value as i64)
}

fn build_in_items(kind: ValueKind, literals: Vec<Literal>) -> InItems {
    match kind {
        ValueKind::String => {
            let mut values: Vec<Box<str>> = literals
                .into_iter()
                .filter_map(|literal| {
                    if let Literal::String(text) = literal {
                        Some(text)
                    } else {
                        None
                    }
                })
                .collect();
            values.sort_unstable();
            values.dedup();
            InItems::Strings(values)
        }
        ValueKind::Boolean
            if literals
                .iter()
                .all(|literal| matches!(literal, Literal::Boolean(_))) =>
        {
            let mut values: Vec<bool> = literals
                .iter()
                .filter_map(|literal| {
                    if let Literal::Boolean(value) = literal {
                        Some(*value)
                    } else {
                        None
                    }
                })
                .collect();
            values.sort_unstable();
            values.dedup();
            InItems::Booleans(values)
        }
        ValueKind::Date if literals.iter().all(|literal| date_value(literal).is_some()) => {
            let mut values: Vec<i64> = literals.iter().filter_map(date_value).collect();
            values.sort_unstable();
            values.dedup();
            InItems::Dates(values)
        }
        // Numbers, dates as epoch ms, booleans as 0 and 1: the evaluator compares a boolean
        // or date operand with such a list by its numeric value.
        ValueKind::Number | ValueKind::Date | ValueKind::Boolean => {
            let mut values: Vec<f64> = literals
                .iter()
                .filter_map(|literal| match literal {
                    Literal::Number(value) => Some(*value),
                    Literal::Date(epoch_ms) => Some(*epoch_ms as f64),
                    Literal::Boolean(value) => Some(f64::from(u8::from(*value))),
                    _ => None,
                })
                .collect();
            values.sort_unstable_by(f64::total_cmp);
            // -0.0 and 0.0 are one value in SQL.
            values.dedup_by(|left, right| left == right);
            InItems::Numbers(values)
        }
    }
}

fn date_value(literal: &Literal) -> Option<i64> {
    match literal {
        Literal::Date(epoch_ms) => Some(*epoch_ms),
        Literal::Number(value) => as_epoch_ms(*value),
        _ => None,
    }
}

/// Compiles a LIKE pattern; `None` when it ends with a lone escape character.
fn compile_like(raw: &str, escape: Option<char>) -> Option<Vec<LikeToken>> {
    let mut tokens = Vec::with_capacity(raw.len());
    let mut characters = raw.chars();
    while let Some(character) = characters.next() {
        let token = match character {
            _ if Some(character) == escape => LikeToken::Char(characters.next()?),
            '%' => LikeToken::Any,
            '_' => LikeToken::One,
            other => LikeToken::Char(other),
        };
        // Consecutive `%` mean the same as one; keeping one keeps matching linear-ish.
        if !(token == LikeToken::Any && tokens.last() == Some(&LikeToken::Any)) {
            tokens.push(token);
        }
    }
    Some(tokens)
}

fn describe(typed: &Typed) -> String {
    match (&typed.operand, typed.kind) {
        (Operand::Field(field), Kind::Value(kind)) => {
            format!("field \"{}\" ({})", field.name, kind_name(kind))
        }
        (Operand::Literal(literal), _) => {
            let kind = match literal {
                Literal::Null => "",
                Literal::Number(_) => "number ",
                Literal::String(_) => "string ",
                Literal::Date(_) => "date ",
                Literal::Boolean(_) => "boolean ",
            };
            format!("{kind}{literal}")
        }
        (Operand::Field(field), Kind::Null) => format!("field \"{}\"", field.name),
    }
}

fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Number => "number",
        ValueKind::String => "string",
        ValueKind::Date => "date",
        ValueKind::Boolean => "boolean",
    }
}
