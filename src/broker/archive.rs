//! Queries of the latest state: what the feature layer's `/query` serves (docs/protocol.md
//! §10). They run on a frozen copy of the state (`latest::Frozen`), on the caller's thread
//! (the HTTP layer gives them a bounded pool of their own), never on the broker's: a query of
//! any cost delays no batch. Encoding the page is the caller's.
//!
//! Paging stays consistent while tracks change: the first page of a query fixes the order of
//! the tracks it matches (kept for [`PAGING_TTL`] under the client and the query), and later
//! pages take each listed track's current observation. A track appears at most once over the
//! pages, and none that lived through the paging is lost; tracks born meanwhile wait for the
//! socket's snapshot, tracks gone meanwhile are skipped. The orders kept are bounded per
//! client ([`ORDERS_PER_CLIENT`], a client evicts only its own) and in all
//! ([`PAGING_BYTES`]); a later page of an order that was dropped is refused
//! ([`PagingExpired`]), never answered from another order.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::subscription::Subscription;
use crate::feature::{Feature, FieldValue};
use crate::geometry::Envelope;
use crate::latest::{Frozen, StateCell};

/// How long a paged query's order is kept for its next pages.
pub const PAGING_TTL: Duration = Duration::from_secs(60);
/// Paged queries whose order is kept at once per client (its oldest goes first).
pub const ORDERS_PER_CLIENT: usize = 8;
/// Bytes of paging orders kept per service, all clients together (the oldest goes first):
/// about 8 orders of a million tracks.
pub const PAGING_BYTES: usize = 128 << 20;
/// Sort keys a query may give (ArcGIS takes a short list; a field given twice adds nothing).
pub const MAX_SORT_KEYS: usize = 16;
/// Dropped orders remembered, so that their later pages are refused rather than answered
/// from a new order.
const EVICTED_REMEMBERED: usize = 4096;

/// What a query asks of the latest state.
#[derive(Clone, Debug)]
pub struct ArchiveQuery {
    /// The where clause and envelope (in the service's reference); its view is unused here.
    pub filter: Subscription,
    /// Only these object ids, if given.
    pub object_ids: Option<Vec<i64>>,
    /// Sort keys: field index and descending; ties (and no keys) by object id ascending.
    /// At most [`MAX_SORT_KEYS`], each field once (the parser's job).
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
    /// A page of the matching tracks in track id order, next to a track id: OGC API -
    /// Features' items, paged by key, so that a page follows from the one before it whatever
    /// changed in between (no order is kept).
    Keyset(Keyset),
}

/// Where a page of tracks in track id order starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Keyset {
    /// The first `limit` tracks whose id is greater than the one given (all, with none).
    After(Option<FieldValue>, usize),
    /// The last `limit` tracks whose id is less than this.
    Before(FieldValue, usize),
}

impl Eq for Keyset {}

/// A page of tracks in track id order.
#[derive(Debug)]
pub struct KeysetPage {
    /// The page, in track id order.
    pub features: Vec<Feature>,
    /// How many tracks match in all.
    pub matched: usize,
    /// Tracks that match come before the page.
    pub more_before: bool,
    /// Tracks that match come after the page.
    pub more_after: bool,
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
    /// A page in track id order.
    Keyset(KeysetPage),
}

/// The later page of a query whose order was dropped (it expired, or the paging budget
/// needed its room): the client starts again from offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "resultOffset: the order of this query's pages is no longer kept (more than {} s since its first page, or dropped for room); query again from resultOffset=0.",
    PAGING_TTL.as_secs()
)]
pub struct PagingExpired;

/// Who asks, for the paging orders kept per client.
pub type ClientKey = Option<IpAddr>;

/// One kept order: each track by slot and the version that put it there.
struct Order {
    since: Instant,
    tracks: Arc<Vec<(u32, u64)>>,
}

impl Order {
    fn bytes(&self) -> usize {
        self.tracks.len() * std::mem::size_of::<(u32, u64)>() + 128
    }
}

/// The orders of paged queries in progress, bounded per client and in bytes.
#[derive(Default)]
struct PagingOrders {
    orders: HashMap<(ClientKey, String), Order>,
    bytes: usize,
    evicted: HashMap<(ClientKey, String), Instant>,
}

impl PagingOrders {
    fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.orders.retain(|_, order| {
            let keep = now.duration_since(order.since) < PAGING_TTL;
            if !keep {
                freed += order.bytes();
            }
            keep
        });
        self.bytes -= freed;
        self.evicted
            .retain(|_, since| now.duration_since(*since) < PAGING_TTL);
    }

    fn evict_oldest(&mut self, among: impl Fn(&(ClientKey, String)) -> bool, now: Instant) -> bool {
        let Some(oldest) = self
            .orders
            .iter()
            .filter(|(key, _)| among(key))
            .min_by_key(|(_, order)| order.since)
            .map(|(key, _)| key.clone())
        else {
            return false;
        };
        if let Some(order) = self.orders.remove(&oldest) {
            self.bytes -= order.bytes();
        }
        if self.evicted.len() >= EVICTED_REMEMBERED {
            self.evicted.clear();
        }
        self.evicted.insert(oldest, now);
        true
    }

    fn keep(&mut self, key: (ClientKey, String), order: Order, now: Instant) {
        if let Some(old) = self.orders.remove(&key) {
            self.bytes -= old.bytes();
        }
        let client = key.0;
        while self
            .orders
            .keys()
            .filter(|(owner, _)| *owner == client)
            .count()
            >= ORDERS_PER_CLIENT
            && self.evict_oldest(|(owner, _)| *owner == client, now)
        {}
        while self.bytes + order.bytes() > PAGING_BYTES && self.evict_oldest(|_| true, now) {}
        if self.bytes + order.bytes() > PAGING_BYTES {
            // Larger than the whole budget: its later pages are refused.
            self.evicted.insert(key, now);
            return;
        }
        self.bytes += order.bytes();
        self.evicted.remove(&key);
        self.orders.insert(key, order);
    }
}

/// A service's latest state as the feature layer queries it: the frozen copy the broker
/// keeps current, and the orders of paged queries.
pub struct Archive {
    cell: Arc<StateCell>,
    object_id_field: usize,
    track_id_field: usize,
    paging: Mutex<PagingOrders>,
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

impl Archive {
    /// The archive of the state `cell` holds (the broker's `LatestState::cell`), of a schema
    /// with these object id and track id fields.
    pub fn new(cell: Arc<StateCell>, object_id_field: usize, track_id_field: usize) -> Archive {
        Archive {
            cell,
            object_id_field,
            track_id_field,
            paging: Mutex::default(),
        }
    }

    /// Runs a query for `client` on the state as it is now. Cost: one pass over the state
    /// and a sort of what matched; call it where that may take a while (not on a broker).
    pub fn run(
        &self,
        query: &ArchiveQuery,
        client: ClientKey,
        now: Instant,
    ) -> Result<ArchiveResult, PagingExpired> {
        let latest = self.cell.load();
        let object_id_field = self.object_id_field;
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
            return Ok(ArchiveResult::Extent(extent));
        }
        let selected = |feature: &Feature| {
            query.object_ids.as_ref().is_none_or(|ids| {
                ids.binary_search(&object_id(feature, object_id_field))
                    .is_ok()
            }) && query.filter.matches(feature)
        };
        match &query.answer {
            Answer::Count => Ok(ArchiveResult::Count(
                latest
                    .features()
                    .filter(|feature| selected(feature))
                    .count(),
            )),
            Answer::Ids => {
                let mut ids: Vec<i64> = latest
                    .features()
                    .filter(|feature| selected(feature))
                    .map(|feature| object_id(feature, object_id_field))
                    .collect();
                ids.sort_unstable();
                Ok(ArchiveResult::Ids(ids))
            }
            Answer::Extent => unreachable!("answered above"),
            Answer::Keyset(keyset) => Ok(ArchiveResult::Keyset(self.keyset_page(
                latest.features().filter(|feature| selected(feature)),
                keyset,
            ))),
            Answer::Page { offset, count, key } => {
                let key = (client, key.clone());
                let kept = {
                    let mut paging = self
                        .paging
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    paging.expire(now);
                    match paging.orders.get(&key) {
                        Some(order) if *offset > 0 => Some(order.tracks.clone()),
                        None if *offset > 0 && paging.evicted.contains_key(&key) => {
                            return Err(PagingExpired);
                        }
                        _ => None,
                    }
                };
                let order = match kept {
                    Some(order) => order,
                    None => {
                        let order = Arc::new(self.order(&latest, query, &selected));
                        if offset.saturating_add(*count) < order.len() || *offset > 0 {
                            // More pages follow: keep the order for them.
                            self.paging
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .keep(
                                    key,
                                    Order {
                                        since: now,
                                        tracks: order.clone(),
                                    },
                                    now,
                                );
                        }
                        order
                    }
                };
                let features: Vec<Feature> = order
                    .iter()
                    .skip(*offset)
                    .take(*count)
                    .filter_map(|(slot, born)| {
                        let slot = latest.slot(*slot as usize)?;
                        (slot.born == *born).then_some(&*slot.feature)
                    })
                    .filter(|feature| query.filter.matches(feature))
                    .cloned()
                    .collect();
                Ok(ArchiveResult::Page {
                    features,
                    exceeded: offset.saturating_add(*count) < order.len(),
                })
            }
        }
    }

    /// A page of `matching` in track id order: one pass, and a partial sort of what lies on
    /// the asked side of the key.
    fn keyset_page<'a>(
        &self,
        matching: impl Iterator<Item = &'a Feature>,
        keyset: &Keyset,
    ) -> KeysetPage {
        let field = self.track_id_field;
        let (limit, ascending) = match keyset {
            Keyset::After(_, limit) => (*limit, true),
            Keyset::Before(_, limit) => (*limit, false),
        };
        let mut matched = 0;
        let mut side: Vec<&Feature> = Vec::new();
        for feature in matching {
            matched += 1;
            let id = &feature.attributes[field];
            let on_side = match keyset {
                Keyset::After(None, _) => true,
                Keyset::After(Some(after), _) => compare(id, after) == Ordering::Greater,
                Keyset::Before(before, _) => compare(id, before) == Ordering::Less,
            };
            if on_side {
                side.push(feature);
            }
        }
        let beyond_key = matched - side.len();
        // Nearest the key first: ascending after it, descending before it.
        let nearest = |a: &&Feature, b: &&Feature| {
            let ordering = compare(&a.attributes[field], &b.attributes[field]);
            if ascending {
                ordering
            } else {
                ordering.reverse()
            }
        };
        let more_beyond_page = side.len() > limit;
        if more_beyond_page {
            side.select_nth_unstable_by(limit, nearest);
            side.truncate(limit);
        }
        side.sort_unstable_by(nearest);
        if !ascending {
            side.reverse();
        }
        let features = side.into_iter().cloned().collect();
        let (more_before, more_after) = if ascending {
            (beyond_key > 0, more_beyond_page)
        } else {
            (more_beyond_page, beyond_key > 0)
        };
        KeysetPage {
            features,
            matched,
            more_before,
            more_after,
        }
    }

    /// The tracks a query matches, in its order: by slot and the version the track took it.
    fn order(
        &self,
        latest: &Frozen,
        query: &ArchiveQuery,
        selected: &dyn Fn(&Feature) -> bool,
    ) -> Vec<(u32, u64)> {
        let object_id_field = self.object_id_field;
        let mut matched: Vec<(usize, &crate::latest::Slot)> = latest
            .iter()
            .filter(|(_, slot)| selected(&slot.feature))
            .collect();
        matched.sort_by(|(_, a), (_, b)| {
            for (field, descending) in &query.order_by {
                let ordering =
                    compare(&a.feature.attributes[*field], &b.feature.attributes[*field]);
                let ordering = if *descending {
                    ordering.reverse()
                } else {
                    ordering
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            object_id(&a.feature, object_id_field).cmp(&object_id(&b.feature, object_id_field))
        });
        matched
            .into_iter()
            .map(|(index, slot)| (index as u32, slot.born))
            .collect()
    }
}
