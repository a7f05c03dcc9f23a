//! A minimal WebSocket client for the load tester's hot path. Bytes are read into one
//! scratch buffer per thread and fed straight to a streaming frame parser and message scanner,
//! so a session holds no frame and what is read is scanned while still in the cache; a large
//! frame is kept once per thread, for the thread's other sessions to compare (`recall`). No
//! UTF-8 validation. Server frames are unmasked (RFC 6455 §5.1); client frames are masked with
//! a zero key, which is legal and needs no XOR.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::recall::Recall;
use crate::scan::{
    HEAD_BYTES, MessageScan, Scanner, Summary, is_reply, number_text, parse_decimal,
};

/// Bytes read from a socket at once.
const SCRATCH_BYTES: usize = 256 * 1024;

thread_local! {
    /// Every session of a thread reads through this buffer, one at a time.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Bytes a socket has received: on the wire, and as messages once inflated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Every byte read after the upgrade.
    pub(crate) wire: u64,
    /// Data messages' payloads, inflated where they came compressed.
    pub(crate) messages: u64,
    /// Compressed messages among them.
    pub(crate) compressed_messages: u64,
}

/// An open WebSocket.
pub(crate) struct RawSocket {
    stream: TcpStream,
    parser: FrameParser,
    /// Messages and closes parsed but not yet taken.
    events: VecDeque<Event>,
    /// Payloads of pings seen but not answered yet.
    pongs: Vec<Vec<u8>>,
    /// Whether the server accepted permessage-deflate.
    pub(crate) deflate: bool,
}

/// What the socket has received.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    /// A whole text message, summarised.
    Message(Summary),
    /// The server's close frame and its code.
    Close(Option<u16>),
}

fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("only ws:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    Ok((authority.to_owned(), path.to_owned()))
}

impl RawSocket {
    /// Connects and upgrades (offering permessage-deflate with `deflate`); a refusal is
    /// reported as `HTTP error: <status line>`.
    pub(crate) async fn connect(
        url: &str,
        scanner: Rc<Scanner>,
        deflate: bool,
    ) -> Result<RawSocket, String> {
        let (authority, path) = split_url(url)?;
        let mut stream = TcpStream::connect(&authority)
            .await
            .map_err(|err| err.to_string())?;
        let _ = stream.set_nodelay(true);
        let offer = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| err.to_string())?;
        let mut buffer = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(end) = memchr::memmem::find(&buffer, b"\r\n\r\n") {
                break end + 4;
            }
            if buffer.len() > 16 * 1024 {
                return Err("HTTP error: response head too long".into());
            }
            let read = stream
                .read_buf(&mut buffer)
                .await
                .map_err(|err| err.to_string())?;
            if read == 0 {
                return Err("connection closed during the upgrade".into());
            }
        };
        let status_line = String::from_utf8_lossy(
            &buffer[..buffer.iter().position(|b| *b == b'\r').unwrap_or(0)],
        )
        .into_owned();
        if !status_line.contains(" 101 ") {
            return Err(format!("HTTP error: {status_line}"));
        }
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let negotiated = head.lines().any(|line| {
            line.starts_with("sec-websocket-extensions:") && line.contains("permessage-deflate")
        });
        let mut socket = RawSocket {
            stream,
            parser: FrameParser::new(scanner),
            events: VecDeque::new(),
            pongs: Vec::new(),
            deflate: negotiated,
        };
        // Frames may follow the response head in the same read.
        socket
            .parser
            .feed(&buffer[head_end..], &mut socket.events, &mut socket.pongs);
        Ok(socket)
    }

    /// Sends a text frame.
    pub(crate) async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(0x1, text.as_bytes()).await
    }

    /// Sends a close frame (1000).
    pub(crate) async fn close(&mut self) -> std::io::Result<()> {
        self.send(0x8, &1000u16.to_be_bytes()).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            0..=125 => frame.push(0x80 | payload.len() as u8),
            126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }

    /// What the socket has received so far.
    pub(crate) fn traffic(&self) -> Traffic {
        self.parser.traffic
    }

    /// The next event already received, without reading.
    pub(crate) fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Answers queued pings, then reads once and parses what arrived; `false` when the
    /// connection has ended.
    pub(crate) async fn fill(&mut self) -> bool {
        for payload in std::mem::take(&mut self.pongs) {
            if self.send(0xA, &payload).await.is_err() {
                return false;
            }
        }
        let RawSocket {
            stream,
            parser,
            events,
            pongs,
            ..
        } = self;
        std::future::poll_fn(|cx| {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut read = ReadBuf::new(&mut scratch);
                match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                    std::task::Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                        parser.feed(read.filled(), events, pongs);
                        std::task::Poll::Ready(true)
                    }
                    std::task::Poll::Ready(_) => std::task::Poll::Ready(false),
                    std::task::Poll::Pending => std::task::Poll::Pending,
                }
            })
        })
        .await
    }
}

/// Parses frames from a byte stream in pieces of any size.
struct FrameParser {
    scanner: Rc<Scanner>,
    /// The frame header in progress (at most 14 bytes).
    header: Vec<u8>,
    /// The current frame, once its header is complete.
    frame: Option<FrameInProgress>,
    /// The text message in progress (it may span continuation frames).
    message: MessageScan,
    /// A control frame's payload in progress.
    control: Vec<u8>,
    /// Whole text frames of the chunk being fed, summarised together once it is walked.
    batch: Vec<WholeFrame>,
    /// The last timestamp parsed and its text: the frames of a tick share one.
    last_timestamp: Option<(Vec<u8>, f64)>,
    /// A compressed message in progress (RSV1 on its first frame): its compressed bytes.
    deflated: Option<Vec<u8>>,
    /// A large text message in one frame, in progress: recalled or recorded.
    recall: Option<Recall>,
    traffic: Traffic,
}

/// A text frame that arrived whole within one chunk.
struct WholeFrame {
    /// Its placeholder in the event queue.
    event: usize,
    payload: std::ops::Range<usize>,
    features: u32,
    first_timestamp: Option<f64>,
}

struct FrameInProgress {
    opcode: u8,
    fin: bool,
    /// RSV1: the first frame of a compressed message.
    compressed: bool,
    length: u64,
    remaining: u64,
}

impl FrameParser {
    fn new(scanner: Rc<Scanner>) -> FrameParser {
        FrameParser {
            scanner,
            header: Vec::with_capacity(14),
            frame: None,
            message: MessageScan::default(),
            control: Vec::new(),
            batch: Vec::new(),
            last_timestamp: None,
            deflated: None,
            recall: None,
            traffic: Traffic::default(),
        }
    }

    fn feed(&mut self, chunk: &[u8], events: &mut VecDeque<Event>, pongs: &mut Vec<Vec<u8>>) {
        self.traffic.wire += chunk.len() as u64;
        self.walk(chunk, events, pongs);
        self.summarise_batch(chunk, events);
    }

    /// Parses the chunk's frames; whole text frames are left in `batch` to summarise.
    fn walk(&mut self, chunk: &[u8], events: &mut VecDeque<Event>, pongs: &mut Vec<Vec<u8>>) {
        let mut bytes = chunk;
        loop {
            let Some(frame) = &mut self.frame else {
                if bytes.is_empty() {
                    return;
                }
                let taken = self.take_header(bytes);
                bytes = &bytes[taken..];
                continue;
            };
            let whole_frame = frame.remaining == frame.length;
            let take = frame.remaining.min(bytes.len() as u64) as usize;
            let offset = chunk.len() - bytes.len();
            let (payload, rest) = bytes.split_at(take);
            bytes = rest;
            frame.remaining -= take as u64;
            let done = frame.remaining == 0;
            if frame.compressed && frame.opcode == 0x1 && whole_frame {
                // The first piece of a compressed message's first frame.
                self.deflated = Some(Vec::new());
            }
            match frame.opcode {
                0x1 if self.recall.is_some() => {
                    self.traffic.messages += take as u64;
                    let recall = self.recall.as_mut().expect("a recalled message");
                    recall.feed(&self.scanner, payload);
                    if done {
                        let recall = self.recall.take().expect("a recalled message");
                        events.push_back(Event::Message(recall.finish(&self.scanner)));
                    }
                }
                0x0 | 0x1 if self.deflated.is_some() => {
                    let deflated = self.deflated.as_mut().expect("a compressed message");
                    deflated.extend_from_slice(payload);
                    if done && frame.fin {
                        let deflated = self.deflated.take().expect("a compressed message");
                        events.push_back(inflated(&mut self.traffic, &self.scanner, &deflated));
                    } else if done {
                        // The next frame continues this message (RSV1 only on the first).
                        frame.compressed = false;
                    }
                }
                0x1 if done && frame.fin && whole_frame && self.message.is_idle() => {
                    self.traffic.messages += take as u64;
                    if is_reply(payload) || self.scanner.per_feature {
                        events
                            .push_back(Event::Message(MessageScan::whole(&self.scanner, payload)));
                    } else {
                        self.batch.push(WholeFrame {
                            event: events.len(),
                            payload: offset..offset + take,
                            features: 0,
                            first_timestamp: None,
                        });
                        events.push_back(Event::Message(Summary::default()));
                    }
                }
                0x0 | 0x1 => {
                    self.traffic.messages += take as u64;
                    if !payload.is_empty() {
                        self.message.feed(&self.scanner, payload);
                    }
                    if done && frame.fin {
                        events.push_back(Event::Message(self.message.finish(&self.scanner)));
                    }
                }
                _ => self.control.extend_from_slice(payload),
            }
            if done {
                let opcode = frame.opcode;
                self.frame = None;
                match opcode {
                    0x8 => {
                        let code = (self.control.len() >= 2)
                            .then(|| u16::from_be_bytes([self.control[0], self.control[1]]));
                        events.push_back(Event::Close(code));
                    }
                    0x9 => pongs.push(self.control.clone()),
                    _ => {}
                }
                self.control.clear();
            } else if bytes.is_empty() {
                return;
            }
        }
    }

    /// Summarises the chunk's whole frames with one search per needle over the chunk, instead
    /// of searches per frame (server mode sends a frame per feature: millions a second).
    fn summarise_batch(&mut self, chunk: &[u8], events: &mut VecDeque<Event>) {
        let (Some(first), Some(last)) = (self.batch.first(), self.batch.last()) else {
            return;
        };
        let span = first.payload.start..last.payload.end;
        let scanner = &*self.scanner;
        // Matches and frames are both in order: walk them together. A match belongs to the
        // frame it lies inside (none can straddle two frames: a header sits between).
        let needle = scanner.attributes.needle().len();
        let mut current = 0;
        for found in scanner.attributes.find_iter(&chunk[span.clone()]) {
            let (start, end) = (span.start + found, span.start + found + needle);
            while current < self.batch.len() && self.batch[current].payload.end < end {
                current += 1;
            }
            let Some(frame) = self.batch.get_mut(current) else {
                break;
            };
            if start >= frame.payload.start {
                frame.features += 1;
            }
        }
        let needle = scanner.timestamp.needle().len();
        let mut current = 0;
        for found in scanner.timestamp.find_iter(&chunk[span.clone()]) {
            let (start, end) = (span.start + found, span.start + found + needle);
            while current < self.batch.len()
                && (self.batch[current].payload.end < end
                    || self.batch[current].first_timestamp.is_some())
            {
                current += 1;
            }
            let Some(frame) = self.batch.get_mut(current) else {
                break;
            };
            let head_end = frame.payload.end.min(frame.payload.start + HEAD_BYTES);
            if start >= frame.payload.start && end <= head_end {
                let text = number_text(&chunk[end..head_end]);
                frame.first_timestamp = match (&self.last_timestamp, text) {
                    (Some((last, value)), Some(text)) if last == text => Some(*value),
                    (_, Some(text)) => {
                        let value = parse_decimal(text);
                        if let Some(value) = value {
                            self.last_timestamp = Some((text.to_vec(), value));
                        }
                        value
                    }
                    (_, None) => None,
                };
                current += 1;
            }
        }
        for frame in self.batch.drain(..) {
            events[frame.event] = Event::Message(Summary {
                features: frame.features,
                first_timestamp: frame.first_timestamp,
                reply: None,
                runs: Vec::new(),
            });
        }
    }

    /// Takes header bytes; starts the frame once the header is complete. Returns bytes taken.
    fn take_header(&mut self, bytes: &[u8]) -> usize {
        // Fast path: a whole header at hand and none in progress (nearly always).
        if self.header.is_empty()
            && let Some((length, size)) = header_length(bytes)
        {
            self.start_frame(bytes[0], length);
            return size;
        }
        let mut taken = 0;
        while taken < bytes.len() {
            self.header.push(bytes[taken]);
            taken += 1;
            if let Some((length, _)) = header_length(&self.header) {
                let first = self.header[0];
                self.header.clear();
                self.start_frame(first, length);
                break;
            }
        }
        taken
    }

    fn start_frame(&mut self, first: u8, length: u64) {
        let (opcode, fin, compressed) = (first & 0x0F, first & 0x80 != 0, first & 0x40 != 0);
        // A large message in one frame is compared with those this thread's sessions saw.
        self.recall = (opcode == 0x1
            && fin
            && !compressed
            && self.message.is_idle()
            && self.deflated.is_none())
        .then(|| Recall::start(&self.scanner, length))
        .flatten();
        // An empty frame completes on `feed`'s next turn, with an empty payload.
        self.frame = Some(FrameInProgress {
            opcode,
            fin,
            compressed,
            length,
            remaining: length,
        });
    }
}

/// A compressed message, inflated on its own and summarised; one that does not inflate
/// ends the session as the server would end one sending bad data (1007).
fn inflated(traffic: &mut Traffic, scanner: &Scanner, deflated: &[u8]) -> Event {
    INFLATE.with_borrow_mut(|(inflater, out)| {
        // Each message on its own (the server keeps no context): one inflater per thread.
        inflater.reset(false);
        out.clear();
        for input in [deflated, &[0, 0, 0xff, 0xff][..]] {
            let start = inflater.total_in();
            loop {
                let (in_before, out_before) = (inflater.total_in(), out.len());
                let consumed = (in_before - start) as usize;
                if inflater
                    .decompress_vec(&input[consumed..], out, flate2::FlushDecompress::Sync)
                    .is_err()
                {
                    return Event::Close(Some(1007));
                }
                if (inflater.total_in() - start) as usize == input.len()
                    && out.len() < out.capacity()
                {
                    break;
                }
                let progressed = inflater.total_in() != in_before || out.len() != out_before;
                if !progressed && out.len() < out.capacity() {
                    // Stuck with room to spare (the stream ended before its bytes did): not
                    // a message of this protocol.
                    return Event::Close(Some(1007));
                }
                if out.len() >= 1 << 30 {
                    return Event::Close(Some(1009));
                }
                if out.len() == out.capacity() {
                    out.reserve(out.capacity().max(64 * 1024));
                }
            }
        }
        traffic.messages += out.len() as u64;
        traffic.compressed_messages += 1;
        Event::Message(MessageScan::whole(scanner, out))
    })
}

thread_local! {
    /// The inflater and output buffer every session of a thread uses, one message at a time.
    static INFLATE: RefCell<(flate2::Decompress, Vec<u8>)> =
        RefCell::new((flate2::Decompress::new(false), Vec::new()));
}

/// A frame header's payload length and its own size, once `bytes` holds all of it.
fn header_length(bytes: &[u8]) -> Option<(u64, usize)> {
    match *bytes.get(1)? & 0x7F {
        126 => Some((
            u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        )),
        127 => Some((u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10)),
        short => Some((u64::from(short), 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            0..=125 => frame.push(payload.len() as u8),
            126..=65_535 => {
                frame.push(126);
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ => {
                frame.push(127);
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn frames_split_anywhere_give_the_same_events() {
        let scanner = Rc::new(Scanner::new("observed"));
        let feature =
            br#"{"attributes":{"OBJECTID":1,"observed":1795420842492},"geometry":{"x":1,"y":2}}"#;
        let big: Vec<u8> = [
            &b"{\"features\":["[..],
            &vec![&feature[..]; 900].join(&b","[..])[..],
            b"]}",
        ]
        .concat();
        let mut stream = frame(0x1, true, feature);
        stream.extend(frame(0x9, true, b"hi"));
        stream.extend(frame(0x1, false, &big[..100]));
        stream.extend(frame(0x0, true, &big[100..]));
        stream.extend(frame(0x1, true, b""));
        stream.extend(frame(0x8, true, &1000u16.to_be_bytes()));
        let expected = vec![
            Event::Message(Summary {
                features: 1,
                first_timestamp: Some(1_795_420_842_492.0),
                ..Summary::default()
            }),
            Event::Message(Summary {
                features: 900,
                first_timestamp: Some(1_795_420_842_492.0),
                ..Summary::default()
            }),
            Event::Message(Summary::default()),
            Event::Close(Some(1000)),
        ];
        for piece in [1, 2, 3, 7, 13, 100, 4096, stream.len()] {
            let mut parser = FrameParser::new(scanner.clone());
            let (mut events, mut pongs) = (VecDeque::new(), Vec::new());
            for chunk in stream.chunks(piece) {
                parser.feed(chunk, &mut events, &mut pongs);
            }
            assert_eq!(Vec::from(events), expected, "pieces of {piece}");
            assert_eq!(pongs, vec![b"hi".to_vec()]);
        }
    }

    #[test]
    fn frames_summarised_together_match_frames_summarised_alone() {
        let scanner = Rc::new(Scanner::new("observed"));
        let mut messages: Vec<Vec<u8>> = (0..50)
            .map(|index| {
                format!(r#"{{"attributes":{{"OBJECTID":{index},"observed":{}}},"geometry":{{"x":1,"y":2}}}}"#, 1_795_420_842_000u64 + index / 7)
                    .into_bytes()
            })
            .collect();
        messages.insert(
            20,
            br#"{"filter":{"where":"speed > 1"},"error":null}"#.to_vec(),
        );
        messages.insert(30, br#"{"attributes":{"observed":"late"}}"#.to_vec());
        let mut late = b"{\"attributes\":{\"pad\":\"".to_vec();
        late.extend(vec![b'x'; HEAD_BYTES]);
        late.extend_from_slice(b"\",\"observed\":1}}");
        messages.insert(40, late);
        let stream: Vec<u8> = messages
            .iter()
            .flat_map(|message| frame(0x1, true, message))
            .collect();
        let expected: Vec<Event> = messages
            .iter()
            .map(|message| Event::Message(MessageScan::whole(&scanner, message)))
            .collect();
        let mut parser = FrameParser::new(scanner.clone());
        let (mut events, mut pongs) = (VecDeque::new(), Vec::new());
        parser.feed(&stream, &mut events, &mut pongs);
        assert_eq!(Vec::from(events), expected);
    }

    #[test]
    fn a_recalled_message_summarises_as_a_scanned_one() {
        // Sessions of one thread share a scanner: the first to receive a large message scans
        // it, the next compare. A message of the same length that differs anywhere, even in
        // its last byte, is scanned on its own.
        let feature = |observed: u64| {
            format!(
                r#"{{"attributes":{{"OBJECTID":1,"observed":{observed}}},"geometry":{{"x":1,"y":2}}}}"#
            )
        };
        let message = |first: u64, last: u64| {
            let features: Vec<String> = (0..200)
                .map(|index| match index {
                    0 => feature(1_795_420_842_000 + first),
                    199 => feature(1_795_420_842_000 + last),
                    _ => feature(1_795_420_842_000 + index / 50),
                })
                .collect();
            format!("{{\"features\":[{}]}}", features.join(",")).into_bytes()
        };
        let (first, other, late) = (message(100, 100), message(200, 100), message(100, 200));
        assert_eq!(first.len(), other.len());
        assert_eq!(first.len(), late.len());
        assert!(first.len() as u64 >= crate::recall::RECALL_MIN_BYTES);
        let scanned_alone = |scanner: Scanner, payload: &[u8]| {
            let mut parser = FrameParser::new(Rc::new(scanner));
            let mut events = VecDeque::new();
            parser.feed(&frame(0x1, true, payload), &mut events, &mut Vec::new());
            Vec::from(events)
        };
        for per_feature in [false, true] {
            let scanner = || {
                if per_feature {
                    Scanner::per_feature("observed")
                } else {
                    Scanner::new("observed")
                }
            };
            let shared = Rc::new(scanner());
            // One after another, then several at once, each in pieces of its own size (the
            // sessions of a thread read in turns, a large message over several reads).
            let rounds: [&[(&Vec<u8>, usize)]; 3] = [
                &[(&first, 4096)],
                &[(&first, 7), (&other, 1000), (&first, 1 << 20), (&late, 3)],
                &[
                    (&late, 512),
                    (&first, 64),
                    (&first, 5000),
                    (&other, 333),
                    (&late, 2048),
                ],
            ];
            for round in rounds {
                let mut parsers: Vec<_> = round
                    .iter()
                    .map(|(payload, piece)| {
                        let stream = frame(0x1, true, payload);
                        let chunks: Vec<Vec<u8>> =
                            stream.chunks(*piece).map(<[u8]>::to_vec).collect();
                        (FrameParser::new(shared.clone()), chunks, VecDeque::new())
                    })
                    .collect();
                let most = parsers.iter().map(|(_, chunks, _)| chunks.len()).max();
                for turn in 0..most.unwrap_or(0) {
                    for (parser, chunks, events) in &mut parsers {
                        if let Some(chunk) = chunks.get(turn) {
                            parser.feed(chunk, events, &mut Vec::new());
                        }
                    }
                }
                for ((payload, piece), (_, _, events)) in round.iter().zip(parsers) {
                    assert_eq!(
                        Vec::from(events),
                        scanned_alone(scanner(), payload),
                        "per feature {per_feature}, pieces of {piece}"
                    );
                }
            }
            assert!(
                Recall::start(&shared, first.len() as u64).is_some_and(|recall| recall.is_known()),
                "a message of that length is kept with its summary"
            );
            assert_ne!(
                scanned_alone(scanner(), &first),
                scanned_alone(scanner(), &other)
            );
            // Only a per-feature scan reads the last feature's timestamp.
            assert_eq!(
                scanned_alone(scanner(), &first) != scanned_alone(scanner(), &late),
                per_feature
            );
        }
    }

    /// The events and pongs of `stream` fed in pieces of `piece` bytes.
    fn parse_in_pieces(stream: &[u8], piece: usize) -> (Vec<Event>, Vec<Vec<u8>>) {
        let mut parser = FrameParser::new(Rc::new(Scanner::new("observed")));
        let (mut events, mut pongs) = (VecDeque::new(), Vec::new());
        for chunk in stream.chunks(piece.max(1)) {
            parser.feed(chunk, &mut events, &mut pongs);
        }
        (Vec::from(events), pongs)
    }

    proptest::proptest! {
        /// Whatever a server sends, in whatever pieces, the parser never panics, and the
        /// events do not depend on how the bytes were split.
        #[test]
        fn any_bytes_in_any_pieces_parse_alike(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            piece in 1usize..64,
        ) {
            proptest::prop_assert_eq!(parse_in_pieces(&bytes, piece), parse_in_pieces(&bytes, bytes.len()));
        }
    }

    proptest::proptest! {
        /// Frames built from the words the scanner looks for, split anywhere, summarise as
        /// they do whole.
        #[test]
        fn frames_of_scanner_words_parse_alike_in_any_pieces(
            frames in proptest::collection::vec(
                (
                    proptest::sample::select(vec![0x0u8, 0x1, 0x1, 0x1, 0x2, 0x9, 0xA]),
                    proptest::bool::weighted(0.8),
                    proptest::collection::vec(
                        proptest::sample::select(vec![
                            "\"attributes\":", "\"observed\":", "1795420842492", ".125", "{\"filter\"",
                            "\"error\":null", "x", ",", "}", "-",
                        ]),
                        0..40,
                    ),
                ),
                0..30,
            ),
            piece in 1usize..97,
        ) {
            let stream: Vec<u8> = frames
                .iter()
                .flat_map(|(opcode, fin, words)| frame(*opcode, *fin, words.concat().as_bytes()))
                .collect();
            proptest::prop_assert_eq!(parse_in_pieces(&stream, piece), parse_in_pieces(&stream, stream.len()));
        }
    }
}
