//! Per-session budgets, the same for every transport. `FilterBudget`: filter messages (a
//! WebSocket filter message, an SSE filter POST); past the rate a message is refused with a
//! filter reply, and a flood that goes on past a full second's worth of refusals ends the
//! session. `MessageBudget`: inbound messages of every kind (frames of any opcode, SSE POSTs);
//! past it the session ends at once, since nothing a client needs comes that fast. Also the
//! token bucket they (and the per-address attempt rate) are built on, and a session's place
//! under the connection cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::filter::FilterError;

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate
            >= self.burst
    }
}

/// A session's place under the connection cap; dropping it frees the place.
pub struct ConnectionSlot {
    active: Arc<AtomicUsize>,
}

impl ConnectionSlot {
    /// The place just counted in `active` (the caller incremented it).
    pub fn taken(active: Arc<AtomicUsize>) -> ConnectionSlot {
        ConnectionSlot { active }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a session does with one filter message.
#[derive(Debug)]
pub enum Verdict {
    /// Apply it.
    Allowed,
    /// Refuse it with this error in the reply; the session goes on.
    Refused(FilterError),
    /// Refuse it with this error in the reply, then end the session (1008 "too many filter
    /// messages").
    Flood(FilterError),
}

/// A session's filter-message budget: `rate` per second, bursts of twice that.
pub struct FilterBudget {
    bucket: Option<TokenBucket>,
    rate: f64,
    refusals: u32,
}

impl FilterBudget {
    /// A budget of `rate` messages per second; `None` is unlimited.
    pub fn new(rate: Option<f64>) -> FilterBudget {
        FilterBudget {
            bucket: rate.map(|rate| TokenBucket::new(rate, rate * 2.0)),
            rate: rate.unwrap_or_default(),
            refusals: 0,
        }
    }

    /// Takes one message from the budget.
    pub fn take(&mut self, now: Instant) -> Verdict {
        let Some(bucket) = &mut self.bucket else {
            return Verdict::Allowed;
        };
        if bucket.take(now) {
            self.refusals = 0;
            return Verdict::Allowed;
        }
        self.refusals += 1;
        let error = FilterError::Malformed(format!(
            "too many filter messages; at most {} per second.",
            self.rate
        ));
        let limit = (self.rate * 2.0).ceil() as u32 + 10;
        if self.refusals > limit {
            Verdict::Flood(error)
        } else {
            Verdict::Refused(error)
        }
    }
}

/// A session's budget of inbound messages of any kind: `rate` per second, bursts of twice that.
pub struct MessageBudget(Option<TokenBucket>);

impl MessageBudget {
    /// A budget of `rate` messages per second; `None` is unlimited.
    pub fn new(rate: Option<f64>) -> MessageBudget {
        MessageBudget(rate.map(|rate| TokenBucket::new(rate, rate * 2.0)))
    }

    /// Takes one message; `false` when the client sends faster than its budget.
    pub fn take(&mut self, now: Instant) -> bool {
        self.0.as_mut().is_none_or(|bucket| bucket.take(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_a_flood_ends_the_session() {
        let mut budget = FilterBudget::new(Some(1.0));
        let now = Instant::now();
        assert!(matches!(budget.take(now), Verdict::Allowed));
        assert!(matches!(budget.take(now), Verdict::Allowed));
        let verdicts: Vec<Verdict> = (0..13).map(|_| budget.take(now)).collect();
        assert!(
            verdicts[..12]
                .iter()
                .all(|verdict| matches!(verdict, Verdict::Refused(_)))
        );
        assert!(matches!(verdicts[12], Verdict::Flood(_)));
        // A second later the bucket has a token again.
        let later = now + std::time::Duration::from_secs(1);
        assert!(matches!(budget.take(later), Verdict::Allowed));
    }

    #[test]
    fn without_a_rate_everything_is_allowed() {
        let mut budget = FilterBudget::new(None);
        let now = Instant::now();
        assert!((0..1000).all(|_| matches!(budget.take(now), Verdict::Allowed)));
    }

    #[test]
    fn messages_past_the_burst_are_refused_until_the_bucket_refills() {
        let mut budget = MessageBudget::new(Some(5.0));
        let now = Instant::now();
        assert!((0..10).all(|_| budget.take(now)));
        assert!(!budget.take(now));
        assert!(budget.take(now + std::time::Duration::from_millis(200)));
        let mut unlimited = MessageBudget::new(None);
        assert!((0..10_000).all(|_| unlimited.take(now)));
    }
}
