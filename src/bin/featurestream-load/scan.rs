//! Scans text messages for what the load tester counts, without parsing or buffering them:
//! features (by `"attributes":`), the first feature's timestamp attribute, and whether the
//! message is a filter reply. A message is fed in chunks as it arrives off the socket, so a
//! large frame passes through the cache once and is never held whole.

use std::cell::RefCell;

use memchr::memmem::Finder;

use crate::recall::SeenMessages;

/// Bytes kept from the start of each message: enough for the first feature's timestamp of
/// every server measured here (about 250 bytes in) and a filter reply's opening.
pub(crate) const HEAD_BYTES: usize = 1024;

/// A filter reply's outcome.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum ReplyKind {
    /// `"error": null`.
    Ok,
    /// `"error": [..]`.
    Error,
}

/// Reusable finders for one timestamp field name, and the large messages they summarised.
pub(crate) struct Scanner {
    pub(crate) attributes: Finder<'static>,
    pub(crate) timestamp: Finder<'static>,
    error_null: Finder<'static>,
    /// Read every feature's timestamp, not only the first of a message (ingest mode: a
    /// server's batch may hold observations sent at different times).
    pub(crate) per_feature: bool,
    pub(crate) seen: RefCell<SeenMessages>,
}

impl Scanner {
    pub(crate) fn new(timestamp_field: &str) -> Scanner {
        Scanner {
            attributes: Finder::new(b"\"attributes\":").into_owned(),
            timestamp: Finder::new(format!("\"{timestamp_field}\":").as_bytes()).into_owned(),
            error_null: Finder::new(b"\"error\":null").into_owned(),
            per_feature: false,
            seen: RefCell::default(),
        }
    }

    /// A scanner that reads every feature's timestamp.
    pub(crate) fn per_feature(timestamp_field: &str) -> Scanner {
        Scanner {
            per_feature: true,
            ..Scanner::new(timestamp_field)
        }
    }
}

/// What the load tester needs of a message.
#[derive(Debug, Default, PartialEq, Clone)]
pub(crate) struct Summary {
    pub(crate) features: u32,
    pub(crate) first_timestamp: Option<f64>,
    pub(crate) reply: Option<ReplyKind>,
    /// With a per-feature scanner: each run of features sharing a timestamp, in order.
    pub(crate) runs: Vec<(f64, u32)>,
}

/// Counts a needle's occurrences in a stream of chunks, including those split across chunks.
#[derive(Default)]
struct StreamCount {
    /// The previous chunks' last `needle.len() - 1` bytes.
    carry: Vec<u8>,
    count: u32,
}

impl StreamCount {
    fn feed(&mut self, finder: &Finder<'_>, chunk: &[u8]) {
        let keep = finder.needle().len().saturating_sub(1);
        if !self.carry.is_empty() {
            // Only a match that starts in the carry and ends in this chunk can be new here.
            let start = self.carry.len();
            self.carry
                .extend_from_slice(&chunk[..keep.min(chunk.len())]);
            self.count += finder.find_iter(&self.carry).count() as u32;
            self.carry.truncate(start);
        }
        self.count += finder.find_iter(chunk).count() as u32;
        if chunk.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let excess = self.carry.len().saturating_sub(keep);
            self.carry.drain(..excess);
        }
    }

    fn finish(&mut self) -> u32 {
        self.carry.clear();
        std::mem::take(&mut self.count)
    }
}

/// The scan of the message in progress; reused from message to message.
#[derive(Default)]
pub(crate) struct MessageScan {
    head: Vec<u8>,
    attributes: StreamCount,
    error_null: StreamCount,
    /// A per-feature scanner's features and timestamps so far.
    per_feature: FeatureRuns,
}

impl MessageScan {
    /// Summarises a message that arrived whole, in place (the common case: no copy).
    pub(crate) fn whole(scanner: &Scanner, message: &[u8]) -> Summary {
        if is_reply(message) {
            return reply_summary(scanner.error_null.find(message).is_some());
        }
        if scanner.per_feature {
            let mut read = FeatureRuns::default();
            read.read(scanner, message, true);
            return read.summary();
        }
        Summary {
            features: scanner.attributes.find_iter(message).count() as u32,
            first_timestamp: first_number_after(
                &scanner.timestamp,
                &message[..message.len().min(HEAD_BYTES)],
            ),
            reply: None,
            runs: Vec::new(),
        }
    }

    /// Whether a message is in progress.
    pub(crate) fn is_idle(&self) -> bool {
        self.head.is_empty() && self.per_feature.carry.is_empty()
    }

    /// Feeds the next bytes of the current message.
    pub(crate) fn feed(&mut self, scanner: &Scanner, chunk: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if is_reply(&self.head) {
            self.error_null.feed(&scanner.error_null, chunk);
        } else if scanner.per_feature {
            self.per_feature.feed(scanner, chunk);
        } else {
            self.attributes.feed(&scanner.attributes, chunk);
        }
    }

    /// Ends the current message and summarises it.
    pub(crate) fn finish(&mut self, scanner: &Scanner) -> Summary {
        let features = self.attributes.finish();
        let error_null = self.error_null.finish() > 0;
        let per_feature = std::mem::take(&mut self.per_feature);
        let summary = if is_reply(&self.head) {
            reply_summary(error_null)
        } else if scanner.per_feature {
            per_feature.finish(scanner)
        } else {
            Summary {
                features,
                first_timestamp: first_number_after(&scanner.timestamp, &self.head),
                reply: None,
                runs: Vec::new(),
            }
        };
        self.head.clear();
        summary
    }
}

pub(crate) fn is_reply(head: &[u8]) -> bool {
    head.trim_ascii_start().starts_with(b"{\"filter\"")
}

fn reply_summary(error_null: bool) -> Summary {
    Summary {
        reply: Some(if error_null {
            ReplyKind::Ok
        } else {
            ReplyKind::Error
        }),
        ..Summary::default()
    }
}

/// A message's features and each one's timestamp, as runs of equal ones in order, read in
/// about one pass and in pieces as the message arrives (nothing but a cut feature is copied):
/// the timestamp is looked for only inside its feature's attributes object (up to its first
/// `}`: values are scalars), and the next feature from there on. A timestamp not found there
/// (a `}` inside a string before it) costs that feature's latency sample, never its count.
#[derive(Default)]
struct FeatureRuns {
    features: u32,
    runs: Vec<(f64, u32)>,
    /// The text of the last run's timestamp: the features of a batch mostly share one, and
    /// comparing its bytes costs less than parsing it again (the load tester reads millions a
    /// second on the machine it measures).
    last_text: Vec<u8>,
    /// What a piece left unread: an attributes object cut by its end, or its last bytes (the
    /// start of the next `"attributes":`, maybe).
    carry: Vec<u8>,
}

impl FeatureRuns {
    /// Reads the next piece of the message.
    fn feed(&mut self, scanner: &Scanner, mut piece: &[u8]) {
        while !piece.is_empty() {
            if self.carry.is_empty() {
                let kept = self.read(scanner, piece, false);
                self.carry.extend_from_slice(&piece[kept..]);
                return;
            }
            // Complete what was cut with as little of the piece as it takes: up to its first
            // `}`, then read the rest of the piece in place.
            let need = memchr::memchr(b'}', piece).map_or(piece.len(), |end| end + 1);
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(&piece[..need]);
            let kept = self.read(scanner, &carry, false);
            carry.drain(..kept);
            self.carry = carry;
            piece = &piece[need..];
        }
    }

    /// Reads what is left once the message ended.
    fn finish(mut self, scanner: &Scanner) -> Summary {
        let carry = std::mem::take(&mut self.carry);
        self.read(scanner, &carry, true);
        self.summary()
    }

    fn summary(self) -> Summary {
        Summary {
            features: self.features,
            first_timestamp: self.runs.first().map(|(time, _)| *time),
            reply: None,
            runs: self.runs,
        }
    }

    /// Reads the features whose attributes object ends inside `data` (with `last`, every one);
    /// returns where the unread rest starts.
    fn read(&mut self, scanner: &Scanner, data: &[u8], last: bool) -> usize {
        let attributes = scanner.attributes.needle().len();
        let needle = scanner.timestamp.needle().len();
        let mut at = 0;
        while let Some(found) = scanner.attributes.find(&data[at..]) {
            let start = at + found + attributes;
            let end = match memchr::memchr(b'}', &data[start..]) {
                Some(end) => start + end,
                None if last => data.len(),
                None => return at + found,
            };
            self.features += 1;
            at = end;
            let Some(found) = scanner.timestamp.find(&data[start..end]) else {
                continue;
            };
            let Some(text) = number_text(&data[start + found + needle..]) else {
                continue;
            };
            if let Some((_, count)) = self.runs.last_mut()
                && text == self.last_text.as_slice()
            {
                *count += 1;
                continue;
            }
            let Some(value) = parse_decimal(text) else {
                continue;
            };
            self.last_text.clear();
            self.last_text.extend_from_slice(text);
            match self.runs.last_mut() {
                Some((last, count)) if *last == value => *count += 1,
                _ => self.runs.push((value, 1)),
            }
        }
        if last {
            data.len()
        } else {
            data.len().saturating_sub(attributes - 1).max(at)
        }
    }
}

/// The number right after the needle's first occurrence, if it ends inside `head`.
fn first_number_after(needle: &Finder<'_>, head: &[u8]) -> Option<f64> {
    let position = needle.find(head)?;
    number_at(&head[position + needle.needle().len()..])
}

/// The number at the start of `rest`, if it ends inside `rest`.
fn number_at(rest: &[u8]) -> Option<f64> {
    parse_decimal(number_text(rest)?)
}

/// The text of the number at the start of `rest`, if it ends inside `rest`.
pub(crate) fn number_text(rest: &[u8]) -> Option<&[u8]> {
    let end = rest.iter().position(|byte| {
        !(byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'+' | b'e' | b'E'))
    })?;
    Some(&rest[..end])
}

/// Parses `digits[.digits]` without going through `str` (the hot path: epoch milliseconds,
/// maybe with a fraction); anything else goes to the standard parser.
pub(crate) fn parse_decimal(text: &[u8]) -> Option<f64> {
    let (whole, fraction) = match text.iter().position(|byte| *byte == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &text[..0]),
    };
    let all_digits = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
    if whole.is_empty()
        || whole.len() > 15
        || fraction.len() > 6
        || !all_digits(whole)
        || !all_digits(fraction)
    {
        return std::str::from_utf8(text).ok()?.parse().ok();
    }
    let digits = |part: &[u8]| {
        part.iter()
            .fold(0u64, |value, byte| value * 10 + u64::from(byte - b'0'))
    };
    let scale = 10u64.pow(fraction.len() as u32);
    Some(digits(whole) as f64 + digits(fraction) as f64 / scale as f64)
}

/// Scans a whole message at once (tests).
#[cfg(test)]
pub(crate) fn scan_whole(scanner: &Scanner, message: &[u8]) -> Summary {
    let mut scan = MessageScan::default();
    scan.feed(scanner, message);
    scan.finish(scanner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &[u8] = br#"{"type":"featureResult","features":[{"attributes":{"OBJECTID":1,"observed":1795420842492},"geometry":{"x":1,"y":2}},{"attributes":{"OBJECTID":2,"observed":1795420842492}}]}"#;

    #[test]
    fn feature_result_frames_are_counted_with_timestamps() {
        let scanner = Scanner::new("observed");
        assert_eq!(
            scan_whole(&scanner, br#"{"filter":{"where":"x > 1"},"error":null}"#).reply,
            Some(ReplyKind::Ok)
        );
        assert_eq!(
            scan_whole(&scanner, br#"{"filter":{},"error":["bad"]}"#).reply,
            Some(ReplyKind::Error)
        );
        let summary = scan_whole(&scanner, FRAME);
        assert_eq!(
            (summary.features, summary.first_timestamp),
            (2, Some(1_795_420_842_492.0))
        );
        let peer = Scanner::new("ts_ms");
        assert_eq!(
            scan_whole(&peer, br#"{"attributes":{"ts_ms":1795420842492.125}}"#).first_timestamp,
            Some(1_795_420_842_492.125)
        );
    }

    #[test]
    fn numbers_parse_like_the_standard_parser() {
        for text in [
            "1795420842492",
            "1795420842492.125",
            "0.5",
            "12",
            "-3",
            "1e3",
            "7.",
            "12.0000001",
        ] {
            assert_eq!(
                parse_decimal(text.as_bytes()),
                text.parse::<f64>().ok(),
                "{text}"
            );
        }
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1.2.3"), None);
    }

    #[test]
    fn whole_and_streamed_scans_agree() {
        let scanner = Scanner::new("observed");
        for message in [
            FRAME,
            br#"{"filter":{"where":"x > 1"},"error":null}"#,
            br#"{"filter":{},"error":["bad"]}"#,
        ] {
            assert_eq!(
                MessageScan::whole(&scanner, message),
                scan_whole(&scanner, message)
            );
        }
    }

    #[test]
    fn every_split_of_a_message_gives_the_same_summary() {
        let scanner = Scanner::new("observed");
        let whole = scan_whole(&scanner, FRAME);
        let reply = br#"{"filter":{"where":"speed > 1"},"error":null}"#;
        let whole_reply = scan_whole(&scanner, reply);
        let mut scan = MessageScan::default();
        for (message, expected) in [(FRAME, whole), (&reply[..], whole_reply)] {
            for first in 0..message.len() {
                for second in first..message.len() {
                    scan.feed(&scanner, &message[..first]);
                    scan.feed(&scanner, &message[first..second]);
                    scan.feed(&scanner, &message[second..]);
                    assert_eq!(
                        scan.finish(&scanner),
                        expected,
                        "split at {first}, {second}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_per_feature_scanner_reads_every_timestamp_whole_or_in_pieces() {
        let scanner = Scanner::per_feature("observed");
        let message = br#"{"type":"featureResult","features":[{"attributes":{"observed":10}},{"attributes":{"observed":10}},{"attributes":{"observed":12}}]}"#;
        let whole = MessageScan::whole(&scanner, message);
        assert_eq!(whole.runs, vec![(10.0, 2), (12.0, 1)]);
        assert_eq!(whole.features, 3);
        let mut scan = MessageScan::default();
        for piece in message.chunks(7) {
            scan.feed(&scanner, piece);
            assert!(!scan.is_idle());
        }
        assert_eq!(scan.finish(&scanner), whole);
        assert!(scan.is_idle());
        // A feature without the timestamp, or with a `}` in a string before it, is counted
        // without a sample; its neighbours' samples stay theirs.
        let message = br#"{"features":[{"attributes":{"observed":10}},{"attributes":{"name":"x"},"geometry":{"x":1}},{"attributes":{"name":"a}b","observed":11}},{"attributes":{"observed":12}}]}"#;
        let whole = MessageScan::whole(&scanner, message);
        assert_eq!(whole.features, 4);
        assert_eq!(whole.runs, vec![(10.0, 1), (12.0, 1)]);
    }

    #[test]
    fn a_per_feature_scan_in_any_pieces_reads_as_whole() {
        let scanner = Scanner::per_feature("observed");
        let mut message = br#"{"type":"featureResult","features":["#.to_vec();
        for feature in 0..60 {
            if feature > 0 {
                message.push(b',');
            }
            let observed = 1_795_420_842_000u64 + (feature / 7) as u64;
            let name = if feature % 11 == 0 { "a}b" } else { "bus" };
            message.extend_from_slice(
                format!(r#"{{"attributes":{{"OBJECTID":{feature},"name":"{name}","observed":{observed}}},"geometry":{{"x":1.5,"y":2.5}}}}"#)
                    .as_bytes(),
            );
        }
        message.extend_from_slice(b"]}");
        let whole = MessageScan::whole(&scanner, &message);
        assert_eq!(whole.features, 60);
        assert_eq!(
            whole.runs.iter().map(|(_, count)| count).sum::<u32>(),
            54,
            "six samples lost to a }} in a name"
        );
        for size in [1, 2, 3, 5, 7, 13, 14, 15, 64, 200, 1000] {
            let mut scan = MessageScan::default();
            for piece in message.chunks(size) {
                scan.feed(&scanner, piece);
            }
            assert_eq!(scan.finish(&scanner), whole, "pieces of {size}");
            assert!(scan.is_idle());
        }
        let reply = br#"{"filter":{"where":"1=1"},"error":null}"#;
        let mut scan = MessageScan::default();
        for piece in reply.chunks(5) {
            scan.feed(&scanner, piece);
        }
        assert_eq!(scan.finish(&scanner).reply, Some(ReplyKind::Ok));
    }
}
