//! WebSocket compression, permessage-deflate (RFC 7692), the way that keeps frame-once
//! fan-out: the server compresses every message on its own (`server_no_context_takeover`), so
//! a group's frame is compressed once and its bytes shared by every member, as its plain frame
//! is. Small messages go uncompressed (RSV1 clear), as the RFC allows message by message;
//! control frames never are. Clients are asked to compress each message on its own too
//! (`client_no_context_takeover`), so a session holds an inflater only while it reads a
//! compressed message, which is inflated never past the message limit.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::ws_frame;

/// Messages shorter than this go uncompressed: below it deflate saves a few bytes at best
/// (one server-mode feature of about 250 bytes shrinks to about 190) for the CPU of a
/// compression per message (`compressing_small_messages_saves_little`).
pub const MIN_COMPRESSED_BYTES: usize = 512;

/// The tail every sync-flushed deflate block ends with, which the RFC strips (§7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// What the server answers an acceptable offer with: it compresses every message on its own,
/// with a full 32 KiB window (so an offer limiting the server's window is declined), and asks
/// the client to do the same (RFC 7692 §7.1.1.2 lets a server ask it whatever the offer), so
/// that a session keeps no inflate context between the messages it receives.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Whether one of the client's `Sec-WebSocket-Extensions` offers (header values, in order) is
/// a permessage-deflate offer this server can honour. Offers with parameters it does not know
/// or cannot honour are declined, as the RFC asks; the client then gets plain messages.
pub fn accepts<'a>(header_values: impl IntoIterator<Item = &'a str>) -> bool {
    header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .any(acceptable_offer)
}

fn acceptable_offer(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next() != Some(NAME) {
        return false;
    }
    let mut seen: Vec<&str> = Vec::new();
    for parameter in parts {
        let (name, value) = match parameter.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (parameter, None),
        };
        if seen.contains(&name) {
            return false;
        }
        seen.push(name);
        let bits_ok = |value: Option<&str>| {
            value.is_none_or(|bits| {
                bits.parse::<u8>()
                    .is_ok_and(|bits| (8..=15).contains(&bits))
            })
        };
        let acceptable = match name {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            // The client may use any window: this server inflates with a full one.
            "client_max_window_bits" => bits_ok(value),
            // The server compresses with a full window: only 15 can be honoured.
            "server_max_window_bits" => value.is_some_and(|bits| bits == "15"),
            _ => false,
        };
        if !acceptable {
            return false;
        }
    }
    true
}

/// Compresses each text frame of `frames` (whole, unmasked, unfragmented frames, as the server
/// builds them) whose payload is at least [`MIN_COMPRESSED_BYTES`], at `level` (1-9), each on
/// its own; other frames are copied as they are. Returns `frames` itself when nothing was
/// compressed.
pub fn compress_frames(frames: &Bytes, level: u32) -> Bytes {
    if !frames_worth_compressing(frames) {
        return frames.clone();
    }
    COMPRESSOR.with_borrow_mut(|compressor| {
        let compressor = compressor.get_or_insert_with(|| Compressor::new(level));
        if compressor.level != level {
            *compressor = Compressor::new(level);
        }
        let mut out = BytesMut::with_capacity(frames.len() / 3 + 64);
        let mut rest = &frames[..];
        while let Some((header, payload_len)) = frame_header(rest) {
            let payload = &rest[header..header + payload_len];
            if rest[0] == 0x81 && payload_len >= MIN_COMPRESSED_BYTES {
                let deflated = compressor.deflate(payload);
                put_compressed_header(&mut out, deflated.len());
                out.put_slice(deflated);
            } else {
                out.put_slice(&rest[..header + payload_len]);
            }
            rest = &rest[header + payload_len..];
        }
        out.freeze()
    })
}

fn frames_worth_compressing(frames: &[u8]) -> bool {
    let mut rest = frames;
    while let Some((header, payload_len)) = frame_header(rest) {
        if rest[0] == 0x81 && payload_len >= MIN_COMPRESSED_BYTES {
            return true;
        }
        rest = &rest[header + payload_len..];
    }
    false
}

/// The header length and payload length of the unmasked frame at the start of `frames`.
fn frame_header(frames: &[u8]) -> Option<(usize, usize)> {
    let length = ws_frame::declared_payload_length(frames)? as usize;
    let header = ws_frame::header_len(length);
    (frames.len() >= header + length).then_some((header, length))
}

/// A final text frame's header with RSV1 set (a compressed message).
fn put_compressed_header(out: &mut BytesMut, payload_len: usize) {
    let start = out.len();
    ws_frame::put_text_header(out, payload_len);
    out[start] |= 0x40;
}

struct Compressor {
    level: u32,
    deflate: Compress,
    out: Vec<u8>,
}

impl Compressor {
    fn new(level: u32) -> Compressor {
        Compressor {
            level,
            deflate: Compress::new(Compression::new(level), false),
            out: Vec::new(),
        }
    }

    /// `payload` deflated on its own, tail stripped.
    fn deflate(&mut self, payload: &[u8]) -> &[u8] {
        self.deflate.reset();
        self.out.clear();
        self.out.reserve(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut self.out, FlushCompress::Sync)
                .expect("deflate on memory cannot fail");
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done once every byte is in and the flush had room to finish.
            if input.is_empty() && self.out.len() < self.out.capacity() {
                break;
            }
            if status == Status::BufError || self.out.len() == self.out.capacity() {
                self.out.reserve(self.out.capacity().max(64));
            }
        }
        if self.out.ends_with(&TAIL) {
            self.out.truncate(self.out.len() - TAIL.len());
        }
        &self.out
    }
}

thread_local! {
    /// One compressor per thread (brokers and session writers each have a thread): reset for
    /// every message.
    static COMPRESSOR: std::cell::RefCell<Option<Compressor>> = const { std::cell::RefCell::new(None) };
}

/// Why a compressed message from a client could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit (a deflate bomb, or just too big).
    TooLarge,
    /// Not a deflate stream.
    Corrupt,
}

/// An inflate context for one compressed message (or, for a client that keeps its context,
/// its run of messages).
pub struct Inflater {
    inflate: Decompress,
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater {
            inflate: Decompress::new(false),
        }
    }
}

impl Inflater {
    /// Inflates `input` (a compressed message, or a fragment of one; `last` for its final
    /// piece) onto `out`, which may hold at most `limit` bytes in all: past it, stops at once.
    pub fn inflate(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.feed(input, out, limit)?;
        if last {
            self.feed(&TAIL, out, limit)?;
        }
        Ok(())
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    // Full at the limit: anything more is too much.
                    let mut probe = [0u8; 1];
                    let before = self.inflate.total_out();
                    let _ = self
                        .inflate
                        .decompress(input, &mut probe, FlushDecompress::Sync)
                        .map_err(|_| InflateError::Corrupt)?;
                    if self.inflate.total_out() > before {
                        return Err(InflateError::TooLarge);
                    }
                    return Ok(());
                }
                let room = (out.capacity().max(256) * 2).min(limit) - out.len();
                out.reserve_exact(room);
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            self.inflate
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            input = &input[(self.inflate.total_in() - in_before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
            if out.len() == out_before
                && self.inflate.total_in() == in_before
                && out.len() < out.capacity()
            {
                // No progress with room left: the stream is broken.
                return Err(InflateError::Corrupt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Inflater::default()
            .inflate(payload, true, &mut out, usize::MAX)
            .expect("inflates");
        out
    }

    #[test]
    fn offers_are_accepted_only_when_they_can_be_honoured() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10; server_no_context_takeover",
            "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15",
        ] {
            assert!(accepts([offer]), "{offer}");
        }
        for offer in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(!accepts([offer]), "{offer}");
        }
        assert!(
            accepts([
                "permessage-deflate; server_max_window_bits=9, permessage-deflate",
                "unused"
            ]),
            "the second offer of a list"
        );
    }

    #[test]
    fn large_text_frames_are_compressed_on_their_own_and_read_back() {
        let big = br#"{"attributes":{"OBJECTID":1,"name":"vehicle-1","route":"Redlands Blvd"}}"#
            .repeat(40);
        let small = b"{\"type\":\"message\"}";
        let mut frames = BytesMut::new();
        for payload in [&big[..], &small[..], &big[..]] {
            frames.put_slice(&ws_frame::text_frame(payload));
        }
        let frames = frames.freeze();
        let compressed = compress_frames(&frames, 1);
        assert!(
            compressed.len() < frames.len() / 4,
            "{} of {}",
            compressed.len(),
            frames.len()
        );
        let mut rest = &compressed[..];
        let mut read = Vec::new();
        while let Some((header, length)) = frame_header(rest) {
            let payload = &rest[header..header + length];
            read.push(if rest[0] == 0xC1 {
                // Each on its own: a fresh context reads it.
                inflate_all(payload)
            } else {
                assert_eq!(rest[0], 0x81);
                payload.to_vec()
            });
            rest = &rest[header + length..];
        }
        assert_eq!(read, [big.clone(), small.to_vec(), big]);
        let plain = ws_frame::text_frame(small);
        assert_eq!(compress_frames(&plain, 1), plain, "a small frame as it was");
    }

    #[test]
    fn compressing_small_messages_saves_little() {
        // One server-mode feature, as the simulator writes it.
        let feature = br#"{"attributes":{"OBJECTID":1125899906842625,"TRACKID":17,"name":"vehicle-17","route":"E Street San Bernardino","status":"moving","speed":119.4,"heading":2.1,"active":1,"observed":1700000000000},"geometry":{"x":-117.2889561,"y":34.0813244}}"#;
        let mut compressor = Compressor::new(1);
        let deflated = compressor.deflate(feature).len();
        assert!(
            deflated * 10 > feature.len() * 6,
            "{deflated} of {}",
            feature.len()
        );
        assert!(feature.len() < MIN_COMPRESSED_BYTES);
    }

    #[test]
    fn a_client_context_carries_over_and_a_bomb_stops_at_the_limit() {
        // Two messages compressed with one context (the client keeps its window).
        let mut client = Compress::new(Compression::new(6), false);
        let mut message = |text: &[u8]| {
            let mut out = Vec::with_capacity(text.len() + 64);
            client
                .compress_vec(text, &mut out, FlushCompress::Sync)
                .unwrap();
            assert!(out.ends_with(&TAIL));
            out.truncate(out.len() - 4);
            out
        };
        let first = message(br#"{"filter":{"where":"speed > 50"}}"#);
        let second = message(br#"{"filter":{"where":"speed > 50"}}"#);
        let mut inflater = Inflater::default();
        for compressed in [first, second] {
            let mut out = Vec::new();
            inflater
                .inflate(&compressed, true, &mut out, 1 << 20)
                .unwrap();
            assert_eq!(out, br#"{"filter":{"where":"speed > 50"}}"#);
        }
        // 64 MiB of zeros deflate to about 64 KiB: refused at a 1 MiB limit, memory bounded.
        let zeros = vec![0u8; 64 << 20];
        let bomb = message(&zeros);
        assert!(bomb.len() < 100_000);
        let mut out = Vec::new();
        assert_eq!(
            Inflater::default().inflate(&bomb, true, &mut out, 1 << 20),
            Err(InflateError::TooLarge)
        );
        assert!(out.capacity() <= 1 << 20, "{}", out.capacity());
        let mut out = Vec::new();
        assert_eq!(
            Inflater::default().inflate(b"\xff\xff\xff\xff", true, &mut out, 1 << 20),
            Err(InflateError::Corrupt)
        );
    }
}
