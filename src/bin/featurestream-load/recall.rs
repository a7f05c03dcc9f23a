//! Large messages already summarised on this thread, recalled by their bytes. A server sends
//! the same frame to every session whose view matches (featurestream encodes a batch once and
//! shares the bytes), so of the sessions on one thread the first to receive a frame scans it
//! and the others only compare it with what the first kept: a byte-for-byte comparison, never
//! a hash, so a recalled summary is exactly the one a scan would give. On the machine a load
//! run measures, this keeps the tester's own share of the cores small (it scans every feature's
//! timestamp, millions a second, in ingest mode).

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

/// A message and its summary.
pub(crate) struct Seen {
    bytes: Vec<u8>,
    summary: Summary,
}

/// The latest large messages summarised on this thread, one per length (the frames of a run
/// almost never share a length; when two do, the later one is kept).
#[derive(Default)]
pub(crate) struct SeenMessages {
    by_length: HashMap<usize, Rc<Seen>>,
    /// Lengths in the order their messages were kept, oldest first.
    order: VecDeque<usize>,
    bytes: usize,
}

impl SeenMessages {
    fn find(&self, length: usize) -> Option<Rc<Seen>> {
        self.by_length.get(&length).cloned()
    }

    fn remember(&mut self, bytes: Vec<u8>, summary: Summary) {
        let length = bytes.len();
        if let Some(old) = self
            .by_length
            .insert(length, Rc::new(Seen { bytes, summary }))
        {
            self.bytes -= old.bytes.len();
            self.order.retain(|kept| *kept != length);
        }
        self.order.push_back(length);
        self.bytes += length;
        while self.bytes > KEPT_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.by_length.remove(&oldest) {
                self.bytes -= old.bytes.len();
            }
        }
    }
}

/// A large single-frame text message as it arrives.
pub(crate) enum Recall {
    /// Every byte so far equals the start of a message seen before.
    Matching { seen: Rc<Seen>, at: usize },
    /// A message not seen before: kept whole, scanned once complete.
    Recording(Vec<u8>),
}

impl Recall {
    /// For a text message that comes in one frame of `length` bytes, if it is worth recalling.
    pub(crate) fn start(scanner: &Scanner, length: u64) -> Option<Recall> {
        if !(RECALL_MIN_BYTES..=RECALL_MAX_BYTES).contains(&length) {
            return None;
        }
        let length = length as usize;
        Some(match scanner.seen.borrow().find(length) {
            Some(seen) => Recall::Matching { seen, at: 0 },
            None => Recall::Recording(Vec::with_capacity(length)),
        })
    }

    /// Takes the next piece of the message.
    pub(crate) fn feed(&mut self, piece: &[u8]) {
        match self {
            Recall::Matching { seen, at } => {
                if seen.bytes.get(*at..*at + piece.len()) == Some(piece) {
                    *at += piece.len();
                    return;
                }
                // Another message of the same length: keep what matched, and go on as new.
                let mut bytes = Vec::with_capacity(seen.bytes.len());
                bytes.extend_from_slice(&seen.bytes[..*at]);
                bytes.extend_from_slice(piece);
                *self = Recall::Recording(bytes);
            }
            Recall::Recording(bytes) => bytes.extend_from_slice(piece),
        }
    }

    /// The complete message's summary: recalled, or scanned and kept for the next session.
    pub(crate) fn finish(self, scanner: &Scanner) -> Summary {
        match self {
            Recall::Matching { seen, at } if at == seen.bytes.len() => seen.summary.clone(),
            Recall::Matching { seen, at } => MessageScan::whole(scanner, &seen.bytes[..at]),
            Recall::Recording(bytes) => {
                let summary = MessageScan::whole(scanner, &bytes);
                scanner.seen.borrow_mut().remember(bytes, summary.clone());
                summary
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_messages_are_kept() {
        let mut seen = SeenMessages::default();
        let message = |length: usize| vec![b'x'; length];
        seen.remember(message(KEPT_BYTES / 2), Summary::default());
        seen.remember(message(KEPT_BYTES / 4), Summary::default());
        seen.remember(message(KEPT_BYTES / 4), Summary::default());
        assert_eq!(seen.order.len(), 2, "one kept per length");
        assert_eq!(seen.bytes, KEPT_BYTES * 3 / 4);
        seen.remember(message(KEPT_BYTES / 2 + 1), Summary::default());
        assert!(seen.find(KEPT_BYTES / 2).is_none(), "the oldest went");
        assert!(seen.find(KEPT_BYTES / 4).is_some());
        assert_eq!(seen.bytes, KEPT_BYTES * 3 / 4 + 1);
    }
}
