//! The declared length of an inbound frame, read from its header alone, never panics and
//! agrees with actix-http whenever actix-http decodes a whole frame from the same bytes.
#![no_main]

use actix_http::ws::Parser;
use bytes::BytesMut;
use featurestream::protocol::ws_frame;
use libfuzzer_sys::fuzz_target;

/// actix-http reserves what a header declares (up to its limit) before the payload arrives: a
/// small limit keeps random headers from asking for exabytes.
const MAX_FRAME: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let declared = ws_frame::declared_payload_length(data);
    let mut buffer = BytesMut::from(data);
    if let Ok(Some((_, _, payload))) = Parser::parse(&mut buffer, true, MAX_FRAME) {
        assert_eq!(declared, Some(payload.map_or(0, |payload| payload.len()) as u64));
    }
});
