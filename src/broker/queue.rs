//! `OutboundQueue`: what the broker gives a subscriber: a bounded queue of ready frames
//! (shared `Bytes`). The broker pushes data, the session pushes replies and control frames, and
//! the session's transport drains it to the client (a socket, a response body). Bounded in
//! bytes, conflating when full.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::snapshot::{SnapshotCursor, Step};

/// Result of offering a frame to a session's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued for writing.
    Queued,
    /// The queue holds its byte limit (the client reads too slowly): the frame is dropped and
    /// the queue marked behind; when it has drained, the broker sends the session a snapshot
    /// (the newest observation of every track it selects) instead of what it missed.
    Conflated,
    /// Refused: a reply or control frame past the queue's limit and its allowance for them
    /// (the client does not read what it provokes); the session must end (1008).
    Full,
    /// Refused: the session is closing or gone.
    Closed,
}

/// Bytes of replies and control frames a queue takes past its data limit: data never fills
/// this room, so a slow but reading client still gets the replies it asks for.
pub const CONTROL_ALLOWANCE: usize = 256 * 1024;

/// What waits in a queue: a frame, or a snapshot still to be built (piece by piece, as the
/// queue drains: `broker::snapshot`).
enum Queued {
    Frame(Bytes),
    Snapshot(SnapshotCursor),
}

/// Snapshot pieces a drain builds at most before it lets other tasks run (each is
/// `snapshot::PIECE_SLOTS` slots): a snapshot that selects little of a large state is scanned
/// in slices.
const PIECES_PER_POLL: usize = 16;

/// The next frame a writer takes.
enum Next {
    Frame(Bytes),
    /// Nothing queued.
    Empty,
    /// Closed and drained.
    Closed,
    /// A snapshot is being scanned: poll again soon.
    Busy,
}

#[derive(Default)]
struct QueueState {
    frames: VecDeque<Queued>,
    /// Raised by every snapshot pushed and by the close: a piece built meanwhile for an
    /// older one is dropped.
    snapshot_generation: u64,
    /// A snapshot is queued or being built (there is at most one: a new one replaces it).
    snapshot_queued: bool,
    queued_bytes: usize,
    closed: bool,
    waker: Option<Waker>,
    full_since: Option<Instant>,
    /// Data was dropped since the last snapshot (docs/architecture.md "Sessions and
    /// back-pressure"): the session needs one when it has room.
    behind: bool,
}

impl QueueState {
    /// Wakes `cx` on the next push or on the close (keeps the waker if it is the same task).
    fn register(&mut self, cx: &Context<'_>) {
        if !self
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            self.waker = Some(cx.waker().clone());
        }
    }
}

/// A session's outbound frames, bounded in bytes. Shared by the broker (pushes data), the
/// session (pushes replies and control frames) and the response body (drains).
pub struct OutboundQueue {
    state: Mutex<QueueState>,
    max_bytes: usize,
    /// Set when the upgrade service writes this queue to the socket itself: the response
    /// body that also streams it is then dropped unused and must not close it.
    adopted: AtomicBool,
}

impl OutboundQueue {
    /// A queue holding at most `max_bytes` of data frames.
    pub fn new(max_bytes: usize) -> Arc<OutboundQueue> {
        Arc::new(OutboundQueue {
            state: Mutex::new(QueueState::default()),
            max_bytes,
            adopted: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock cannot leave the queue inconsistent (every update is
        // one push or pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Offers a data frame. Past the byte limit the session conflates per track: the frame is
    /// dropped and the queue marked behind, and so is every later one until the broker's
    /// snapshot (every selected track's newest observation) takes their place; memory stays
    /// bounded by the limit, and a slow map catches up to current positions, every track's.
    pub fn push_data(&self, frame: Bytes) -> Push {
        let mut state = self.lock();
        if state.closed {
            return Push::Closed;
        }
        // A snapshot still to be built counts as data queued: a frame larger than the limit
        // is taken by an empty queue only.
        let occupied = state.queued_bytes > 0 || state.snapshot_queued;
        if state.behind || (occupied && state.queued_bytes + frame.len() > self.max_bytes) {
            state.full_since.get_or_insert_with(Instant::now);
            state.behind = true;
            return Push::Conflated;
        }
        state.full_since = None;
        Self::enqueue(&mut state, frame);
        Push::Queued
    }

    /// Queues a snapshot (built piece by piece as the queue drains, each piece counted like
    /// any data) in place of any snapshot still unsent: the queue is no longer behind.
    pub fn push_snapshot(&self, cursor: SnapshotCursor) -> Push {
        let mut state = self.lock();
        if state.closed {
            return Push::Closed;
        }
        state
            .frames
            .retain(|queued| matches!(queued, Queued::Frame(_)));
        state.snapshot_generation += 1;
        state.snapshot_queued = true;
        state.behind = false;
        state.full_since = None;
        state.frames.push_back(Queued::Snapshot(cursor));
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        Push::Queued
    }

    /// Marks the queue behind without a frame (its snapshot did not fit): the broker sends one
    /// when it has room.
    pub fn mark_behind(&self) {
        let mut state = self.lock();
        state.full_since.get_or_insert_with(Instant::now);
        state.behind = true;
    }

    /// Whether the queue has drained to half its limit or less (a snapshot may fit).
    pub fn has_room(&self) -> bool {
        self.lock().queued_bytes <= self.max_bytes / 2
    }

    /// Whether a snapshot is queued or being sent.
    pub fn has_snapshot(&self) -> bool {
        self.lock().snapshot_queued
    }

    /// Whether data was dropped since the last snapshot.
    pub fn is_behind(&self) -> bool {
        self.lock().behind
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Queues a reply or control frame in order with the data (a filter reply precedes
    /// further data), within the limit plus [`CONTROL_ALLOWANCE`]: every byte queued counts,
    /// so a client that provokes replies and never reads them cannot grow the queue.
    pub fn push_control(&self, frame: Bytes) -> Push {
        let mut state = self.lock();
        if state.closed {
            return Push::Closed;
        }
        if state.queued_bytes > 0
            && state.queued_bytes + frame.len() > self.max_bytes + CONTROL_ALLOWANCE
        {
            return Push::Full;
        }
        Self::enqueue(&mut state, frame);
        Push::Queued
    }

    /// Queues a final frame (a close frame, or nothing) and accepts no more.
    pub fn close(&self, last_frame: Option<Bytes>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.behind = false;
        // Nothing more of a snapshot: what is queued already, then the final frame.
        state
            .frames
            .retain(|queued| matches!(queued, Queued::Frame(_)));
        state.snapshot_generation += 1;
        state.snapshot_queued = false;
        if let Some(frame) = last_frame {
            state.queued_bytes += frame.len();
            state.frames.push_back(Queued::Frame(frame));
        }
        state.closed = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Whether the queue has refused data for `limit` or longer without catching up (a slow
    /// consumer to end).
    pub fn behind_for(&self, limit: std::time::Duration) -> bool {
        self.lock()
            .full_since
            .is_some_and(|since| since.elapsed() >= limit)
    }

    /// Since when the queue has refused data without draining, if it is refusing now (unit
    /// tests inspect queues this way).
    #[cfg(test)]
    pub(crate) fn full_since(&self) -> Option<Instant> {
        self.lock().full_since
    }

    /// Drops every queued frame (benches drain queues between iterations this way).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.frames.clear();
        state.snapshot_queued = false;
        state.queued_bytes = 0;
        state.full_since = None;
        state.behind = false;
    }

    /// Removes and returns the first queued frame (unit tests inspect queues this way).
    #[cfg(test)]
    pub(crate) fn take_front_for_tests(&self) -> Option<Bytes> {
        loop {
            match self.next_frame() {
                Next::Frame(frame) => return Some(frame),
                Next::Busy => continue,
                Next::Empty | Next::Closed => return None,
            }
        }
    }

    /// Takes the first frame, building the next piece of a snapshot at the front if that is
    /// what waits (outside the lock: the broker keeps pushing meanwhile).
    fn next_frame(&self) -> Next {
        for _ in 0..PIECES_PER_POLL {
            let mut state = self.lock();
            let mut cursor = match state.frames.pop_front() {
                Some(Queued::Frame(frame)) => {
                    state.queued_bytes -= frame.len();
                    return Next::Frame(frame);
                }
                Some(Queued::Snapshot(cursor)) => cursor,
                None if state.closed => return Next::Closed,
                None => return Next::Empty,
            };
            let generation = state.snapshot_generation;
            drop(state);
            let step = cursor.step();
            let mut state = self.lock();
            if state.snapshot_generation != generation {
                // Replaced by a newer snapshot, or closed, while this piece was built.
                continue;
            }
            match step {
                Step::Frame(frame) => {
                    state.frames.push_front(Queued::Snapshot(cursor));
                    return Next::Frame(frame);
                }
                Step::Nothing => state.frames.push_front(Queued::Snapshot(cursor)),
                Step::Done => state.snapshot_queued = false,
            }
        }
        Next::Busy
    }

    /// The upgrade service writes this queue from now on (see [`OutboundQueue::adopted`]).
    pub fn adopt(&self) {
        self.adopted.store(true, Ordering::SeqCst);
    }

    /// Moves queued frames, up to about `budget` bytes (at least one frame), to `out`. Ready
    /// with `false` once the queue is closed and empty; otherwise pending until a push.
    pub fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Bytes>,
        budget: usize,
    ) -> Poll<bool> {
        let mut taken = 0;
        while taken < budget {
            match self.next_frame() {
                Next::Frame(frame) => {
                    taken += frame.len();
                    out.push_back(frame);
                }
                Next::Busy => {
                    cx.waker().wake_by_ref();
                    break;
                }
                Next::Closed if taken == 0 => return Poll::Ready(false),
                Next::Empty | Next::Closed => break,
            }
        }
        if taken > 0 {
            return Poll::Ready(true);
        }
        let mut state = self.lock();
        if state.frames.is_empty() && state.closed {
            return Poll::Ready(false);
        }
        state.register(cx);
        if !state.frames.is_empty() {
            // Pushed meanwhile, or a snapshot still scanning: come back.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Whether the queue accepts no more frames; if it still does, wakes `cx` on the next
    /// push or on the close.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> bool {
        let mut state = self.lock();
        if !state.closed {
            state.register(cx);
        }
        state.closed
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queued_bytes
    }

    fn enqueue(state: &mut QueueState, frame: Bytes) {
        state.queued_bytes += frame.len();
        state.frames.push_back(Queued::Frame(frame));
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// The next frame for a writer that copies what it is given, cut to at most `max_bytes`
    /// (the rest stays first in the queue): `None` once closed and empty.
    pub fn poll_next_chunk(&self, cx: &mut Context<'_>, max_bytes: usize) -> Poll<Option<Bytes>> {
        match self.next_frame() {
            Next::Frame(mut frame) => {
                if frame.len() > max_bytes {
                    let rest = frame.split_off(max_bytes);
                    let mut state = self.lock();
                    state.queued_bytes += rest.len();
                    state.frames.push_front(Queued::Frame(rest));
                }
                Poll::Ready(Some(frame))
            }
            Next::Closed => Poll::Ready(None),
            Next::Busy => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Next::Empty => {
                let mut state = self.lock();
                if state.frames.is_empty() && state.closed {
                    return Poll::Ready(None);
                }
                state.register(cx);
                if !state.frames.is_empty() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    /// Whether a writer of its own took the queue over (see [`OutboundQueue::adopt`]).
    pub fn is_adopted(&self) -> bool {
        self.adopted.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_get_an_allowance_past_the_limit_and_no_more() {
        let queue = OutboundQueue::new(10);
        assert_eq!(
            queue.push_data(Bytes::from_static(b"123456789")),
            Push::Queued
        );
        let reply = Bytes::from(vec![b'r'; 1024]);
        let fitting = CONTROL_ALLOWANCE / reply.len();
        for _ in 0..fitting {
            assert_eq!(queue.push_control(reply.clone()), Push::Queued);
        }
        assert_eq!(queue.push_control(reply), Push::Full);
        assert!(queue.queued_bytes() <= 10 + CONTROL_ALLOWANCE);
    }

    #[test]
    fn queue_refuses_data_past_its_byte_limit_but_not_control_frames() {
        let queue = OutboundQueue::new(10);
        assert_eq!(queue.push_data(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(
            queue.push_data(Bytes::from_static(b"123456")),
            Push::Conflated
        );
        assert_eq!(
            queue.push_data(Bytes::from_static(b"654321")),
            Push::Conflated
        );
        assert!(queue.full_since().is_some());
        assert_eq!(
            queue.push_control(Bytes::from_static(b"reply")),
            Push::Queued
        );
        assert_eq!(queue.queued_bytes(), 11);
        assert!(queue.is_behind());
        queue.close(Some(Bytes::from_static(b"bye")));
        assert_eq!(queue.push_data(Bytes::from_static(b"x")), Push::Closed);
    }

    #[test]
    fn a_queue_behind_takes_no_data_until_its_snapshot() {
        let (mut latest, schema) = super::super::snapshot::tests::state_of(20);
        let queue = OutboundQueue::new(10);
        assert_eq!(queue.push_data(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(
            queue.push_data(Bytes::from_static(b"654321")),
            Push::Conflated
        );
        assert!(queue.is_behind());
        assert_eq!(
            queue.take_front_for_tests(),
            Some(Bytes::from_static(b"123456"))
        );
        assert_eq!(
            queue.push_data(Bytes::from_static(b"1")),
            Push::Conflated,
            "data waits for the snapshot even with room"
        );
        let snapshot = super::super::snapshot::tests::snapshot_of(&mut latest, &schema);
        assert_eq!(queue.push_snapshot(snapshot.cursor()), Push::Queued);
        assert!(!queue.is_behind() && queue.full_since().is_none());
        assert_eq!(
            queue.queued_bytes(),
            0,
            "a snapshot costs nothing until it is read"
        );
        assert_eq!(queue.push_data(Bytes::from_static(b"x")), Push::Queued);
        let piece = queue.take_front_for_tests().expect("the snapshot's piece");
        assert!(piece.len() > 1000, "every track: {} bytes", piece.len());
        assert_eq!(
            queue.take_front_for_tests(),
            Some(Bytes::from_static(b"x")),
            "data after the snapshot"
        );
        assert_eq!(queue.take_front_for_tests(), None);
    }

    #[test]
    fn a_single_frame_larger_than_the_limit_is_still_sent_to_an_empty_queue() {
        let queue = OutboundQueue::new(4);
        assert_eq!(queue.push_data(Bytes::from_static(b"123456")), Push::Queued);
    }
}
