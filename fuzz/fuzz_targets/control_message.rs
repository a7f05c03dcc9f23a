//! A message on the control subject (another node's, or anyone's with access to NATS) never
//! panics a node, and what reaches sessions is only ever a server message: an object of
//! exactly `type: "message"` and `message`, which reads back as itself.
#![no_main]

use featurestream::cluster::control::server_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(frame) = server_message(text) {
        let value: serde_json::Value = serde_json::from_slice(&frame).expect("JSON");
        let fields = value.as_object().expect("an object");
        assert_eq!(fields.len(), 2);
        assert_eq!(fields["type"], "message");
        let again = server_message(std::str::from_utf8(&frame).unwrap()).expect("reads back");
        assert_eq!(again, frame);
    }
});
