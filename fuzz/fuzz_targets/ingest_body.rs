//! Fuzzes the ingest body parser and record validation (JSON and NDJSON).
#![no_main]
use libfuzzer_sys::fuzz_target;
use session_log_gateway::record::{parse_body, validate_all, Limits};

fuzz_target!(|data: &[u8]| {
    for ndjson in [false, true] {
        if let Ok(values) = parse_body(data, ndjson, 1_000) {
            let _ = validate_all(values, &Limits::default(), chrono::Utc::now());
        }
    }
});
