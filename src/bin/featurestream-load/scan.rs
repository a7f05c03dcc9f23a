//! Scans a text frame for what the load tester counts, without parsing it: features (by
//! `"attributes":`), their timestamp attribute, and whether it is a filter reply.

use memchr::memmem::Finder;

/// What one frame holds.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FrameScan {
    /// Features in the frame.
    pub(crate) features: u32,
    /// The timestamp of each feature that has one, epoch milliseconds.
    pub(crate) timestamps: Vec<f64>,
    /// A `{"filter": .., "error": ..}` reply.
    pub(crate) reply: Option<ReplyKind>,
}

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

    /// Scans one frame into `out` (cleared first).
    pub(crate) fn scan(&self, frame: &[u8], out: &mut FrameScan) {
        out.features = 0;
        out.timestamps.clear();
        out.reply = None;
        let trimmed = frame.trim_ascii_start();
        if trimmed.starts_with(b"{\"filter\"") {
            out.reply = Some(if self.error_null.find(frame).is_some() {
                ReplyKind::Ok
            } else {
                ReplyKind::Error
            });
            return;
        }
        out.features = self.attributes.find_iter(frame).count() as u32;
        let key_len = self.timestamp.needle().len();
        for position in self.timestamp.find_iter(frame) {
            let rest = &frame[position + key_len..];
            let end = rest
                .iter()
                .position(|byte| !(byte.is_ascii_digit() || *byte == b'.' || *byte == b'-'))
                .unwrap_or(rest.len());
            if let Some(value) = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|text| text.parse::<f64>().ok())
            {
                out.timestamps.push(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_result_frames_are_counted_with_timestamps() {
        let scanner = Scanner::new("observed");
        let mut scan = FrameScan::default();
        let frame = br#"{"type":"featureResult","features":[{"attributes":{"OBJECTID":1,"observed":1795420842492},"geometry":{"x":1,"y":2}},{"attributes":{"OBJECTID":2,"observed":1795420842492}}]}"#;
        scanner.scan(frame, &mut scan);
        assert_eq!(scan.features, 2);
        assert_eq!(
            scan.timestamps,
            vec![1_795_420_842_492.0, 1_795_420_842_492.0]
        );
        scanner.scan(br#"{"filter":{"where":"x > 1"},"error":null}"#, &mut scan);
        assert_eq!((scan.features, scan.reply), (0, Some(ReplyKind::Ok)));
        scanner.scan(br#"{"filter":{},"error":["bad"]}"#, &mut scan);
        assert_eq!(scan.reply, Some(ReplyKind::Error));
        let peer = Scanner::new("ts_ms");
        peer.scan(br#"{"attributes":{"ts_ms":1795420842492.125}}"#, &mut scan);
        assert_eq!(scan.timestamps, vec![1_795_420_842_492.125]);
    }
}
