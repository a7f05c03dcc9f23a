//! The journal writer: one thread per service with a state directory, which appends what its
//! broker recorded to the journal (`latest::store`) and flushes it to stable storage, one
//! `fdatasync` for everything that arrived meanwhile (group commit), before it runs the
//! acknowledgements waiting for it. It also keeps the ids' bounds ahead of what is handed out
//! (a `Reserved` record, durable before the ids are used), compacts the journal into a
//! checkpoint when it grows, and recovers from faults: after a failed write (disk full, I/O
//! error, the directory removed) nothing more is acknowledged until a new segment and a
//! checkpoint of the whole state have been written, tried again every second.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::StateCell;
use super::store::{self, Bounds, Layout, Recovered, StoreError};
use crate::feature::Schema;

/// Object ids reserved at a time: a crash wastes at most this many.
pub const OBJECT_ID_BLOCK: i64 = 1 << 24;

/// Ids of resent copies reserved at a time (a snapshot takes one per slot).
pub const RESEND_ID_BLOCK: i64 = 1 << 32;

/// Why what was recorded is not durable; what publishers are told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The disk is full (or a quota reached): 507 rather than 503.
    pub no_space: bool,
    /// What failed, naming the file or directory.
    pub message: String,
}

impl Fault {
    fn of(error: &StoreError) -> Fault {
        let StoreError::Io { error: io, .. } = error;
        Fault {
            no_space: matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            message: error.to_string(),
        }
    }
}

/// How a service's journal fares: what `/readyz`, `/api/stats` and `/metrics` show.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// Group commits flushed to stable storage.
    pub commits: AtomicU64,
    /// Bytes appended to the journal.
    pub bytes: AtomicU64,
    /// Writes that failed.
    pub failures: AtomicU64,
    /// Checkpoints written (the journal compacted).
    pub checkpoints: AtomicU64,
    /// Why writing fails now, while it does.
    fault: Mutex<Option<Fault>>,
}

impl StoreHealth {
    /// Why nothing can be made durable now, if so.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_fault(&self, fault: Option<Fault>) {
        *self
            .fault
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fault;
    }
}

/// What runs once a commit is durable, or has failed.
pub type Done = Box<dyn FnOnce(Result<(), Fault>) + Send>;

enum Command {
    /// Frames to append; `done` runs once they are durable (or failed).
    Append { frames: Vec<u8>, done: Option<Done> },
    /// The ids in use now: reserve a block above them.
    Reserve(Bounds),
    /// Write a checkpoint and stop (shutdown); answers how it went.
    Close(mpsc::Sender<Result<(), Fault>>),
}

/// A service's journal, as its broker uses it.
pub struct Journal {
    commands: mpsc::Sender<Command>,
    health: Arc<StoreHealth>,
    object_ids: Arc<AtomicI64>,
    resend_ids: Arc<AtomicI64>,
    /// The bounds when a reservation was last asked for, and when (asked again once they
    /// move, or after a second: a failed write loses the request).
    asked: Option<(Bounds, std::time::Instant)>,
}

impl Journal {
    /// Opens the journal after `recovered` was restored into the state behind `cell`: starts
    /// its next segment with the ids' bounds a block above the recovered ones (durable before
    /// this returns: the start-up error names the path when it cannot be written) and the
    /// writer's thread. A journal read at start is compacted into a checkpoint soon after.
    pub fn open(
        layout: Layout,
        schema: Schema,
        cell: Arc<StateCell>,
        recovered: &Recovered,
        max_journal_bytes: u64,
    ) -> Result<Journal, StoreError> {
        let reserved = Bounds {
            object_ids: recovered.bounds.object_ids.saturating_add(OBJECT_ID_BLOCK),
            resend_ids: recovered.bounds.resend_ids.saturating_add(RESEND_ID_BLOCK),
        };
        let segment = recovered.next_segment;
        let file = store::create_segment(&layout, &schema, segment, reserved)?;
        let good_len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        let health = Arc::new(StoreHealth::default());
        let object_ids = Arc::new(AtomicI64::new(reserved.object_ids));
        let resend_ids = Arc::new(AtomicI64::new(reserved.resend_ids));
        let (commands, receiver) = mpsc::channel();
        let writer = Writer {
            name: layout.service.clone(),
            layout,
            schema,
            cell,
            file: Some(file),
            segment,
            good_len,
            fresh: true,
            since_checkpoint: 0,
            last_checkpoint_bytes: 0,
            max_journal_bytes,
            reserved,
            object_ids: object_ids.clone(),
            resend_ids: resend_ids.clone(),
            health: health.clone(),
            needs_recovery: false,
            checkpoint_wanted: recovered.segments_read > 0 || !recovered.observations.is_empty(),
            checkpointing: None,
        };
        std::thread::Builder::new()
            .name(format!("journal-{}", writer.name))
            .spawn(move || writer.run(receiver))
            .map_err(|error| StoreError::Io {
                path: std::path::PathBuf::from("journal thread"),
                error,
            })?;
        Ok(Journal {
            commands,
            health,
            object_ids,
            resend_ids,
            asked: None,
        })
    }

    /// How the journal fares.
    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    /// The ids durably reserved: every id handed out must be below these.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            object_ids: self.object_ids.load(Ordering::Acquire),
            resend_ids: self.resend_ids.load(Ordering::Acquire),
        }
    }

    /// Appends record frames; `done` runs (on the writer's thread) once they are durable or
    /// have failed.
    pub fn append(&self, frames: Vec<u8>, done: Option<Done>) {
        if let Err(mpsc::SendError(Command::Append {
            done: Some(done), ..
        })) = self.commands.send(Command::Append { frames, done })
        {
            done(Err(Fault {
                no_space: false,
                message: "the journal writer has stopped".into(),
            }));
        }
    }

    /// Asks for ids above `in_use` once half of the current reservation is used (the next
    /// block is durable long before it is needed); nothing when already asked.
    pub fn keep_ahead(&mut self, in_use: Bounds) {
        let bounds = self.bounds();
        let low = in_use.object_ids > bounds.object_ids - OBJECT_ID_BLOCK / 2
            || in_use.resend_ids > bounds.resend_ids - RESEND_ID_BLOCK / 2;
        let pending = self
            .asked
            .is_some_and(|(asked, at)| asked == bounds && at.elapsed() < RETRY);
        if low && !pending {
            self.asked = Some((bounds, std::time::Instant::now()));
            let _ = self.commands.send(Command::Reserve(in_use));
        }
    }

    /// Writes a checkpoint of the whole state and stops the writer (shutdown): what restarts
    /// reads is one file.
    pub fn close(&self) -> mpsc::Receiver<Result<(), Fault>> {
        let (reply, answer) = mpsc::channel();
        let _ = self.commands.send(Command::Close(reply));
        answer
    }
}

struct Writer {
    name: String,
    layout: Layout,
    schema: Schema,
    cell: Arc<StateCell>,
    /// The segment being appended to (`None` after a failure that lost it).
    file: Option<std::fs::File>,
    segment: u64,
    /// Its length after the last durable commit.
    good_len: u64,
    /// Nothing was appended to it since it was created (a recovery that failed to write its
    /// checkpoint uses it again rather than starting another).
    fresh: bool,
    /// Bytes appended since the last checkpoint.
    since_checkpoint: u64,
    last_checkpoint_bytes: u64,
    max_journal_bytes: u64,
    /// The bounds durable now.
    reserved: Bounds,
    object_ids: Arc<AtomicI64>,
    resend_ids: Arc<AtomicI64>,
    health: Arc<StoreHealth>,
    /// A write failed: a new segment and a whole checkpoint must come first.
    needs_recovery: bool,
    checkpoint_wanted: bool,
    checkpointing: Option<std::thread::JoinHandle<Result<u64, StoreError>>>,
}

/// Commands taken into one group commit at most.
const MAX_GROUP: usize = 4096;

/// How often a failed journal tries to recover when nothing arrives.
const RETRY: Duration = Duration::from_secs(1);

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        loop {
            let first = if self.needs_recovery {
                match receiver.recv_timeout(RETRY) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match receiver.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            let mut frames = Vec::new();
            let mut dones = Vec::new();
            let mut reserve = None;
            let mut close = None;
            let mut take = |command| match command {
                Command::Append { frames: more, done } => {
                    if frames.is_empty() {
                        frames = more;
                    } else {
                        frames.extend_from_slice(&more);
                    }
                    dones.extend(done);
                }
                Command::Reserve(in_use) => reserve = Some(in_use),
                Command::Close(reply) => close = Some(reply),
            };
            if let Some(command) = first {
                take(command);
            }
            for _ in 0..MAX_GROUP {
                match receiver.try_recv() {
                    Ok(command) => take(command),
                    Err(_) => break,
                }
            }
            let outcome = self.commit(&mut frames, reserve);
            for done in dones {
                done(outcome.clone());
            }
            if let Some(reply) = close {
                let _ = reply.send(self.close());
                return;
            }
            self.compact();
        }
    }

    /// Makes `frames` durable, with a reservation above `reserve` if asked.
    fn commit(&mut self, frames: &mut Vec<u8>, reserve: Option<Bounds>) -> Result<(), Fault> {
        if self.needs_recovery {
            self.recover()?;
        }
        let mut reserved = self.reserved;
        if let Some(in_use) = reserve {
            reserved.object_ids = reserved
                .object_ids
                .max(in_use.object_ids.saturating_add(OBJECT_ID_BLOCK));
            reserved.resend_ids = reserved
                .resend_ids
                .max(in_use.resend_ids.saturating_add(RESEND_ID_BLOCK));
            if reserved != self.reserved {
                super::codec::encode(
                    &super::codec::Record::Reserved {
                        object_ids: reserved.object_ids,
                        resend_ids: reserved.resend_ids,
                    },
                    frames,
                );
            }
        }
        if frames.is_empty() {
            return Ok(());
        }
        match self.write(frames) {
            Ok(()) => {
                self.fresh = false;
                self.good_len += frames.len() as u64;
                self.since_checkpoint += frames.len() as u64;
                self.health.commits.fetch_add(1, Ordering::Relaxed);
                self.health
                    .bytes
                    .fetch_add(frames.len() as u64, Ordering::Relaxed);
                self.publish_bounds(reserved);
                Ok(())
            }
            Err(error) => Err(self.failed(error)),
        }
    }

    fn write(&mut self, frames: &[u8]) -> Result<(), StoreError> {
        let path = self.layout.segment(self.segment);
        let io = |error| StoreError::Io {
            path: path.clone(),
            error,
        };
        let file = self.file.as_mut().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no journal segment open",
            ))
        })?;
        // Writing into a file whose directory was removed would succeed and keep nothing.
        let open = file.metadata().map_err(io)?;
        match std::fs::metadata(&path) {
            Ok(named) if named.ino() == open.ino() && named.dev() == open.dev() => {}
            _ => {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "the journal segment is gone (was the state directory {} removed?)",
                        self.layout.dir.display()
                    ),
                )));
            }
        }
        file.write_all(frames).map_err(io)?;
        file.sync_data().map_err(io)
    }

    /// Notes a failed write: the segment is cut back to its last durable length (so that a
    /// partial record never sits before later ones), and recovery must come first.
    fn failed(&mut self, error: StoreError) -> Fault {
        let fault = Fault::of(&error);
        self.health.failures.fetch_add(1, Ordering::Relaxed);
        if self.health.fault().is_none() {
            log::error!(
                "service {}: the latest state cannot be made durable: {}; ingest is refused until it can (retried every second), streaming goes on",
                self.name,
                fault.message
            );
        }
        self.health.set_fault(Some(fault.clone()));
        self.fresh = false;
        if let Some(file) = &self.file
            && file.set_len(self.good_len).is_err()
        {
            self.file = None;
        }
        self.needs_recovery = true;
        fault
    }

    fn publish_bounds(&mut self, reserved: Bounds) {
        self.reserved = reserved;
        self.object_ids
            .store(reserved.object_ids, Ordering::Release);
        self.resend_ids
            .store(reserved.resend_ids, Ordering::Release);
    }

    /// After a fault: a new segment, then the whole state as the checkpoint (what failed to
    /// be written is in it, and whatever the failure lost of the old segments).
    fn recover(&mut self) -> Result<(), Fault> {
        self.wait_for_checkpoint();
        let attempt = (|| {
            if !self.layout.dir.is_dir() {
                std::fs::create_dir_all(&self.layout.dir).map_err(|error| StoreError::Io {
                    path: self.layout.dir.clone(),
                    error,
                })?;
                log::warn!(
                    "service {}: the state directory {} was gone; created it again and writing the whole state into it",
                    self.name,
                    self.layout.dir.display()
                );
            }
            if !self.fresh || !self.layout.segment(self.segment).exists() {
                self.rotate()?;
            }
            let frozen = self.cell.load();
            store::write_checkpoint(
                &self.layout,
                &self.schema,
                &frozen,
                self.reserved,
                self.segment,
            )
        })();
        match attempt {
            Ok(bytes) => {
                self.checkpointed(bytes);
                self.needs_recovery = false;
                self.health.set_fault(None);
                log::info!(
                    "service {}: the latest state is durable again ({} tracks checkpointed)",
                    self.name,
                    self.cell.load().iter().count()
                );
                Ok(())
            }
            Err(error) => {
                let fault = Fault::of(&error);
                self.health.failures.fetch_add(1, Ordering::Relaxed);
                self.health.set_fault(Some(fault.clone()));
                Err(fault)
            }
        }
    }

    /// Starts the next segment.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let file =
            store::create_segment(&self.layout, &self.schema, self.segment + 1, self.reserved)?;
        self.segment += 1;
        self.good_len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        self.file = Some(file);
        self.fresh = true;
        self.since_checkpoint = 0;
        Ok(())
    }

    fn checkpointed(&mut self, bytes: u64) {
        self.last_checkpoint_bytes = bytes;
        self.checkpoint_wanted = false;
        self.health.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    fn wait_for_checkpoint(&mut self) {
        if let Some(handle) = self.checkpointing.take() {
            self.finish_checkpoint(handle);
        }
    }

    fn finish_checkpoint(&mut self, handle: std::thread::JoinHandle<Result<u64, StoreError>>) {
        match handle.join() {
            Ok(Ok(bytes)) => self.checkpointed(bytes),
            // The segments it would have replaced are all still there: nothing is lost, the
            // next compaction tries again.
            Ok(Err(error)) => log::error!(
                "service {}: compacting the journal failed: {error}",
                self.name
            ),
            Err(_) => log::error!("service {}: compacting the journal panicked", self.name),
        }
    }

    /// Compacts the journal into a checkpoint once it holds more than the limit (and more
    /// than the last checkpoint): a new segment now, the checkpoint of the state as it is now
    /// written beside it, the older segments deleted once it is durable.
    fn compact(&mut self) {
        if self
            .checkpointing
            .as_ref()
            .is_some_and(|handle| handle.is_finished())
            && let Some(handle) = self.checkpointing.take()
        {
            self.finish_checkpoint(handle);
        }
        let grown = self.since_checkpoint > self.max_journal_bytes.max(self.last_checkpoint_bytes);
        if self.needs_recovery || self.checkpointing.is_some() || !(grown || self.checkpoint_wanted)
        {
            return;
        }
        if let Err(error) = self.rotate() {
            self.failed(error);
            return;
        }
        self.checkpoint_wanted = false;
        let (layout, schema, frozen) = (self.layout.clone(), self.schema.clone(), self.cell.load());
        let (reserved, replay_from) = (self.reserved, self.segment);
        self.checkpointing = std::thread::Builder::new()
            .name(format!("checkpoint-{}", self.name))
            .spawn(move || {
                store::write_checkpoint(&layout, &schema, &frozen, reserved, replay_from)
            })
            .ok();
    }

    fn close(&mut self) -> Result<(), Fault> {
        self.wait_for_checkpoint();
        if self.needs_recovery {
            return self.recover();
        }
        match self.rotate().and_then(|()| {
            store::write_checkpoint(
                &self.layout,
                &self.schema,
                &self.cell.load(),
                self.reserved,
                self.segment,
            )
        }) {
            Ok(bytes) => {
                self.checkpointed(bytes);
                Ok(())
            }
            Err(error) => Err(self.failed(error)),
        }
    }
}
