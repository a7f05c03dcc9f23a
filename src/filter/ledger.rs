//! `WhereLedger`: what a service's distinct where clauses cost per feature, against a budget.
//! The broker evaluates each distinct clause once per feature whatever the number of sessions
//! using it, so the cost that can starve a service is the sum over distinct clauses of their
//! conditions. A session holds a `WherePermit` for its clause; a clause already in use costs
//! nothing more, a new one is refused past the budget with a filter error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FilterError, WhereClause};

#[derive(Default)]
struct Entries {
    /// Canonical clause -> (permits held, conditions).
    clauses: HashMap<String, (usize, usize)>,
    total_nodes: usize,
}

/// One service's ledger.
pub struct WhereLedger {
    max_nodes: usize,
    entries: Mutex<Entries>,
}

/// A session's share of its clause's cost; released when dropped.
pub struct WherePermit {
    ledger: Arc<WhereLedger>,
    canonical: String,
}

impl WhereLedger {
    /// A ledger allowing at most `max_nodes` conditions over all distinct clauses.
    pub fn new(max_nodes: usize) -> Arc<WhereLedger> {
        Arc::new(WhereLedger {
            max_nodes,
            entries: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a permit for `clause`: free when another session uses the same clause, refused
    /// when a new clause would take the service past its budget.
    pub fn admit(
        self: &Arc<WhereLedger>,
        clause: &WhereClause,
    ) -> Result<WherePermit, FilterError> {
        let mut entries = self.lock();
        let canonical = clause.canonical();
        if let Some((permits, _)) = entries.clauses.get_mut(canonical) {
            *permits += 1;
        } else {
            let nodes = clause.predicate().node_count();
            if entries.total_nodes + nodes > self.max_nodes {
                return Err(FilterError::ServiceBusy {
                    max_nodes: self.max_nodes,
                });
            }
            entries.total_nodes += nodes;
            entries.clauses.insert(canonical.to_owned(), (1, nodes));
        }
        Ok(WherePermit {
            ledger: self.clone(),
            canonical: canonical.to_owned(),
        })
    }

    /// Conditions per feature over all distinct clauses in use, and how many clauses.
    pub fn usage(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.total_nodes, entries.clauses.len())
    }
}

impl Drop for WherePermit {
    fn drop(&mut self) {
        let mut entries = self.ledger.lock();
        let Some((permits, nodes)) = entries.clauses.get_mut(&self.canonical) else {
            return;
        };
        *permits -= 1;
        if *permits == 0 {
            let nodes = *nodes;
            entries.total_nodes -= nodes;
            entries.clauses.remove(&self.canonical);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::{Field, FieldType, GeometryType, Schema};
    use crate::filter::FilterLimits;
    use crate::geometry::Wkid;

    fn clause(text: &str) -> WhereClause {
        let schema = Schema::new(
            vec![
                Field::new("OBJECTID", FieldType::ObjectId),
                Field::new("speed", FieldType::Double),
            ],
            "OBJECTID",
            "OBJECTID",
            GeometryType::Point,
            Wkid::Wgs84,
        )
        .unwrap();
        WhereClause::compile(&schema, text, FilterLimits::default()).unwrap()
    }

    #[test]
    fn shared_clauses_cost_once_new_ones_are_refused_past_the_budget_and_released_on_drop() {
        let ledger = WhereLedger::new(4);
        let three = clause("speed > 1 OR speed > 2");
        let first = ledger.admit(&three).unwrap();
        let same = ledger
            .admit(&clause("NOT NOT (speed > 1 OR speed > 2)"))
            .unwrap();
        assert_eq!(ledger.usage(), (3, 1));
        let refused = ledger.admit(&clause("speed > 5 OR speed < 1")).err();
        assert_eq!(refused, Some(FilterError::ServiceBusy { max_nodes: 4 }));
        let one = ledger.admit(&clause("speed > 9")).unwrap();
        assert_eq!(ledger.usage(), (4, 2));
        drop((first, one));
        assert_eq!(ledger.usage(), (3, 1));
        drop(same);
        assert_eq!(ledger.usage(), (0, 0));
        assert!(ledger.admit(&clause("speed > 5 OR speed < 1")).is_ok());
    }
}
