//! What a client controls of WebSocket compression never panics the server: any
//! `Sec-WebSocket-Extensions` text is an offer accepted or declined, and any bytes sent as a
//! compressed message inflate within the limit, or are refused (too large, or not deflate),
//! however they are split into fragments.
#![no_main]

use featurestream::protocol::deflate::{Inflater, InflateError, accepts};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = accepts([text]);
    }
    let split = data.first().map_or(0, |first| *first as usize % (data.len() + 1));
    let (first, second) = data.split_at(split);
    let mut inflater = Inflater::default();
    let mut out = Vec::new();
    let outcome = inflater
        .inflate(first, false, &mut out, LIMIT)
        .and_then(|()| inflater.inflate(second, true, &mut out, LIMIT));
    assert!(out.len() <= LIMIT, "{} bytes past the limit", out.len());
    if let Err(err) = outcome {
        assert!(matches!(err, InflateError::TooLarge | InflateError::Corrupt));
    }
});
