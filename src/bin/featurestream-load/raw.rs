//! A minimal WebSocket client for the load tester's hot path. Bytes are read into one
//! scratch buffer per thread and fed straight to a streaming frame parser and message scanner,
//! so a session holds no frame, a large frame is never copied whole, and what is read is
//! scanned while still in the cache. No UTF-8 validation. Server frames are unmasked
//! (RFC 6455 §5.1); client frames are masked with a zero key, which is legal and needs no XOR.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::scan::{MessageScan, Scanner, Summary};

/// Bytes read from a socket at once.
const SCRATCH_BYTES: usize = 256 * 1024;

thread_local! {
    /// Every session of a thread reads through this buffer, one at a time.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// An open WebSocket.
pub(crate) struct RawSocket {
    stream: TcpStream,
    parser: FrameParser,
    /// Messages and closes parsed but not yet taken.
    events: VecDeque<Event>,
    /// Payloads of pings seen but not answered yet.
    pongs: Vec<Vec<u8>>,
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
    /// Connects and upgrades; a refusal is reported as `HTTP error: <status line>`.
    pub(crate) async fn connect(url: &str, scanner: Rc<Scanner>) -> Result<RawSocket, String> {
        let (authority, path) = split_url(url)?;
        let mut stream = TcpStream::connect(&authority)
            .await
            .map_err(|err| err.to_string())?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
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
        let mut socket = RawSocket {
            stream,
            parser: FrameParser::new(scanner),
            events: VecDeque::new(),
            pongs: Vec::new(),
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
}

struct FrameInProgress {
    opcode: u8,
    fin: bool,
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
        }
    }

    fn feed(&mut self, mut bytes: &[u8], events: &mut VecDeque<Event>, pongs: &mut Vec<Vec<u8>>) {
        loop {
            let Some(frame) = &mut self.frame else {
                if bytes.is_empty() {
                    return;
                }
                let taken = self.take_header(bytes);
                bytes = &bytes[taken..];
                continue;
            };
            let take = frame.remaining.min(bytes.len() as u64) as usize;
            let (payload, rest) = bytes.split_at(take);
            bytes = rest;
            frame.remaining -= take as u64;
            let done = frame.remaining == 0;
            match frame.opcode {
                0x0 | 0x1 => {
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

    /// Takes header bytes; starts the frame once the header is complete. Returns bytes taken.
    fn take_header(&mut self, bytes: &[u8]) -> usize {
        let needed = |header: &[u8]| match header.get(1).map(|byte| byte & 0x7F) {
            None => 2,
            Some(126) => 4,
            Some(127) => 10,
            Some(_) => 2,
        };
        let mut taken = 0;
        while self.header.len() < needed(&self.header) && taken < bytes.len() {
            self.header.push(bytes[taken]);
            taken += 1;
        }
        if self.header.len() == needed(&self.header) {
            let header = &self.header;
            let length = match header[1] & 0x7F {
                126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
                127 => u64::from_be_bytes(header[2..10].try_into().unwrap_or([0; 8])),
                short => u64::from(short),
            };
            self.frame = Some(FrameInProgress {
                opcode: header[0] & 0x0F,
                fin: header[0] & 0x80 != 0,
                remaining: length,
            });
            // An empty frame completes on `feed`'s next turn, with an empty payload.
            self.header.clear();
        }
        taken
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
                reply: None,
            }),
            Event::Message(Summary {
                features: 900,
                first_timestamp: Some(1_795_420_842_492.0),
                reply: None,
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
}
