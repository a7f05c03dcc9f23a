//! Recursive-descent parser from tokens to an untyped syntax tree. Precedence as in SQL:
//! comparisons bind tightest, then NOT, then AND, then OR. Recursion is capped by a depth
//! counter, and AND/OR chains are flat vectors, so no input can overflow the stack.

use super::error::{FilterError, expected};
use super::lexer::{CompareOp, Token, TokenKind};

/// An operand as written, with its byte position.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SyntaxOperand {
    pub kind: OperandKind,
    pub position: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OperandKind {
    Field(String),
    Number(f64),
    String(String),
    /// `DATE '...'` (`timestamp == false`) or `TIMESTAMP '...'`.
    Date {
        text: String,
        timestamp: bool,
    },
    Boolean(bool),
    Null,
}

/// The syntax tree before names and types are resolved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Syntax {
    Or(Vec<Syntax>),
    And(Vec<Syntax>),
    Not(Box<Syntax>),
    Compare {
        left: SyntaxOperand,
        op: CompareOp,
        right: SyntaxOperand,
    },
    IsNull {
        operand: SyntaxOperand,
        negated: bool,
    },
    In {
        operand: SyntaxOperand,
        items: Vec<SyntaxOperand>,
        negated: bool,
    },
    Like {
        operand: SyntaxOperand,
        pattern: SyntaxOperand,
        escape: Option<SyntaxOperand>,
        negated: bool,
    },
    Between {
        operand: SyntaxOperand,
        low: SyntaxOperand,
        high: SyntaxOperand,
        negated: bool,
    },
    Bare(SyntaxOperand),
}

/// Words that can never be field names unless double-quoted.
const RESERVED: [&str; 12] = [
    "AND", "OR", "NOT", "IS", "NULL", "IN", "LIKE", "ESCAPE", "BETWEEN", "TRUE", "FALSE", "ORDER",
];

/// Whether a bare word is a reserved keyword.
pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED
        .iter()
        .any(|keyword| keyword.eq_ignore_ascii_case(word))
}

pub(crate) struct Parser<'t> {
    tokens: &'t [Token],
    cursor: usize,
    depth: usize,
    max_depth: usize,
    max_in_items: usize,
}

impl<'t> Parser<'t> {
    pub(crate) fn new(tokens: &'t [Token], max_depth: usize, max_in_items: usize) -> Parser<'t> {
        Parser {
            tokens,
            cursor: 0,
            depth: 0,
            max_depth,
            max_in_items,
        }
    }

    /// Parses a whole clause; anything left over is an error.
    pub(crate) fn parse_clause(mut self) -> Result<Syntax, FilterError> {
        let syntax = self.parse_or()?;
        let token = self.peek();
        match token.kind {
            TokenKind::End => Ok(syntax),
            TokenKind::RightParen => Err(FilterError::UnbalancedParenthesis {
                position: token.position,
            }),
            _ => Err(expected(
                "AND, OR or end of clause",
                token.kind.describe(),
                token.position,
            )),
        }
    }

    fn peek(&self) -> &'t Token {
        &self.tokens[self.cursor.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> &'t Token {
        let token = self.peek();
        if self.cursor < self.tokens.len() - 1 {
            self.cursor += 1;
        }
        token
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Word(word) if word.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek_keyword(keyword);
        if found {
            self.advance();
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), FilterError> {
        if self.eat_keyword(keyword) {
            return Ok(());
        }
        let token = self.peek();
        Err(expected(keyword, token.kind.describe(), token.position))
    }

    fn enter(&mut self, position: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(FilterError::TooDeep {
                max_depth: self.max_depth,
                position,
            });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Syntax, FilterError> {
        let mut terms = vec![self.parse_and()?];
        while self.eat_keyword("OR") {
            terms.push(self.parse_and()?);
        }
        Ok(flatten(terms, true))
    }

    fn parse_and(&mut self) -> Result<Syntax, FilterError> {
        let mut terms = vec![self.parse_not()?];
        while self.eat_keyword("AND") {
            terms.push(self.parse_not()?);
        }
        Ok(flatten(terms, false))
    }

    fn parse_not(&mut self) -> Result<Syntax, FilterError> {
        let position = self.peek().position;
        if self.eat_keyword("NOT") {
            self.enter(position)?;
            let inner = self.parse_not()?;
            self.depth -= 1;
            return Ok(Syntax::Not(Box::new(inner)));
        }
        self.parse_predicate()
    }

    fn parse_predicate(&mut self) -> Result<Syntax, FilterError> {
        let token = self.peek();
        if token.kind == TokenKind::LeftParen {
            self.advance();
            self.enter(token.position)?;
            let inner = self.parse_or()?;
            self.depth -= 1;
            let close = self.advance();
            return match close.kind {
                TokenKind::RightParen => Ok(inner),
                TokenKind::End => Err(FilterError::UnbalancedParenthesis {
                    position: token.position,
                }),
                _ => Err(expected(
                    "\")\", AND or OR",
                    close.kind.describe(),
                    close.position,
                )),
            };
        }
        let operand = self.parse_operand()?;
        self.parse_predicate_tail(operand)
    }

    fn parse_predicate_tail(&mut self, operand: SyntaxOperand) -> Result<Syntax, FilterError> {
        if let TokenKind::Operator(op) = self.peek().kind {
            self.advance();
            let right = self.parse_operand()?;
            return Ok(Syntax::Compare {
                left: operand,
                op,
                right,
            });
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            self.expect_keyword("NULL")?;
            return Ok(Syntax::IsNull { operand, negated });
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            let items = self.parse_in_list()?;
            return Ok(Syntax::In {
                operand,
                items,
                negated,
            });
        }
        if self.eat_keyword("LIKE") {
            let pattern = self.parse_operand()?;
            let escape = if self.eat_keyword("ESCAPE") {
                Some(self.parse_operand()?)
            } else {
                None
            };
            return Ok(Syntax::Like {
                operand,
                pattern,
                escape,
                negated,
            });
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.parse_operand()?;
            self.expect_keyword("AND")?;
            let high = self.parse_operand()?;
            return Ok(Syntax::Between {
                operand,
                low,
                high,
                negated,
            });
        }
        if negated {
            let token = self.peek();
            return Err(expected(
                "IN, LIKE or BETWEEN after NOT",
                token.kind.describe(),
                token.position,
            ));
        }
        Ok(Syntax::Bare(operand))
    }

    fn parse_in_list(&mut self) -> Result<Vec<SyntaxOperand>, FilterError> {
        let open = self.advance();
        if open.kind != TokenKind::LeftParen {
            return Err(expected(
                "\"(\" after IN",
                open.kind.describe(),
                open.position,
            ));
        }
        if self.peek().kind == TokenKind::RightParen {
            return Err(FilterError::EmptyInList {
                position: open.position,
            });
        }
        let mut items = Vec::new();
        loop {
            let item = self.parse_operand()?;
            if items.len() == self.max_in_items {
                return Err(FilterError::InListTooLong {
                    max_items: self.max_in_items,
                    position: item.position,
                });
            }
            items.push(item);
            let separator = self.advance();
            match separator.kind {
                TokenKind::Comma => continue,
                TokenKind::RightParen => return Ok(items),
                TokenKind::End => {
                    return Err(FilterError::UnbalancedParenthesis {
                        position: open.position,
                    });
                }
                _ => {
                    return Err(expected(
                        "\",\" or \")\"",
                        separator.kind.describe(),
                        separator.position,
                    ));
                }
            }
        }
    }

    fn parse_operand(&mut self) -> Result<SyntaxOperand, FilterError> {
        let token = self.advance();
        let position = token.position;
        let kind = match &token.kind {
            TokenKind::Number(value) => OperandKind::Number(*value),
            TokenKind::String(text) => OperandKind::String(text.clone()),
            TokenKind::QuotedName(name) => OperandKind::Field(name.clone()),
            TokenKind::Word(word) => self.word_operand(word, position)?,
            other => {
                return Err(expected(
                    "a field name or a value",
                    other.describe(),
                    position,
                ));
            }
        };
        Ok(SyntaxOperand { kind, position })
    }

    fn word_operand(&mut self, word: &str, position: usize) -> Result<OperandKind, FilterError> {
        let upper = word.to_ascii_uppercase();
        let date_literal = matches!(upper.as_str(), "DATE" | "TIMESTAMP")
            && matches!(self.peek().kind, TokenKind::String(_));
        if date_literal {
            let TokenKind::String(text) = &self.advance().kind else {
                unreachable!("peeked a string")
            };
            return Ok(OperandKind::Date {
                text: text.clone(),
                timestamp: upper == "TIMESTAMP",
            });
        }
        Ok(match upper.as_str() {
            "TRUE" => OperandKind::Boolean(true),
            "FALSE" => OperandKind::Boolean(false),
            "NULL" => OperandKind::Null,
            _ if is_reserved(word) => {
                return Err(expected(
                    "a field name or a value",
                    format!("keyword {upper}"),
                    position,
                ));
            }
            _ => OperandKind::Field(word.to_owned()),
        })
    }
}

/// Builds an AND or OR node, splicing in children of the same kind so that equivalent
/// groupings (`(a AND b) AND c`, `a AND (b AND c)`) have one shape.
fn flatten(terms: Vec<Syntax>, is_or: bool) -> Syntax {
    if terms.len() == 1 {
        return terms.into_iter().next().expect("one term");
    }
    let mut flat = Vec::with_capacity(terms.len());
    for term in terms {
        match (term, is_or) {
            (Syntax::Or(children), true) | (Syntax::And(children), false) => flat.extend(children),
            (other, _) => flat.push(other),
        }
    }
    if is_or {
        Syntax::Or(flat)
    } else {
        Syntax::And(flat)
    }
}
