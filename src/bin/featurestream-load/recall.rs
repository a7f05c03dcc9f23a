//! Large messages already summarised on this thread, recalled by their bytes. A server sends
//! the same frame to every session whose view matches (featurestream encodes a batch once and
//! shares the bytes), so of the sessions on one thread the first to receive a frame scans it
//! and the others only compare it with what the first kept: a byte-for-byte comparison, never
//! a hash, so a recalled summary is exactly the one a scan would give. On the machine a load
//! run measures, this keeps the tester's own share of the cores small (it scans every feature's
//! timestamp, millions a second, in ingest mode).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::scan::{MessageScan, Scanner, Summary};

/// Messages below this size are scanned as they come: comparing would cost about as much.
pub(crate) const RECALL_MIN_BYTES: u64 = 8 * 1024;
/// Larger ones are not kept (nor copied): no server measured here sends them.
const RECALL_MAX_BYTES: u64 = 16 << 20;
/// What a thread keeps: a few seconds of a fast stream, so that sessions lagging behind the
/// first still find the frames it saw.
const KEPT_BYTES: usize = 64 << 20;

/// A message as far as this thread's sessions have received it, and its summary once one of
/// them received the whole of it. Its bytes only grow, and a session appends only after
/// checking that its own bytes so far equal them, so a summary is recalled only by sessions
/// that received exactly these bytes.
#[derive(Default)]
pub(crate) struct Seen {
    bytes: Vec<u8>,
    summary: Option<Summary>,
}

/// The latest large messages of this thread, complete or still arriving, one per length (the
/// frames of a run almost never share a length; when two do, the later one is kept).
#[derive(Default)]
pub(crate) struct SeenMessages {
    by_length: HashMap<usize, Rc<RefCell<Seen>>>,
    /// Lengths in the order their messages were kept, oldest first.
    order: VecDeque<usize>,
    bytes: usize,
}

impl SeenMessages {
    fn find(&self, length: usize) -> Option<Rc<RefCell<Seen>>> {
        self.by_length.get(&length).cloned()
    }

    /// Keeps a message of `length` bytes that has started to arrive.
    fn keep(&mut self, length: usize, seen: Rc<RefCell<Seen>>) {
        if self.by_length.insert(length, seen).is_some() {
            self.bytes -= length;
            self.order.retain(|kept| *kept != length);
        }
        self.order.push_back(length);
        self.bytes += length;
        while self.bytes > KEPT_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.by_length.remove(&oldest).is_some() {
                self.bytes -= oldest;
            }
        }
    }
}

/// A large single-frame text message as it arrives: every byte so far equals the start of
/// `seen`, which it extends when it is ahead of the sessions that received it before.
pub(crate) struct Recall {
    seen: Rc<RefCell<Seen>>,
    length: usize,
    at: usize,
}

impl Recall {
    /// For a text message that comes in one frame of `length` bytes, if it is worth recalling.
    pub(crate) fn start(scanner: &Scanner, length: u64) -> Option<Recall> {
        if !(RECALL_MIN_BYTES..=RECALL_MAX_BYTES).contains(&length) {
            return None;
        }
        let length = length as usize;
        let seen = scanner.seen.borrow().find(length);
        let seen = seen.unwrap_or_else(|| Recall::new_message(scanner, length, &[]));
        Some(Recall {
            seen,
            length,
            at: 0,
        })
    }

    /// Keeps a message not seen before, starting with `prefix`.
    fn new_message(scanner: &Scanner, length: usize, prefix: &[u8]) -> Rc<RefCell<Seen>> {
        let mut bytes = Vec::with_capacity(length);
        bytes.extend_from_slice(prefix);
        let seen = Rc::new(RefCell::new(Seen {
            bytes,
            summary: None,
        }));
        scanner.seen.borrow_mut().keep(length, seen.clone());
        seen
    }

    /// Takes the next piece of the message (the frame holds no more than `length` bytes).
    pub(crate) fn feed(&mut self, scanner: &Scanner, piece: &[u8]) {
        let mut seen = self.seen.borrow_mut();
        let known = seen.bytes.len().saturating_sub(self.at).min(piece.len());
        if seen.bytes[self.at..self.at + known] == piece[..known] {
            seen.bytes.extend_from_slice(&piece[known..]);
            self.at += piece.len();
            return;
        }
        // Another message of the same length: what matched so far, then this one's own.
        let mut prefix = seen.bytes[..self.at].to_vec();
        drop(seen);
        prefix.extend_from_slice(piece);
        self.at = prefix.len();
        self.seen = Recall::new_message(scanner, self.length, &prefix);
    }

    /// Whether the message it follows was received whole before.
    #[cfg(test)]
    pub(crate) fn is_known(&self) -> bool {
        self.seen.borrow().summary.is_some()
    }

    /// The complete message's summary: recalled, or scanned once for every session.
    pub(crate) fn finish(self, scanner: &Scanner) -> Summary {
        let mut seen = self.seen.borrow_mut();
        let Seen { bytes, summary } = &mut *seen;
        summary
            .get_or_insert_with(|| MessageScan::whole(scanner, &bytes[..self.at]))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_messages_are_kept() {
        let mut seen = SeenMessages::default();
        let keep = |seen: &mut SeenMessages, length: usize| seen.keep(length, Rc::default());
        keep(&mut seen, KEPT_BYTES / 2);
        keep(&mut seen, KEPT_BYTES / 4);
        keep(&mut seen, KEPT_BYTES / 4);
        assert_eq!(seen.order.len(), 2, "one kept per length");
        assert_eq!(seen.bytes, KEPT_BYTES * 3 / 4);
        keep(&mut seen, KEPT_BYTES / 2 + 1);
        assert!(seen.find(KEPT_BYTES / 2).is_none(), "the oldest went");
        assert!(seen.find(KEPT_BYTES / 4).is_some());
        assert_eq!(seen.bytes, KEPT_BYTES * 3 / 4 + 1);
    }
}
