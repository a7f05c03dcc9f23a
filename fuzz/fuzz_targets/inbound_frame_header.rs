//! The declared length of an inbound frame, read from its header alone, never panics and
//! agrees with actix-http whenever actix-http decodes a whole frame from the same bytes.
#![no_main]

use actix_http::ws::Parser;
use bytes::BytesMut;
use featurestream::protocol::ws_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let declared = ws_frame::declared_payload_length(data);
    let mut buffer = BytesMut::from(data);
    if let Ok(Some((_, _, payload))) = Parser::parse(&mut buffer, true, usize::MAX) {
        assert_eq!(declared, Some(payload.map_or(0, |payload| payload.len()) as u64));
    }
});
