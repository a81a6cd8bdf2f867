//! Fuzzes the daemon's frame decoder (the socket is a security boundary): any bytes must
//! give a request or an error, never a panic, and a decoded request must encode and decode
//! again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skyfill::ipc::proto::{decode_incoming, decode_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_request(data) {
        let s = serde_json::to_string(&r).expect("a decoded request encodes");
        decode_request(s.as_bytes()).expect("an encoded request decodes");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = decode_incoming(s);
    }
});
