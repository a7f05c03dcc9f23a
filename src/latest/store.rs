//! A service's latest state in its state directory: a journal of what was recorded, in
//! numbered segments, and a checkpoint of the whole state that the journal is compacted into
//! (docs/architecture.md "Durability"). Files, per service `svc`:
//!
//! - `svc.journal.<n>`: a segment; the journal writer ([`super::journal`]) appends each
//!   batch's records and flushes them to stable storage before they are acknowledged. A new
//!   segment is started at every start and every checkpoint; a segment is never appended to
//!   again once another follows it.
//! - `svc.checkpoint`: the whole state, the ids' bounds and the first segment after it,
//!   written to a temporary file of its own and renamed into place; segments before it are
//!   deleted once it is durable.
//!
//! Reading at start: the checkpoint, then every later segment in order. A torn tail (a crash
//! mid-write) is cut off with a log line; anything else that does not read (a checksum that
//! fails inside a file, a file of another schema, a missing segment) sets the whole store
//! aside, renamed `*.corrupt-<epoch ms>`, and the service starts empty with its numbering
//! above whatever the files said: never half-loaded, never an id reissued.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::TrackKey;
use super::codec::{self, FileKind, Header, MAGIC, Record};
use crate::feature::{Feature, FieldValue, Schema};

/// Where one service's files live.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The state directory.
    pub dir: PathBuf,
    /// The service's name (every file is named after it).
    pub service: String,
}

impl Layout {
    /// The checkpoint file.
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join(format!("{}.checkpoint", self.service))
    }

    /// Segment `number` of the journal.
    pub fn segment(&self, number: u64) -> PathBuf {
        self.dir
            .join(format!("{}.journal.{number:012}", self.service))
    }

    /// The JSON file format 1 saved (read once, then set aside).
    fn legacy(&self) -> PathBuf {
        self.dir.join(format!("{}.latest.json", self.service))
    }

    /// The segments in the directory, by number.
    fn segments(&self) -> std::io::Result<Vec<(u64, PathBuf)>> {
        let prefix = format!("{}.journal.", self.service);
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|name| name.strip_prefix(&prefix))
                .filter(|digits| digits.len() == 12)
                .and_then(|digits| digits.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push((number, entry.path()));
        }
        segments.sort_unstable();
        Ok(segments)
    }

    /// Removes the segments numbered below `first` (compacted into a checkpoint).
    pub fn delete_segments_before(&self, first: u64) -> std::io::Result<()> {
        for (number, path) in self.segments()? {
            if number < first {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    fn header(&self, schema: &Schema, kind: FileKind) -> Record {
        Record::Header(Header {
            service: self.service.clone(),
            signature: codec::signature(schema),
            kind,
        })
    }
}

/// The ids that may have been handed out: numbering resumes at these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Every object id handed out is below this.
    pub object_ids: i64,
    /// Every id of a resent copy handed out is below this.
    pub resend_ids: i64,
}

impl Bounds {
    fn raise(&mut self, other: Bounds) {
        self.object_ids = self.object_ids.max(other.object_ids);
        self.resend_ids = self.resend_ids.max(other.resend_ids);
    }
}

/// A service's state as read at start.
#[derive(Debug)]
pub struct Recovered {
    /// Every live track's latest observation and when it was received, in no set order.
    pub observations: Vec<(Feature, i64)>,
    /// Where numbering resumes.
    pub bounds: Bounds,
    /// The number the journal's next segment takes.
    pub next_segment: u64,
    /// Segments read (what a checkpoint would compact).
    pub segments_read: usize,
}

/// Why a store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or a file in it cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What one file came to.
struct Read {
    header: Header,
    records: Vec<Record>,
    /// Where its whole frames end, when something follows them.
    torn_at: Option<usize>,
}

/// Why a file's content is not used.
#[derive(Debug)]
enum Unusable {
    /// Damaged or of another format.
    Corrupt(String),
    /// Another service's or schema's.
    Foreign(String),
    /// Not even its header was written whole (created, then the crash).
    Unwritten,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Corrupt(why) => write!(f, "it is damaged ({why})"),
            Unusable::Foreign(why) => write!(f, "it belongs to {why}"),
            Unusable::Unwritten => write!(f, "its header was never written whole"),
        }
    }
}

fn read_file(bytes: &[u8], layout: &Layout, schema: &Schema) -> Result<Read, Unusable> {
    if MAGIC.starts_with(bytes) {
        return Err(Unusable::Unwritten);
    }
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| Unusable::Corrupt("not a featurestream state file".into()))?;
    let (payloads, end) = codec::frames(body);
    let torn_at = (end < body.len()).then_some(MAGIC.len() + end);
    if let Some(at) = torn_at
        && !codec::is_torn_tail(&body[end..])
    {
        return Err(Unusable::Corrupt(format!(
            "a record at byte {at} fails its checksum and more follows it"
        )));
    }
    let mut payloads = payloads.into_iter();
    let header = match payloads
        .next()
        .map(|payload| codec::decode(payload, schema))
    {
        Some(Ok(Record::Header(header))) => header,
        Some(Ok(_)) => return Err(Unusable::Corrupt("no header".into())),
        Some(Err(error)) => {
            // A header of another schema does not decode as a record of this one only if it
            // is damaged: headers carry no schema-typed values.
            return Err(Unusable::Corrupt(error.to_string()));
        }
        // Nothing but a torn tail after the magic number.
        None => return Err(Unusable::Unwritten),
    };
    if header.service != layout.service || header.signature != codec::signature(schema) {
        return Err(Unusable::Foreign(format!(
            "service \"{}\" with another schema or spatial reference",
            header.service
        )));
    }
    let records = payloads
        .map(|payload| codec::decode(payload, schema))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Unusable::Corrupt(error.to_string()))?;
    Ok(Read {
        header,
        records,
        torn_at,
    })
}

/// The state being rebuilt: each track's latest, in the order tracks appeared.
struct Replay {
    track_field: usize,
    object_id_field: usize,
    slots: Vec<Option<(Feature, i64)>>,
    by_track: HashMap<TrackKey, usize>,
    bounds: Bounds,
}

impl Replay {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Header(_) => {}
            Record::Observations(observations) => {
                self.by_track.reserve(observations.len());
                for (feature, received_ms) in observations {
                    if let Some(FieldValue::Integer(id)) =
                        feature.attributes.get(self.object_id_field)
                    {
                        self.bounds.object_ids = self.bounds.object_ids.max(id.saturating_add(1));
                    }
                    let key = TrackKey::of(&feature, self.track_field);
                    match self.by_track.entry(key) {
                        std::collections::hash_map::Entry::Occupied(slot) => {
                            self.slots[*slot.get()] = Some((feature, received_ms));
                        }
                        std::collections::hash_map::Entry::Vacant(vacant) => {
                            vacant.insert(self.slots.len());
                            self.slots.push(Some((feature, received_ms)));
                        }
                    }
                }
            }
            Record::Removed(tracks) => {
                for track in tracks {
                    if let Some(slot) = self.by_track.remove(&TrackKey::of_value(Some(&track))) {
                        self.slots[slot] = None;
                    }
                }
            }
            Record::Reserved {
                object_ids,
                resend_ids,
            } => self.bounds.raise(Bounds {
                object_ids,
                resend_ids,
            }),
        }
    }
}

/// Reads a service's state from its files (see the module's comment): the checkpoint, then
/// the journal. An error only when the directory cannot be read or written.
pub fn recover(layout: &Layout, schema: &Schema) -> Result<Recovered, StoreError> {
    let mut replay = Replay {
        track_field: schema.track_id_field(),
        object_id_field: schema.object_id_field(),
        slots: Vec::new(),
        by_track: HashMap::new(),
        bounds: Bounds {
            object_ids: 1,
            resend_ids: super::RESEND_IDS,
        },
    };
    let checkpoint_path = layout.checkpoint();
    let mut problem: Option<(PathBuf, Unusable)> = None;
    let mut replay_from = 0;
    let mut segments_read = 0;
    match std::fs::read(&checkpoint_path) {
        Ok(bytes) => match read_file(&bytes, layout, schema) {
            Ok(read) => match (read.header.kind, read.torn_at) {
                (
                    FileKind::Checkpoint {
                        object_ids,
                        resend_ids,
                        replay_from: first,
                    },
                    None,
                ) => {
                    replay.bounds.raise(Bounds {
                        object_ids,
                        resend_ids,
                    });
                    replay_from = first;
                    for record in read.records {
                        replay.apply(record);
                    }
                }
                // A checkpoint is renamed into place whole: one that is not is damage.
                (_, torn) => {
                    problem = Some((
                        checkpoint_path.clone(),
                        Unusable::Corrupt(match torn {
                            Some(at) => format!("unreadable from byte {at}"),
                            None => "not a checkpoint".into(),
                        }),
                    ))
                }
            },
            Err(unusable) => problem = Some((checkpoint_path.clone(), unusable)),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(imported) = import_legacy(layout, schema) {
                replay.bounds.raise(Bounds {
                    object_ids: imported.next_object_id,
                    resend_ids: imported.next_resend_id,
                });
                replay.apply(Record::Observations(imported.observations));
            }
        }
        Err(error) => return Err(io(&checkpoint_path)(error)),
    }
    let segments = layout.segments().map_err(io(&layout.dir))?;
    let mut next_segment = replay_from;
    for (index, (number, path)) in segments.iter().enumerate() {
        let number = *number;
        if number < replay_from {
            // Compacted into the checkpoint; its deletion did not finish.
            std::fs::remove_file(path).map_err(io(path))?;
            continue;
        }
        next_segment = number + 1;
        if problem.is_some() {
            continue;
        }
        let bytes = std::fs::read(path).map_err(io(path))?;
        let read = match read_file(&bytes, layout, schema) {
            Ok(read) => read,
            // Created, then the crash: nothing in it was ever acknowledged.
            Err(Unusable::Unwritten) if index + 1 == segments.len() => {
                // Its number is taken again by the next segment: the numbers stay consecutive.
                next_segment = number;
                log::warn!(
                    "service {}: journal segment {} holds no whole record; removed",
                    layout.service,
                    path.display()
                );
                std::fs::remove_file(path).map_err(io(path))?;
                continue;
            }
            Err(unusable) => {
                problem = Some((path.clone(), unusable));
                continue;
            }
        };
        if read.header.kind != FileKind::Segment(number) {
            problem = Some((
                path.clone(),
                Unusable::Corrupt(format!("its header names {:?}", read.header.kind)),
            ));
            continue;
        }
        if number != replay_from + segments_read as u64 {
            problem = Some((
                path.clone(),
                Unusable::Corrupt(format!(
                    "segment {} is missing",
                    replay_from + segments_read as u64
                )),
            ));
            continue;
        }
        segments_read += 1;
        for record in read.records {
            replay.apply(record);
        }
        if let Some(at) = read.torn_at {
            log::warn!(
                "service {}: journal segment {} ends in a torn record (a crash mid-write): cut off at byte {at} of {}; what was acknowledged before it is kept",
                layout.service,
                path.display(),
                bytes.len()
            );
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            file.set_len(at as u64).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
        }
    }
    if let Some((path, unusable)) = problem {
        // Numbering resumes above whatever the readable parts say may have been handed out.
        let mut files = vec![checkpoint_path.clone()];
        files.extend(segments.into_iter().map(|(_, path)| path));
        for file in files {
            if let Ok(bytes) = std::fs::read(&file) {
                salvage_bounds(&bytes, schema, &mut replay);
            }
        }
        set_aside(layout, &path, &unusable)?;
        return Ok(Recovered {
            observations: Vec::new(),
            bounds: replay.bounds,
            next_segment,
            segments_read: 0,
        });
    }
    Ok(Recovered {
        observations: replay.slots.into_iter().flatten().collect(),
        bounds: replay.bounds,
        next_segment,
        segments_read,
    })
}

/// Raises `replay`'s bounds by every record of `bytes` that reads (a damaged file's frames
/// before the damage, or after it when a checksum fails inside).
fn salvage_bounds(bytes: &[u8], schema: &Schema, replay: &mut Replay) {
    let (payloads, _) = codec::frames(bytes.get(MAGIC.len()..).unwrap_or_default());
    for payload in payloads {
        match codec::decode(payload, schema) {
            Ok(Record::Header(Header {
                kind:
                    FileKind::Checkpoint {
                        object_ids,
                        resend_ids,
                        ..
                    },
                ..
            })) => replay.bounds.raise(Bounds {
                object_ids,
                resend_ids,
            }),
            Ok(record @ (Record::Reserved { .. } | Record::Observations(_))) => {
                replay.apply(record)
            }
            _ => {}
        }
    }
}

/// Moves every file of the store aside, after a log line naming the file that is not used
/// and why.
fn set_aside(layout: &Layout, culprit: &Path, why: &Unusable) -> Result<(), StoreError> {
    let stamp = super::super::broker::now_ms();
    log::error!(
        "service {}: the latest state in {} is not used: {} {why}; the whole store is moved aside (*.corrupt-{stamp}) and the service starts empty",
        layout.service,
        layout.dir.display(),
        culprit.display()
    );
    let mut files: Vec<PathBuf> = layout
        .segments()
        .map_err(io(&layout.dir))?
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    files.push(layout.checkpoint());
    for path in files {
        let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
        match std::fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(&path)(error)),
        }
    }
    Ok(())
}

/// Reads the JSON file format 1 wrote, if there is one, and sets it aside: its state is the
/// new store's first checkpoint.
fn import_legacy(layout: &Layout, schema: &Schema) -> Option<super::legacy::Saved> {
    let path = layout.legacy();
    let saved = super::legacy::load_or_set_aside(&path, &layout.service, schema)?;
    let imported = PathBuf::from(format!("{}.imported", path.display()));
    if let Err(error) = std::fs::rename(&path, &imported) {
        log::warn!(
            "service {}: could not rename {} after reading it: {error}",
            layout.service,
            path.display()
        );
    }
    Some(saved)
}

/// Syncs a directory, so that a file created or renamed in it survives a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates segment `number` with its header and the ids' bounds, flushed to stable storage.
pub fn create_segment(
    layout: &Layout,
    schema: &Schema,
    number: u64,
    bounds: Bounds,
) -> Result<std::fs::File, StoreError> {
    let path = layout.segment(number);
    let mut bytes = MAGIC.to_vec();
    codec::encode(
        &layout.header(schema, FileKind::Segment(number)),
        &mut bytes,
    );
    codec::encode(
        &Record::Reserved {
            object_ids: bounds.object_ids,
            resend_ids: bounds.resend_ids,
        },
        &mut bytes,
    );
    let written = (|| {
        // A leftover of a creation that failed (never acknowledged anything) goes first.
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        sync_dir(&layout.dir)?;
        Ok(file)
    })();
    written.map_err(|error| {
        let _ = std::fs::remove_file(&path);
        io(&path)(error)
    })
}

/// How many observations one checkpoint record holds.
const CHECKPOINT_CHUNK: usize = 4096;

/// Writes the whole state as the checkpoint, with `replay_from` the first segment not in it,
/// then deletes the segments before it. Returns the checkpoint's size in bytes.
pub fn write_checkpoint(
    layout: &Layout,
    schema: &Schema,
    frozen: &super::Frozen,
    bounds: Bounds,
    replay_from: u64,
) -> Result<u64, StoreError> {
    let path = layout.checkpoint();
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    let written = (|| -> std::io::Result<u64> {
        // Whatever is there (a crash's leftover, a planted link) goes; the link itself, not
        // what it points at. `create_new` then refuses anything that appears meanwhile.
        match std::fs::remove_file(&temporary) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut bytes = MAGIC.to_vec();
        codec::encode(
            &layout.header(
                schema,
                FileKind::Checkpoint {
                    object_ids: bounds.object_ids,
                    resend_ids: bounds.resend_ids,
                    replay_from,
                },
            ),
            &mut bytes,
        );
        let mut size = 0;
        let slots: Vec<&super::Slot> = frozen.iter().map(|(_, slot)| slot).collect();
        for chunk in slots.chunks(CHECKPOINT_CHUNK) {
            codec::encode_observations(
                chunk.iter().map(|slot| (&*slot.feature, slot.received_ms)),
                &mut bytes,
            );
            file.write_all(&bytes)?;
            size += bytes.len() as u64;
            bytes.clear();
        }
        file.write_all(&bytes)?;
        size += bytes.len() as u64;
        let file = file.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        sync_dir(&layout.dir)?;
        Ok(size)
    })();
    let size = written.map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        io(&path)(error)
    })?;
    layout
        .delete_segments_before(replay_from)
        .map_err(io(&layout.dir))?;
    Ok(size)
}
