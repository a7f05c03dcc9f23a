//! Server-to-client WebSocket frame headers (RFC 6455 §5.2). Server frames are unmasked, so a
//! frame's bytes are identical for every recipient: frames are built once and shared as
//! `Bytes`. The header is written here, before the payload, so that a payload assembled from
//! fragments is copied once.

use bytes::{BufMut, BytesMut};

/// Opcode of a text frame with FIN set.
const FIN_TEXT: u8 = 0x81;

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
