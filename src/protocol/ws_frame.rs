//! WebSocket frame headers (RFC 6455 §5.2): the payload length a client frame declares, read
//! as soon as its header has arrived, and server-to-client headers. Server frames are unmasked, so a
//! frame's bytes are identical for every recipient: frames are built once and shared as
//! `Bytes`. The header is written here, before the payload, so that a payload assembled from
//! fragments is copied once.

use bytes::{BufMut, BytesMut};

/// Opcode of a text frame with FIN set.
const FIN_TEXT: u8 = 0x81;

/// The payload length the frame at the start of `buffer` declares, once enough of its header
/// has arrived (2, 4 or 10 bytes); `None` before. A length with the top bit set (not allowed
/// by the protocol) reads as `u64::MAX`.
pub fn declared_payload_length(buffer: &[u8]) -> Option<u64> {
    let short = buffer.get(1)? & 0x7F;
    match short {
        126 => Some(u64::from(u16::from_be_bytes([
            *buffer.get(2)?,
            *buffer.get(3)?,
        ]))),
        127 => {
            let bytes: [u8; 8] = buffer.get(2..10)?.try_into().ok()?;
            let length = u64::from_be_bytes(bytes);
            Some(if length >> 63 == 1 { u64::MAX } else { length })
        }
        short => Some(u64::from(short)),
    }
}

/// Bytes of header a text frame of `payload_len` bytes needs.
pub fn header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// Appends the header of a final, unmasked text frame of `payload_len` bytes.
pub fn put_text_header(buffer: &mut BytesMut, payload_len: usize) {
    buffer.put_u8(FIN_TEXT);
    match payload_len {
        0..=125 => buffer.put_u8(payload_len as u8),
        126..=65_535 => {
            buffer.put_u8(126);
            buffer.put_u16(payload_len as u16);
        }
        _ => {
            buffer.put_u8(127);
            buffer.put_u64(payload_len as u64);
        }
    }
}

/// One complete text frame.
pub fn text_frame(payload: &[u8]) -> bytes::Bytes {
    let mut buffer = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_text_header(&mut buffer, payload.len());
    buffer.put_slice(payload);
    buffer.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{OpCode, Parser};

    #[test]
    fn declared_lengths_are_read_from_the_header_alone() {
        assert_eq!(declared_payload_length(&[0x81]), None);
        assert_eq!(declared_payload_length(&[0x81, 0x85]), Some(5));
        assert_eq!(declared_payload_length(&[0x81, 0xFE, 0x01]), None);
        assert_eq!(
            declared_payload_length(&[0x81, 0xFE, 0x01, 0x00]),
            Some(256)
        );
        let mut huge = vec![0x81, 0xFF];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(declared_payload_length(&huge[..9]), None);
        assert_eq!(declared_payload_length(&huge), Some(1 << 40));
        let mut top_bit = vec![0x81, 0xFF];
        top_bit.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(declared_payload_length(&top_bit), Some(u64::MAX));
    }

    /// actix-http reserves what a header declares (up to its limit) before the payload
    /// arrives: a small limit keeps random headers from asking for exabytes.
    const MAX_FRAME: usize = 1024;

    proptest::proptest! {
        /// Whenever actix-http decodes a whole client frame from some bytes, its payload has
        /// the length the header alone declared.
        #[test]
        fn declared_lengths_agree_with_actix_http(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let declared = declared_payload_length(&data);
            let mut buffer = bytes::BytesMut::from(&data[..]);
            if let Ok(Some((_, _, payload))) = Parser::parse(&mut buffer, true, MAX_FRAME) {
                proptest::prop_assert_eq!(declared, Some(payload.map_or(0, |payload| payload.len()) as u64));
            }
        }
    }

    #[test]
    fn headers_match_actix_http_for_every_length_class() {
        for length in [0, 1, 125, 126, 127, 65_535, 65_536, 100_000] {
            let payload = vec![b'x'; length];
            let mut expected = BytesMut::new();
            Parser::write_message(&mut expected, &payload, OpCode::Text, true, false);
            assert_eq!(text_frame(&payload), expected.freeze(), "length {length}");
            assert_eq!(header_len(length) + length, text_frame(&payload).len());
        }
    }
}
