//! Fuzzes the Redis side: the RESP reader and the router's payload checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use session_log_gateway::subscriber::{live_message, parse_frame};

fuzz_target!(|data: &[u8]| {
    let _ = parse_frame(data);
    let _ = live_message(Some(1), bytes::Bytes::copy_from_slice(data));
    let _ = live_message(None, bytes::Bytes::copy_from_slice(data));
});
