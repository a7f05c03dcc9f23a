//! Where-clause lexer: bytes to tokens with byte positions. Keywords are recognised by the
//! parser (case-insensitively), so that a field may share a name with a keyword when quoted.

use super::error::FilterError;

/// One token and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub position: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TokenKind {
    /// A bare word: keyword or field name.
    Word(String),
    /// `"field name"`.
    QuotedName(String),
    /// A numeric literal, already parsed.
    Number(f64),
    /// `'text'` with `''` unescaped.
    String(String),
    LeftParen,
    RightParen,
    Comma,
    Operator(CompareOp),
    End,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Equal,
    /// `<>` or `!=`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl CompareOp {
    /// The canonical SQL spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Equal => "=",
            CompareOp::NotEqual => "<>",
            CompareOp::Less => "<",
            CompareOp::LessOrEqual => "<=",
            CompareOp::Greater => ">",
            CompareOp::GreaterOrEqual => ">=",
        }
    }
}

impl TokenKind {
    /// How the token reads in an "expected X, found Y" message.
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenKind::Word(word) => format!("\"{}\"", shorten(word)),
            TokenKind::QuotedName(name) => format!("field \"{}\"", shorten(name)),
            TokenKind::Number(number) => format!("number {number}"),
            TokenKind::String(text) => format!("string '{}'", shorten(text)),
            TokenKind::LeftParen => "\"(\"".to_owned(),
            TokenKind::RightParen => "\")\"".to_owned(),
            TokenKind::Comma => "\",\"".to_owned(),
            TokenKind::Operator(op) => format!("\"{}\"", op.symbol()),
            TokenKind::End => "end of clause".to_owned(),
        }
    }
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Splits a clause into tokens, ending with `TokenKind::End`.
pub(crate) fn tokenize(clause: &str) -> Result<Vec<Token>, FilterError> {
    let bytes = clause.as_bytes();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let start = index;
        let byte = bytes[index];
        let kind = match byte {
            b' ' | b'\t' | b'\r' | b'\n' => {
                index += 1;
                continue;
            }
            b'(' => single(&mut index, TokenKind::LeftParen),
            b')' => single(&mut index, TokenKind::RightParen),
            b',' => single(&mut index, TokenKind::Comma),
            b'=' => single(&mut index, TokenKind::Operator(CompareOp::Equal)),
            b'<' | b'>' | b'!' => operator(bytes, &mut index)?,
            b'\'' => TokenKind::String(quoted(clause, &mut index, b'\'', "string")?),
            b'"' => TokenKind::QuotedName(quoted(clause, &mut index, b'"', "quoted field name")?),
            b'0'..=b'9' | b'.' => number(clause, &mut index)?,
            b'-' | b'+'
                if bytes
                    .get(index + 1)
                    .is_some_and(|next| next.is_ascii_digit() || *next == b'.') =>
            {
                number(clause, &mut index)?
            }
            _ if byte == b'_' || byte.is_ascii_alphabetic() || byte >= 0x80 => {
                while index < bytes.len()
                    && (bytes[index] == b'_'
                        || bytes[index].is_ascii_alphanumeric()
                        || bytes[index] >= 0x80)
                {
                    index += 1;
                }
                TokenKind::Word(clause[start..index].to_owned())
            }
            _ => {
                let character = clause[start..].chars().next().unwrap_or('?');
                return Err(super::error::expected(
                    "an operand, operator or keyword",
                    format!("\"{character}\""),
                    start,
                ));
            }
        };
        tokens.push(Token {
            kind,
            position: start,
        });
    }
    tokens.push(Token {
        kind: TokenKind::End,
        position: bytes.len(),
    });
    Ok(tokens)
}

fn single(index: &mut usize, kind: TokenKind) -> TokenKind {
    *index += 1;
    kind
}

fn operator(bytes: &[u8], index: &mut usize) -> Result<TokenKind, FilterError> {
    let start = *index;
    let next = bytes.get(start + 1).copied();
    let (op, length) = match (bytes[start], next) {
        (b'<', Some(b'=')) => (CompareOp::LessOrEqual, 2),
        (b'<', Some(b'>')) => (CompareOp::NotEqual, 2),
        (b'<', _) => (CompareOp::Less, 1),
        (b'>', Some(b'=')) => (CompareOp::GreaterOrEqual, 2),
        (b'>', _) => (CompareOp::Greater, 1),
        (b'!', Some(b'=')) => (CompareOp::NotEqual, 2),
        _ => return Err(super::error::expected("\"!=\"", "\"!\"", start)),
    };
    *index += length;
    Ok(TokenKind::Operator(op))
}

/// Reads a quoted run where a doubled quote stands for one quote character.
fn quoted(
    clause: &str,
    index: &mut usize,
    quote: u8,
    what: &'static str,
) -> Result<String, FilterError> {
    let bytes = clause.as_bytes();
    let start = *index;
    let mut text = String::new();
    let mut run_start = start + 1;
    let mut cursor = start + 1;
    loop {
        match bytes.get(cursor) {
            None => {
                return Err(FilterError::Unterminated {
                    what,
                    position: start,
                });
            }
            Some(&byte) if byte == quote => {
                text.push_str(&clause[run_start..cursor]);
                if bytes.get(cursor + 1) == Some(&quote) {
                    text.push(quote as char);
                    cursor += 2;
                    run_start = cursor;
                } else {
                    *index = cursor + 1;
                    return Ok(text);
                }
            }
            Some(_) => cursor += 1,
        }
    }
}

fn number(clause: &str, index: &mut usize) -> Result<TokenKind, FilterError> {
    let bytes = clause.as_bytes();
    let start = *index;
    let mut cursor = start;
    if matches!(bytes[cursor], b'-' | b'+') {
        cursor += 1;
    }
    while cursor < bytes.len() && (bytes[cursor].is_ascii_digit() || bytes[cursor] == b'.') {
        cursor += 1;
    }
    if cursor < bytes.len() && matches!(bytes[cursor], b'e' | b'E') {
        let mut exponent = cursor + 1;
        if exponent < bytes.len() && matches!(bytes[exponent], b'-' | b'+') {
            exponent += 1;
        }
        if exponent < bytes.len() && bytes[exponent].is_ascii_digit() {
            cursor = exponent;
            while cursor < bytes.len() && bytes[cursor].is_ascii_digit() {
                cursor += 1;
            }
        }
    }
    let text = &clause[start..cursor];
    // A number glued to a letter (`10abc`) is a typo, not two tokens.
    let glued = bytes
        .get(cursor)
        .is_some_and(|next| next.is_ascii_alphabetic() || *next == b'_');
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && !glued => {
            *index = cursor;
            Ok(TokenKind::Number(value))
        }
        _ => {
            let end = clause[cursor..]
                .find(|character: char| {
                    !(character.is_alphanumeric() || character == '_' || character == '.')
                })
                .map_or(clause.len(), |offset| cursor + offset);
            Err(FilterError::InvalidLiteral {
                detail: format!("\"{}\" is not a valid number", shorten(&clause[start..end])),
                position: start,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(clause: &str) -> Vec<TokenKind> {
        tokenize(clause)
            .expect("lexes")
            .into_iter()
            .map(|token| token.kind)
            .collect()
    }

    #[test]
    fn tokens_of_a_typical_clause() {
        assert_eq!(
            kinds("name='O''Brien' AND speed>=-1.5e2"),
            vec![
                TokenKind::Word("name".into()),
                TokenKind::Operator(CompareOp::Equal),
                TokenKind::String("O'Brien".into()),
                TokenKind::Word("AND".into()),
                TokenKind::Word("speed".into()),
                TokenKind::Operator(CompareOp::GreaterOrEqual),
                TokenKind::Number(-150.0),
                TokenKind::End,
            ]
        );
    }

    #[test]
    fn lexer_errors_carry_positions() {
        assert_eq!(
            tokenize("a = 'abc").unwrap_err(),
            FilterError::Unterminated {
                what: "string",
                position: 4
            }
        );
        assert_eq!(
            tokenize("\"abc = 1").unwrap_err(),
            FilterError::Unterminated {
                what: "quoted field name",
                position: 0
            }
        );
        assert_eq!(
            tokenize("a = 1.2.3").unwrap_err().to_string(),
            "Invalid where clause: \"1.2.3\" is not a valid number at position 4."
        );
        assert_eq!(
            tokenize("a ; 1").unwrap_err().to_string(),
            "Invalid where clause: expected an operand, operator or keyword, found \";\" at position 2."
        );
    }
}
