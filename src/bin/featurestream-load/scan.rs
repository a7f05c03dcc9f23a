//! Scans a text frame for what the load tester counts, without parsing it: features (by
//! `"attributes":`), their timestamp attribute, and whether it is a filter reply.

use memchr::memmem::Finder;

/// A filter reply's outcome.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum ReplyKind {
    /// `"error": null`.
    Ok,
    /// `"error": [..]`.
    Error,
}

/// Reusable finders for one timestamp field name.
pub(crate) struct Scanner {
    attributes: Finder<'static>,
    timestamp: Finder<'static>,
    error_null: Finder<'static>,
}

impl Scanner {
    pub(crate) fn new(timestamp_field: &str) -> Scanner {
        Scanner {
            attributes: Finder::new(b"\"attributes\":").into_owned(),
            timestamp: Finder::new(format!("\"{timestamp_field}\":").as_bytes()).into_owned(),
            error_null: Finder::new(b"\"error\":null").into_owned(),
        }
    }
}

/// What the hot path needs of a frame: its feature count and first timestamp.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FirstScan {
    pub(crate) features: u32,
    pub(crate) first_timestamp: Option<f64>,
    pub(crate) reply: Option<ReplyKind>,
}

impl Scanner {
    /// Counts features and reads only the first timestamp.
    pub(crate) fn scan_first(&self, frame: &[u8]) -> FirstScan {
        let trimmed = frame.trim_ascii_start();
        if trimmed.starts_with(b"{\"filter\"") {
            let reply = if self.error_null.find(frame).is_some() {
                ReplyKind::Ok
            } else {
                ReplyKind::Error
            };
            return FirstScan {
                reply: Some(reply),
                ..FirstScan::default()
            };
        }
        let features = self.attributes.find_iter(frame).count() as u32;
        let first_timestamp = self.timestamp.find(frame).and_then(|position| {
            let rest = &frame[position + self.timestamp.needle().len()..];
            let end = rest
                .iter()
                .position(|byte| !(byte.is_ascii_digit() || *byte == b'.' || *byte == b'-'))
                .unwrap_or(rest.len());
            std::str::from_utf8(&rest[..end]).ok()?.parse::<f64>().ok()
        });
        FirstScan {
            features,
            first_timestamp,
            reply: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_result_frames_are_counted_with_timestamps() {
        let scanner = Scanner::new("observed");
        let frame = br#"{"type":"featureResult","features":[{"attributes":{"OBJECTID":1,"observed":1795420842492},"geometry":{"x":1,"y":2}},{"attributes":{"OBJECTID":2,"observed":1795420842492}}]}"#;
        assert_eq!(
            scanner
                .scan_first(br#"{"filter":{"where":"x > 1"},"error":null}"#)
                .reply,
            Some(ReplyKind::Ok)
        );
        assert_eq!(
            scanner
                .scan_first(br#"{"filter":{},"error":["bad"]}"#)
                .reply,
            Some(ReplyKind::Error)
        );
        let first = scanner.scan_first(frame);
        assert_eq!(
            (first.features, first.first_timestamp),
            (2, Some(1_795_420_842_492.0))
        );
        let peer = Scanner::new("ts_ms");
        assert_eq!(
            peer.scan_first(br#"{"attributes":{"ts_ms":1795420842492.125}}"#)
                .first_timestamp,
            Some(1_795_420_842_492.125)
        );
    }
}
