//! Rewrites a compiled predicate into a smaller one that gives the same truth value (SQL's
//! three-valued logic) for every feature, so that a clause costs what it means rather than
//! how it is written, and clauses that mean the same share one canonical form (one group):
//! `NOT NOT x` is `x`; a NOT over IS NULL, IN, LIKE or BETWEEN flips that predicate's own
//! negation; nested ANDs and ORs are flattened. `NOT (a < b)` is left alone: it is not
//! `a >= b` when `a` is NaN.

use super::ast::Predicate;

impl Predicate {
    /// The simplified predicate.
    pub(crate) fn simplified(self) -> Predicate {
        match self {
            Predicate::Not(inner) => negate(inner.simplified()),
            Predicate::And(children) => Predicate::And(flatten(children, true)),
            Predicate::Or(children) => Predicate::Or(flatten(children, false)),
            other => other,
        }
    }

    /// Predicates evaluated per feature: every node of the tree (an IN list is one).
    pub fn node_count(&self) -> usize {
        match self {
            Predicate::And(children) | Predicate::Or(children) => {
                1 + children.iter().map(Predicate::node_count).sum::<usize>()
            }
            Predicate::Not(inner) => 1 + inner.node_count(),
            _ => 1,
        }
    }
}

/// NOT over an already simplified predicate.
fn negate(predicate: Predicate) -> Predicate {
    match predicate {
        Predicate::Not(inner) => *inner,
        Predicate::IsNull { operand, negated } => Predicate::IsNull {
            operand,
            negated: !negated,
        },
        Predicate::In {
            operand,
            list,
            negated,
        } => Predicate::In {
            operand,
            list,
            negated: !negated,
        },
        Predicate::Like {
            operand,
            pattern,
            negated,
        } => Predicate::Like {
            operand,
            pattern,
            negated: !negated,
        },
        Predicate::Between {
            operand,
            low,
            high,
            negated,
        } => Predicate::Between {
            operand,
            low,
            high,
            negated: !negated,
        },
        other => Predicate::Not(Box::new(other)),
    }
}

/// Simplifies children and splices those of the same connective into their parent (AND and
/// OR are associative in three-valued logic).
fn flatten(children: Vec<Predicate>, and: bool) -> Vec<Predicate> {
    let mut flat = Vec::with_capacity(children.len());
    for child in children {
        match child.simplified() {
            Predicate::And(grandchildren) if and => flat.extend(grandchildren),
            Predicate::Or(grandchildren) if !and => flat.extend(grandchildren),
            other => flat.push(other),
        }
    }
    flat
}
