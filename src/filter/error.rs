//! `FilterError`: every problem a where clause, envelope or outFields list can have. Each
//! variant's `Display` is the exact string a client sees in the filter reply's `error` array.

use crate::geometry::EnvelopeError;

/// One problem with a filter. Positions are byte offsets into the where clause or list.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// A where clause or outFields entry names a field the schema does not have (seed 003).
    #[error("The field \"{name}\" does not exist in this Stream Service's schema.")]
    UnknownField {
        /// The name as written.
        name: String,
        /// Byte offset of the name.
        position: usize,
    },
    /// The parser met a token it did not expect.
    #[error("Invalid where clause: expected {expected}, found {found} at position {position}.")]
    Expected {
        /// What would have been valid.
        expected: String,
        /// The token that was found, described.
        found: String,
        /// Byte offset of the token.
        position: usize,
    },
    /// A single-quoted string or a double-quoted field name has no closing quote.
    #[error("Invalid where clause: unterminated {what} starting at position {position}.")]
    Unterminated {
        /// `string` or `quoted field name`.
        what: &'static str,
        /// Byte offset of the opening quote.
        position: usize,
    },
    /// A `(` without `)` or a `)` without `(`.
    #[error("Invalid where clause: unbalanced parenthesis at position {position}.")]
    UnbalancedParenthesis {
        /// Byte offset of the parenthesis.
        position: usize,
    },
    /// `IN ()`.
    #[error("Invalid where clause: empty IN list at position {position}.")]
    EmptyInList {
        /// Byte offset of the `(`.
        position: usize,
    },
    /// Operands that cannot be compared, LIKE on a non-string, a non-boolean used as a predicate.
    #[error("Invalid where clause: {detail} at position {position}.")]
    TypeMismatch {
        /// What is wrong, naming the field and the types.
        detail: String,
        /// Byte offset of the offending operand.
        position: usize,
    },
    /// A literal that does not mean anything: a malformed date, a bad ESCAPE.
    #[error("Invalid where clause: {detail} at position {position}.")]
    InvalidLiteral {
        /// What is wrong.
        detail: String,
        /// Byte offset of the literal.
        position: usize,
    },
    /// The clause is longer than the configured limit.
    #[error(
        "Invalid where clause: the clause is {length_bytes} bytes long; at most {max_bytes} bytes are allowed."
    )]
    ClauseTooLong {
        /// The clause length.
        length_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// Parentheses or NOTs nested deeper than the configured limit.
    #[error("Invalid where clause: nesting deeper than {max_depth} levels at position {position}.")]
    TooDeep {
        /// The limit.
        max_depth: usize,
        /// Byte offset where the limit was passed.
        position: usize,
    },
    /// More predicates than a clause may evaluate per feature.
    #[error(
        "Invalid where clause: {nodes} conditions after simplification; at most {max_nodes} are allowed (use IN for lists of values)."
    )]
    TooComplex {
        /// Predicates in the simplified clause.
        nodes: usize,
        /// The limit.
        max_nodes: usize,
    },
    /// A new distinct where clause would take the service past its filter budget.
    #[error(
        "Invalid filter: this service already evaluates as many distinct where clauses as it can ({max_nodes} conditions in all); use a clause other viewers use, or try again later."
    )]
    ServiceBusy {
        /// The service's budget.
        max_nodes: usize,
    },
    /// An IN list longer than the configured limit.
    #[error("Invalid where clause: IN list longer than {max_items} items at position {position}.")]
    InListTooLong {
        /// The limit.
        max_items: usize,
        /// Byte offset of the item past the limit.
        position: usize,
    },
    /// The envelope filter is invalid.
    #[error("{0}")]
    Geometry(#[from] EnvelopeError),
    /// A `spatialRel` this server does not know.
    #[error(
        "Invalid spatialRel \"{0}\"; supported: esriSpatialRelIntersects, esriSpatialRelEnvelopeIntersects, esriSpatialRelContains, esriSpatialRelWithin."
    )]
    InvalidSpatialRel(String),
    /// A part of the filter message has the wrong JSON type or shape.
    #[error("Invalid filter: {0}")]
    Malformed(String),
}

/// Describes a found token the way sqlparser does: quoted text, keyword or end.
pub(crate) fn expected(
    expected: impl Into<String>,
    found: impl Into<String>,
    position: usize,
) -> FilterError {
    FilterError::Expected {
        expected: expected.into(),
        found: found.into(),
        position,
    }
}
