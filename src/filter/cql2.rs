//! CQL2 text (OGC API - Features Part 3, the `filter` parameter with `filter-lang=cql2-text`)
//! mapped onto the where engine, for what both express: comparisons, `AND`/`OR`/`NOT`,
//! `LIKE`, `BETWEEN`, `IN`, `IS [NOT] NULL`, booleans, `TIMESTAMP('..')` and `DATE('..')`
//! literals (Basic CQL2 and the advanced comparison operators), and `S_INTERSECTS(geometry,
//! BBOX(..))` joined by `AND` at the top, which becomes the envelope filter. Anything else
//! (other spatial, temporal or array functions, `CASEI`, arithmetic, a spatial test under
//! `OR` or `NOT`) is refused with an error naming the construct. The where text produced is
//! then compiled, typed and bounded like any where clause.

use std::fmt;

use super::date;

/// Most characters of filter text read.
pub const MAX_FILTER_CHARS: usize = 16 * 1024;

/// What a CQL2 text filter says, in the where engine's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cql2Filter {
    /// The where clause, if the filter has conditions on properties.
    pub where_clause: Option<String>,
    /// `[xmin, ymin, xmax, ymax]` every feature must intersect (in the filter's CRS), if the
    /// filter has `S_INTERSECTS` tests (several intersect).
    pub envelope: Option<[f64; 4]>,
}

/// Why a CQL2 text filter cannot be served; the text names the construct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cql2Error(pub String);

impl fmt::Display for Cql2Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for Cql2Error {}

fn error<T>(text: impl Into<String>) -> Result<T, Cql2Error> {
    Err(Cql2Error(text.into()))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// A bare word: keyword, property or function name.
    Word(String),
    /// `"property"`.
    Quoted(String),
    /// `'text'`, unescaped.
    Text(String),
    /// A number as written.
    Number(String),
    /// `=`, `<>`, `<`, `<=`, `>`, `>=`.
    Compare(&'static str),
    Open,
    Close,
    Comma,
}

const KEYWORDS: &[&str] = &[
    "AND", "OR", "NOT", "LIKE", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE",
];

/// Functions refused by name, with what to say.
const REFUSED_FUNCTIONS: &[(&str, &str)] = &[
    (
        "CASEI",
        "case-insensitive comparison (CASEI) is not supported",
    ),
    (
        "ACCENTI",
        "accent-insensitive comparison (ACCENTI) is not supported",
    ),
    (
        "INTERVAL",
        "INTERVAL is not supported; compare TIMESTAMP values",
    ),
];

fn lex(text: &str) -> Result<Vec<Token>, Cql2Error> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(position, character)) = chars.peek() {
        match character {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                tokens.push(match character {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '=' => {
                chars.next();
                tokens.push(Token::Compare("="));
            }
            '<' | '>' => {
                chars.next();
                let next = chars.peek().map(|&(_, c)| c);
                let operator = match (character, next) {
                    ('<', Some('>')) => "<>",
                    ('<', Some('=')) => "<=",
                    ('>', Some('=')) => ">=",
                    ('<', _) => "<",
                    _ => ">",
                };
                if operator.len() == 2 {
                    chars.next();
                }
                tokens.push(Token::Compare(operator));
            }
            '\'' | '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, c)) if c == character => {
                            if chars.peek().map(|&(_, c)| c) == Some(character) {
                                chars.next();
                                value.push(c);
                            } else {
                                break;
                            }
                        }
                        Some((_, c)) => value.push(c),
                        None => {
                            return error(format!(
                                "the {} opened at position {position} is not closed",
                                if character == '\'' {
                                    "string"
                                } else {
                                    "quoted property name"
                                }
                            ));
                        }
                    }
                }
                tokens.push(if character == '\'' {
                    Token::Text(value)
                } else {
                    Token::Quoted(value)
                });
            }
            c if c.is_ascii_digit()
                || c == '.'
                || ((c == '-' || c == '+') && starts_operand(tokens.last())) =>
            {
                let mut number = String::new();
                number.push(c);
                chars.next();
                while let Some(&(_, c)) = chars.peek() {
                    let exponent_sign = (c == '-' || c == '+') && number.ends_with(['e', 'E']);
                    if c.is_ascii_alphanumeric() || c == '.' || exponent_sign {
                        number.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if number
                    .parse::<f64>()
                    .map_or(true, |value| !value.is_finite())
                {
                    return error(format!(
                        "\"{}\" at position {position} is not a number",
                        shorten(&number)
                    ));
                }
                tokens.push(Token::Number(number));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_alphanumeric() || c == '_' || c == ':' || c == '.' {
                        word.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            '+' | '-' | '*' | '/' | '%' | '^' => {
                return error(format!(
                    "arithmetic (\"{character}\" at position {position}) is not supported"
                ));
            }
            _ => {
                return error(format!(
                    "unexpected character \"{character}\" at position {position}"
                ));
            }
        }
    }
    Ok(tokens)
}

/// Whether a sign here starts a number (rather than being arithmetic on what came before).
fn starts_operand(previous: Option<&Token>) -> bool {
    match previous {
        None | Some(Token::Open | Token::Comma | Token::Compare(_)) => true,
        Some(Token::Word(word)) => is_keyword(word),
        _ => false,
    }
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS
        .iter()
        .any(|keyword| word.eq_ignore_ascii_case(keyword))
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

fn is_word(token: Option<&Token>, keyword: &str) -> bool {
    matches!(token, Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword))
}

/// The text language of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// CQL2 text (`filter-lang=cql2-text`).
    Cql2Text,
    /// The draft CQL text GDAL before 3.9 sends (`filter-lang=cql-text`): the same for what
    /// is served here, except that a date-time is a plain string (`observed > '2026-12-07T10:00:00Z'`).
    CqlText,
}

/// Translates a CQL2 text filter. `geometry` is the name of the geometry queryable.
pub fn translate(text: &str, geometry: &str) -> Result<Cql2Filter, Cql2Error> {
    translate_dialect(text, geometry, Dialect::Cql2Text)
}

/// Translates a filter in `dialect`.
pub fn translate_dialect(
    text: &str,
    geometry: &str,
    dialect: Dialect,
) -> Result<Cql2Filter, Cql2Error> {
    if text.chars().count() > MAX_FILTER_CHARS {
        return error(format!(
            "the filter is longer than {MAX_FILTER_CHARS} characters"
        ));
    }
    let tokens = lex(text)?;
    if tokens.is_empty() {
        return error("the filter is empty");
    }
    let mut filter = Cql2Filter::default();
    let mut conditions = Vec::new();
    for conjunct in top_level_conjuncts(&tokens)? {
        if is_word(conjunct.first(), "S_INTERSECTS") {
            let envelope = spatial_test(conjunct, geometry)?;
            filter.envelope = Some(match filter.envelope {
                None => envelope,
                Some(other) => [
                    other[0].max(envelope[0]),
                    other[1].max(envelope[1]),
                    other[2].min(envelope[2]),
                    other[3].min(envelope[3]),
                ],
            });
        } else {
            conditions.push(format!("({})", where_text(conjunct, geometry, dialect)?));
        }
    }
    if let Some([xmin, ymin, xmax, ymax]) = filter.envelope
        && (xmin > xmax || ymin > ymax)
    {
        // Boxes that do not meet: nothing matches.
        conditions.push("(1 = 0)".to_owned());
        filter.envelope = None;
    }
    if !conditions.is_empty() {
        filter.where_clause = Some(conditions.join(" AND "));
    }
    Ok(filter)
}

/// The conditions joined by `AND` at the top (the whole filter when it has a top-level `OR`).
fn top_level_conjuncts(tokens: &[Token]) -> Result<Vec<&[Token]>, Cql2Error> {
    let mut depth = 0usize;
    let mut cuts = Vec::new();
    let mut pending_between = false;
    let mut has_or = false;
    for (index, token) in tokens.iter().enumerate() {
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| Cql2Error("a \")\" closes nothing".to_owned()))?;
            }
            Token::Word(word) if depth == 0 => {
                if word.eq_ignore_ascii_case("BETWEEN") {
                    pending_between = true;
                } else if word.eq_ignore_ascii_case("AND") {
                    if pending_between {
                        pending_between = false;
                    } else {
                        cuts.push(index);
                    }
                } else if word.eq_ignore_ascii_case("OR") {
                    has_or = true;
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return error("a \"(\" is not closed");
    }
    if has_or {
        return Ok(vec![tokens]);
    }
    let mut conjuncts = Vec::new();
    let mut start = 0;
    for cut in cuts {
        conjuncts.push(&tokens[start..cut]);
        start = cut + 1;
    }
    conjuncts.push(&tokens[start..]);
    if conjuncts.iter().any(|conjunct| conjunct.is_empty()) {
        return error("AND needs a condition on each side");
    }
    Ok(conjuncts)
}

/// `S_INTERSECTS(geometry, BBOX(xmin, ymin, xmax, ymax))` (or six numbers, or a `POINT`).
fn spatial_test(tokens: &[Token], geometry: &str) -> Result<[f64; 4], Cql2Error> {
    let malformed = || {
        Cql2Error(format!(
            "S_INTERSECTS is supported as S_INTERSECTS({geometry}, BBOX(xmin, ymin, xmax, ymax)) or with a POINT(x y)"
        ))
    };
    let [
        Token::Word(_),
        Token::Open,
        property,
        Token::Comma,
        Token::Word(shape),
        Token::Open,
        inner @ ..,
    ] = tokens
    else {
        return Err(malformed());
    };
    let name = match property {
        Token::Word(name) | Token::Quoted(name) => name,
        _ => return Err(malformed()),
    };
    if !name.eq_ignore_ascii_case(geometry) {
        return error(format!(
            "S_INTERSECTS tests the geometry property \"{geometry}\", not \"{}\"",
            shorten(name)
        ));
    }
    let [numbers @ .., Token::Close, Token::Close] = inner else {
        return Err(malformed());
    };
    let shape = shape.to_ascii_uppercase();
    let values: Vec<f64> = match shape.as_str() {
        "BBOX" => numbers
            .iter()
            .enumerate()
            .map(|(index, token)| match token {
                Token::Number(number) if index % 2 == 0 => number.parse().ok(),
                Token::Comma if index % 2 == 1 => Some(0.0),
                _ => None,
            })
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(malformed)?
            .into_iter()
            .step_by(2)
            .collect(),
        "POINT" => match numbers {
            [Token::Number(x), Token::Number(y)] => {
                let (x, y) = (
                    x.parse().map_err(|_| malformed())?,
                    y.parse().map_err(|_| malformed())?,
                );
                vec![x, y, x, y]
            }
            _ => return Err(malformed()),
        },
        other => {
            return error(format!(
                "S_INTERSECTS with a {} is not supported; use BBOX(xmin, ymin, xmax, ymax)",
                shorten(other)
            ));
        }
    };
    let [xmin, ymin, xmax, ymax] = match values[..] {
        [xmin, ymin, xmax, ymax] | [xmin, ymin, _, xmax, ymax, _] => [xmin, ymin, xmax, ymax],
        _ => return Err(malformed()),
    };
    if xmin > xmax {
        return error("a BBOX crossing the antimeridian (xmin > xmax) is not supported");
    }
    if ymin > ymax {
        return error("a BBOX's ymin is greater than its ymax");
    }
    Ok([xmin, ymin, xmax, ymax])
}

/// A condition on properties in the where engine's SQL.
fn where_text(tokens: &[Token], geometry: &str, dialect: Dialect) -> Result<String, Cql2Error> {
    let mut out = String::new();
    let mut index = 0;
    let push = |out: &mut String, piece: &str| {
        if !out.is_empty() && !out.ends_with('(') && piece != ")" && piece != "," {
            out.push(' ');
        }
        out.push_str(piece);
    };
    while index < tokens.len() {
        let token = &tokens[index];
        let next = tokens.get(index + 1);
        match token {
            Token::Word(word) if next == Some(&Token::Open) && !is_keyword(word) => {
                let upper = word.to_ascii_uppercase();
                if let Some((_, why)) = REFUSED_FUNCTIONS.iter().find(|(name, _)| *name == upper) {
                    return error(*why);
                }
                let literal = match (upper.as_str(), tokens.get(index + 2), tokens.get(index + 3)) {
                    ("TIMESTAMP", Some(Token::Text(text)), Some(Token::Close)) => {
                        let epoch_ms = date::parse_rfc3339(text).filter(|_| text.len() > 10).ok_or_else(|| {
                            Cql2Error(format!(
                                "TIMESTAMP('{}') is not an RFC 3339 date-time such as 2026-12-07T10:00:00Z",
                                shorten(text)
                            ))
                        })?;
                        format!("TIMESTAMP '{}'", date::format_timestamp(epoch_ms))
                    }
                    ("DATE", Some(Token::Text(text)), Some(Token::Close)) => {
                        if date::parse(text, false).is_none() {
                            return error(format!(
                                "DATE('{}') is not a date such as 2026-12-07",
                                shorten(text)
                            ));
                        }
                        format!("DATE '{text}'")
                    }
                    ("TIMESTAMP" | "DATE", _, _) => {
                        return error(format!("{upper} takes one quoted text, as {upper}('...')"));
                    }
                    (name, _, _) if name.starts_with("S_") => {
                        return error(format!(
                            "{name} is not supported; S_INTERSECTS(geometry, BBOX(..)) is, joined by AND at the top of the filter"
                        ));
                    }
                    (name, _, _) if name.starts_with("T_") || name.starts_with("A_") => {
                        return error(format!(
                            "{name} is not supported: compare the time property with TIMESTAMP values"
                        ));
                    }
                    (name, _, _) => {
                        return error(format!("the function {} is not supported", shorten(name)));
                    }
                };
                push(&mut out, &literal);
                index += 4;
                continue;
            }
            Token::Word(word) if is_keyword(word) => {
                push(&mut out, &word.to_ascii_uppercase());
            }
            Token::Word(name) | Token::Quoted(name) => {
                if name.eq_ignore_ascii_case(geometry) {
                    return error(format!(
                        "the geometry \"{geometry}\" can only be tested with S_INTERSECTS"
                    ));
                }
                push(&mut out, &format!("\"{}\"", name.replace('"', "")));
            }
            Token::Text(text) => match date::parse_rfc3339(text) {
                Some(epoch_ms) if dialect == Dialect::CqlText && text.len() > 10 => push(
                    &mut out,
                    &format!("TIMESTAMP '{}'", date::format_timestamp(epoch_ms)),
                ),
                _ => push(&mut out, &format!("'{}'", text.replace('\'', "''"))),
            },
            Token::Number(number) => push(&mut out, number),
            Token::Compare(operator) => push(&mut out, operator),
            Token::Open => push(&mut out, "("),
            Token::Close => push(&mut out, ")"),
            Token::Comma => push(&mut out, ","),
        }
        index += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn where_of(text: &str) -> String {
        translate(text, "geometry")
            .unwrap()
            .where_clause
            .unwrap_or_default()
    }

    #[test]
    fn basic_cql2_maps_onto_sql() {
        assert_eq!(where_of("speed > 50"), r#"("speed" > 50)"#);
        assert_eq!(
            where_of(r#""name" = 'bus ''7''' AND active = TRUE"#),
            r#"("name" = 'bus ''7''') AND ("active" = TRUE)"#
        );
        assert_eq!(
            where_of("speed BETWEEN 10 AND 20 AND route IN ('R1','R2')"),
            r#"("speed" BETWEEN 10 AND 20) AND ("route" IN ('R1', 'R2'))"#
        );
        assert_eq!(
            where_of("speed < -5 OR NOT (name LIKE 'a%') OR name IS NOT NULL"),
            r#"("speed" < -5 OR NOT ("name" LIKE 'a%') OR "name" IS NOT NULL)"#
        );
        assert_eq!(
            where_of("observed >= TIMESTAMP('2026-12-07T10:00:00.5+01:00')"),
            r#"("observed" >= TIMESTAMP '2026-12-07 09:00:00.500')"#
        );
        assert_eq!(
            where_of("observed < DATE('2026-12-07')"),
            r#"("observed" < DATE '2026-12-07')"#
        );
    }

    #[test]
    fn the_draft_cql_text_of_older_gdal_reads_date_times_as_strings() {
        let filter = translate_dialect(
            "(observed > '2026-12-07T10:00:00Z') AND (name = 'a')",
            "geometry",
            Dialect::CqlText,
        )
        .unwrap();
        assert_eq!(
            filter.where_clause.as_deref(),
            Some(r#"(("observed" > TIMESTAMP '2026-12-07 10:00:00')) AND (("name" = 'a'))"#)
        );
        assert_eq!(
            where_of("observed > '2026-12-07T10:00:00Z'"),
            r#"("observed" > '2026-12-07T10:00:00Z')"#
        );
    }

    #[test]
    fn s_intersects_at_the_top_becomes_the_envelope() {
        let filter = translate(
            "S_INTERSECTS(geometry, BBOX(-118,33,-117,34)) AND speed > 1",
            "geometry",
        )
        .unwrap();
        assert_eq!(filter.envelope, Some([-118.0, 33.0, -117.0, 34.0]));
        assert_eq!(filter.where_clause.as_deref(), Some(r#"("speed" > 1)"#));
        let two = translate(
            "S_INTERSECTS(geometry,BBOX(0,0,10,10)) AND S_INTERSECTS(\"geometry\",BBOX(5,-5,20,5))",
            "geometry",
        )
        .unwrap();
        assert_eq!(two.envelope, Some([5.0, 0.0, 10.0, 5.0]));
        let apart = translate(
            "S_INTERSECTS(geometry,BBOX(0,0,1,1)) AND S_INTERSECTS(geometry,BBOX(5,5,6,6))",
            "geometry",
        )
        .unwrap();
        assert_eq!(apart.envelope, None);
        assert_eq!(apart.where_clause.as_deref(), Some("(1 = 0)"));
        let point = translate("S_INTERSECTS(geometry, POINT(1.5 2))", "geometry").unwrap();
        assert_eq!(point.envelope, Some([1.5, 2.0, 1.5, 2.0]));
    }

    #[test]
    fn what_sql_cannot_say_is_refused_by_name() {
        for (text, named) in [
            ("CASEI(name) = 'a'", "CASEI"),
            ("S_WITHIN(geometry, BBOX(0,0,1,1))", "S_WITHIN"),
            (
                "speed > 1 OR S_INTERSECTS(geometry, BBOX(0,0,1,1))",
                "S_INTERSECTS",
            ),
            (
                "S_INTERSECTS(geometry, POLYGON((0 0,1 0,1 1,0 0)))",
                "POLYGON",
            ),
            (
                "T_AFTER(observed, TIMESTAMP('2026-01-01T00:00:00Z'))",
                "T_AFTER",
            ),
            ("speed + 1 > 2", "arithmetic"),
            ("TIMESTAMP('yesterday') < observed", "TIMESTAMP"),
            ("name = 'open", "string"),
            ("(speed > 1", "("),
            ("speed > 1)", ")"),
            ("speed > 1 AND", "AND"),
            ("geometry = 1", "geometry"),
            ("S_INTERSECTS(other, BBOX(0,0,1,1))", "other"),
            ("S_INTERSECTS(geometry, BBOX(10,0,1,1))", "antimeridian"),
            ("", "empty"),
            ("speed > 1e999", "number"),
            ("speed ~ 1", "~"),
        ] {
            let err = translate(text, "geometry").unwrap_err();
            assert!(err.0.contains(named), "{text}: {err}");
        }
    }
}
