//! Property tests over arbitrary input: the record parser and the Redis message router must
//! never panic, must accept what they should, and must refuse what they should.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::json;
use session_log_gateway::record::{parse_body, route_info, validate_all, Limits};
use session_log_gateway::subscriber::{live_message, parse_frame, Frame};

fn pmessage(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut wire = format!(
        "*4\r\n$8\r\npmessage\r\n$14\r\nsession-logs:*\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    )
    .into_bytes();
    wire.extend_from_slice(payload);
    wire.extend_from_slice(b"\r\n");
    wire
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_body_parser_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512), ndjson in any::<bool>()) {
        if let Ok(values) = parse_body(&body, ndjson, 100) {
            let _ = validate_all(values, &Limits::default(), chrono::Utc::now());
        }
    }

    #[test]
    fn the_router_never_panics_and_never_forwards_what_is_not_an_object(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        let info = route_info(&payload);
        if info.is_some() {
            let text = std::str::from_utf8(&payload).expect("routed payloads are UTF-8");
            prop_assert!(text.trim_start().starts_with('{'), "routed a non-object: {}", text);
        }
        let _ = live_message(Some(1), Bytes::from(payload));
    }

    #[test]
    fn the_resp_reader_never_panics_and_never_reads_past_its_input(wire in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some((_, len))) = parse_frame(&wire) {
            prop_assert!(len <= wire.len());
        }
    }

    #[test]
    fn valid_records_are_accepted_and_routed_by_their_job(
        job_id in 1..i64::MAX,
        device in proptest::option::of(1..i64::MAX),
        message in any::<String>(),
        level in prop::sample::select(vec!["debug", "INFO", "Warn", "warning", "ERROR", "critical"]),
    ) {
        let record = json!({"job_id": job_id, "device_id": device, "level": level, "message": message});
        let body = record.to_string();
        let values = parse_body(body.as_bytes(), false, 10).expect("parses");
        let stored = validate_all(values, &Limits { max_message_bytes: usize::MAX, max_meta_depth: 16 }, chrono::Utc::now()).expect("valid");
        prop_assert_eq!(stored[0].job_id, job_id);
        prop_assert!(!stored[0].message.contains('\0'));
        let info = route_info(body.as_bytes()).expect("routable");
        prop_assert_eq!((info.job_id, info.device_id), (job_id, device));
        // On the wrong channel it is dropped; on its own it is forwarded byte for byte.
        prop_assert!(live_message(Some(job_id ^ 1), Bytes::from(body.clone())).is_none() || job_id ^ 1 == job_id);
        let forwarded = live_message(Some(job_id), Bytes::from(body.clone())).expect("forwarded");
        prop_assert_eq!(&*forwarded.frame, body.as_str());
        // And it survives the trip through a RESP frame cut anywhere.
        let wire = pmessage(&format!("session-logs:{job_id}"), body.as_bytes());
        let cut = wire.len() / 2;
        prop_assert!(parse_frame(&wire[..cut]).expect("a prefix is fine").is_none());
        let (frame, len) = parse_frame(&wire).expect("valid").expect("complete");
        prop_assert_eq!(len, wire.len());
        if let Frame::Array(items) = frame {
            if let Frame::Bulk(Some(r)) = &items[3] {
                prop_assert_eq!(&wire[r.clone()], body.as_bytes());
            } else { prop_assert!(false, "payload not a bulk string"); }
        } else { prop_assert!(false, "not an array"); }
    }
}
