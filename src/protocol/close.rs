//! Every close code this server sends, with its reason, in one table (seed 003, RFC 6455).
//! Reasons stay under the protocol's 123-byte limit.

/// Why a session ends, as the client sees it in the close frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// 1000: the client asked to close.
    Normal,
    /// 1001: the server is shutting down or the service stopped (seed 003).
    ShuttingDown,
    /// 1003: a binary message; this service speaks JSON text only.
    BinaryFrame,
    /// 1002: the client broke the WebSocket protocol.
    ProtocolError,
    /// 1008: the client reads too slowly to keep up.
    SlowConsumer,
    /// 1008: too many filter messages.
    FilterFlood,
    /// 1008: too many inbound messages of any kind.
    MessageFlood,
    /// 1009: an inbound frame over the size limit.
    FrameTooLarge {
        /// The limit in bytes.
        max_bytes: usize,
    },
    /// 1013: over the connection cap (seed 002).
    TryAgainLater,
    /// 4400: the custom-mode handshake cannot be served (reason names the problem).
    BadHandshake(String),
    /// 1001: heartbeat: no pong in time (the client is gone, as far as the server can tell).
    HeartbeatTimeout,
}

impl CloseCause {
    /// The close code.
    pub fn code(&self) -> u16 {
        match self {
            CloseCause::Normal => 1000,
            CloseCause::ShuttingDown | CloseCause::HeartbeatTimeout => 1001,
            CloseCause::ProtocolError => 1002,
            CloseCause::BinaryFrame => 1003,
            CloseCause::SlowConsumer | CloseCause::FilterFlood | CloseCause::MessageFlood => 1008,
            CloseCause::FrameTooLarge { .. } => 1009,
            CloseCause::TryAgainLater => 1013,
            CloseCause::BadHandshake(_) => 4400,
        }
    }

    /// The reason text, at most 123 bytes.
    pub fn reason(&self) -> String {
        let reason = match self {
            CloseCause::Normal => "normal closure".to_owned(),
            CloseCause::ShuttingDown => "server shutting down".to_owned(),
            CloseCause::ProtocolError => "websocket protocol error".to_owned(),
            CloseCause::BinaryFrame => "binary frames are not supported; send JSON text".to_owned(),
            CloseCause::SlowConsumer => "slow consumer".to_owned(),
            CloseCause::FilterFlood => "too many filter messages".to_owned(),
            CloseCause::MessageFlood => "too many messages".to_owned(),
            CloseCause::FrameTooLarge { max_bytes } => {
                format!("frame larger than {max_bytes} bytes")
            }
            CloseCause::TryAgainLater => "try again later".to_owned(),
            CloseCause::BadHandshake(detail) => detail.clone(),
            CloseCause::HeartbeatTimeout => "heartbeat timeout".to_owned(),
        };
        truncate_utf8(reason, 123)
    }

    /// The complete close frame (unmasked, shared like data frames).
    pub fn frame(&self) -> bytes::Bytes {
        let reason = self.reason();
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&self.code().to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        let mut buffer = bytes::BytesMut::with_capacity(4 + payload.len());
        buffer.extend_from_slice(&[0x88, payload.len() as u8]);
        buffer.extend_from_slice(&payload);
        buffer.freeze()
    }
}

fn truncate_utf8(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_the_close_frame() {
        let long = CloseCause::BadHandshake("é".repeat(100));
        assert!(long.reason().len() <= 123);
        assert_eq!(long.frame()[1] as usize, 2 + long.reason().len());
        assert_eq!(
            &CloseCause::ShuttingDown.frame()[..4],
            &[0x88, 22, 0x03, 0xE9]
        );
    }
}
