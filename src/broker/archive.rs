//! Queries of the latest state: what the feature layer's `/query` serves (docs/protocol.md
//! §10). The broker runs them on the state it owns; encoding the page is the caller's.
//!
//! Paging stays consistent while tracks change: the first page of a query fixes the order of
//! the tracks it matches (kept for [`PAGING_TTL`] under the query's key), and later pages take
//! each listed track's current observation. A track appears at most once over the pages, and
//! none that lived through the paging is lost; tracks born meanwhile wait for the socket's
//! snapshot, tracks gone meanwhile are skipped.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::subscription::Subscription;
use crate::feature::{Feature, FieldValue};
use crate::geometry::Envelope;
use crate::latest::{LatestState, TrackKey};

/// How long a paged query's order is kept for its next pages.
pub const PAGING_TTL: Duration = Duration::from_secs(60);
/// Paged queries whose order is kept at once, per service (the oldest goes first).
const MAX_PAGED_QUERIES: usize = 64;

/// What a query asks of the latest state.
#[derive(Clone, Debug)]
pub struct ArchiveQuery {
    /// The where clause and envelope (in the service's reference); its view is unused here.
    pub filter: Subscription,
    /// Only these object ids, if given.
    pub object_ids: Option<Vec<i64>>,
    /// Sort keys: field index and descending; ties (and no keys) by object id ascending.
    pub order_by: Vec<(usize, bool)>,
    /// What to answer.
    pub answer: Answer,
}

/// What a query answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A page of features: skip `offset`, at most `count`; `key` names the query for paging.
    Page {
        /// Features skipped.
        offset: usize,
        /// Most features returned.
        count: usize,
        /// Everything about the query but its page (the paging order is kept under it).
        key: String,
    },
    /// The number of matching features.
    Count,
    /// The object ids of every matching feature.
    Ids,
    /// The bounding box of every live feature (the layer's extent).
    Extent,
}

/// A query's result.
#[derive(Debug)]
pub enum ArchiveResult {
    /// A page, and whether more features follow it.
    Page {
        /// The features, in order.
        features: Vec<Feature>,
        /// More follow (`exceededTransferLimit`).
        exceeded: bool,
    },
    /// `returnCountOnly`.
    Count(usize),
    /// `returnIdsOnly`, ascending.
    Ids(Vec<i64>),
    /// The extent, if any feature is live.
    Extent(Option<Envelope>),
}

/// The orders of paged queries in progress.
#[derive(Default)]
pub struct PagingOrders {
    orders: HashMap<String, (Instant, Arc<Vec<TrackKey>>)>,
}

fn object_id(feature: &Feature, field: usize) -> i64 {
    match feature.attributes.get(field) {
        Some(FieldValue::Integer(id)) => *id,
        _ => 0,
    }
}

/// SQL order: NULL first, numbers (and dates, booleans) by value, text by code point.
fn compare(a: &FieldValue, b: &FieldValue) -> Ordering {
    let number = |value: &FieldValue| match value {
        FieldValue::Integer(n) | FieldValue::Date(n) => Some(*n as f64),
        FieldValue::Double(n) => Some(*n),
        FieldValue::Boolean(flag) => Some(f64::from(u8::from(*flag))),
        _ => None,
    };
    match (a, b) {
        (FieldValue::Null, FieldValue::Null) => Ordering::Equal,
        (FieldValue::Null, _) => Ordering::Less,
        (_, FieldValue::Null) => Ordering::Greater,
        (FieldValue::String(a), FieldValue::String(b)) => a.cmp(b),
        _ => match (number(a), number(b)) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            _ => Ordering::Equal,
        },
    }
}

impl PagingOrders {
    /// Runs a query on the latest state.
    pub fn run(
        &mut self,
        latest: &LatestState,
        query: &ArchiveQuery,
        object_id_field: usize,
        now: Instant,
    ) -> ArchiveResult {
        if query.answer == Answer::Extent {
            let mut extent: Option<Envelope> = None;
            for feature in latest.features() {
                if let Some(bounds) = feature.geometry.bounding_box() {
                    extent = Some(match extent {
                        Some(extent) => extent.union(&bounds),
                        None => bounds,
                    });
                }
            }
            return ArchiveResult::Extent(extent);
        }
        let selected = |feature: &&Feature| {
            query.object_ids.as_ref().is_none_or(|ids| {
                ids.binary_search(&object_id(feature, object_id_field))
                    .is_ok()
            }) && query.filter.matches(feature)
        };
        match &query.answer {
            Answer::Count => {
                ArchiveResult::Count(latest.features().iter().filter(selected).count())
            }
            Answer::Ids => {
                let mut ids: Vec<i64> = latest
                    .features()
                    .iter()
                    .filter(selected)
                    .map(|feature| object_id(feature, object_id_field))
                    .collect();
                ids.sort_unstable();
                ArchiveResult::Ids(ids)
            }
            Answer::Extent => unreachable!("answered above"),
            Answer::Page { offset, count, key } => {
                self.orders
                    .retain(|_, (since, _)| now.duration_since(*since) < PAGING_TTL);
                let order = match self.orders.get(key) {
                    Some((_, order)) if *offset > 0 => order.clone(),
                    _ => {
                        let mut matched: Vec<&Feature> =
                            latest.features().iter().filter(selected).collect();
                        matched.sort_by(|a, b| {
                            for (field, descending) in &query.order_by {
                                let ordering =
                                    compare(&a.attributes[*field], &b.attributes[*field]);
                                let ordering = if *descending {
                                    ordering.reverse()
                                } else {
                                    ordering
                                };
                                if ordering != Ordering::Equal {
                                    return ordering;
                                }
                            }
                            object_id(a, object_id_field).cmp(&object_id(b, object_id_field))
                        });
                        let order: Arc<Vec<TrackKey>> = Arc::new(
                            matched
                                .iter()
                                .map(|feature| latest.key_of(feature))
                                .collect(),
                        );
                        if self.orders.len() >= MAX_PAGED_QUERIES
                            && let Some(oldest) = self
                                .orders
                                .iter()
                                .min_by_key(|(_, (since, _))| *since)
                                .map(|(key, _)| key.clone())
                        {
                            self.orders.remove(&oldest);
                        }
                        self.orders.insert(key.clone(), (now, order.clone()));
                        order
                    }
                };
                let features: Vec<Feature> = order
                    .iter()
                    .skip(*offset)
                    .take(*count)
                    .filter_map(|key| latest.get(key))
                    .filter(|feature| query.filter.matches(feature))
                    .cloned()
                    .collect();
                ArchiveResult::Page {
                    features,
                    exceeded: offset.saturating_add(*count) < order.len(),
                }
            }
        }
    }
}
