//! Live delivery to WebSocket viewers: routing by job, history hand-off, ordering, healing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{record, seqs, spawn_app};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(500);

#[actix_web::test]
async fn an_ingested_record_reaches_every_viewer_of_its_job_and_no_other() {
    let app = spawn_app().await;
    let mut first = app.viewer("/ws/jobs/7").await;
    let mut second = app.viewer("/ws/jobs/7").await;
    let mut other = app.viewer("/ws/jobs/8").await;
    for v in [&mut first, &mut second, &mut other] {
        assert!(v.history().await.is_empty());
    }

    let acks = app
        .ingest(&json!([record(7, "show version"), record(7, "show clock")]))
        .await;

    for viewer in [&mut first, &mut second] {
        for (i, ack) in acks.iter().enumerate() {
            let frame = viewer.next_json(WAIT).await.expect("a live record");
            assert_eq!(frame["job_id"], 7);
            assert_eq!(frame["seq"], i as i64 + 1);
            assert_eq!(frame["id"], ack["id"]);
            assert_eq!(frame["level"], "info");
        }
    }
    assert_eq!(
        other.next_json(QUIET).await,
        None,
        "job 8's viewer must get nothing"
    );
}

#[actix_web::test]
async fn a_raw_publish_by_another_producer_reaches_the_viewer_byte_for_byte() {
    let app = spawn_app().await;
    let mut viewer = app.viewer("/ws/jobs/42").await;
    viewer.history().await;
    let payload = r#"{"timestamp": "2025-05-20T12:34:56.123456Z", "level": "INFO", "job_id": 42, "message": "\u001b[32mok\u001b[0m caf\u00e9 ✓", "extra": {}}"#;
    app.publish_raw("session-logs:42", payload.as_bytes()).await;
    assert_eq!(viewer.next_text(WAIT).await.as_deref(), Some(payload));
}

#[actix_web::test]
async fn a_viewer_joining_with_tail_during_concurrent_ingest_gets_every_seq_once_in_order() {
    let app = spawn_app().await;
    // Four concurrent producers, batches of 25, all for job 1.
    let producers =
        actix_web::rt::spawn(crate::helpers::produce(app.address.clone(), 4, 2000, 1, 25));
    // Join while the producers are mid-way.
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    let mut viewer = app.viewer("/ws/jobs/1?tail=100000").await;
    let frames = viewer.collect_until(WAIT, |f| f["seq"] == 2000).await;
    producers.await.unwrap();
    let got = seqs(&frames);
    assert_eq!(got, (1..=2000).collect::<Vec<i64>>());
    let ends = frames
        .iter()
        .filter(|f| f["control"] == "history_end")
        .count();
    assert_eq!(ends, 1);
    assert_eq!(
        viewer.next_json(QUIET).await,
        None,
        "nothing after seq 2000"
    );
}

#[actix_web::test]
async fn tail_after_seq_level_and_device_filters_select_what_is_sent() {
    let app = spawn_app().await;
    let records: Vec<Value> = (1..=10)
        .map(|i| {
            json!({"job_id": 3, "device_id": if i % 2 == 0 { 2 } else { 1 },
                   "level": if i % 5 == 0 { "error" } else { "info" }, "message": format!("m{i}")})
        })
        .collect();
    app.ingest(&json!(records)).await;

    assert_eq!(
        seqs(&app.viewer("/ws/jobs/3?tail=3").await.history().await),
        [8, 9, 10]
    );
    assert_eq!(
        seqs(&app.viewer("/ws/jobs/3?after_seq=6").await.history().await),
        [7, 8, 9, 10]
    );
    assert_eq!(
        seqs(&app.viewer("/ws/jobs/3").await.history().await),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&app.viewer("/ws/jobs/3?level=ERROR").await.history().await),
        [5, 10]
    );
    let mut by_device = app.viewer("/ws/jobs/3?device_id=2&after_seq=4").await;
    assert_eq!(seqs(&by_device.history().await), [6, 8, 10]);

    // The same filters apply live.
    app.ingest(&json!([{"job_id": 3, "device_id": 1, "message": "x"}, {"job_id": 3, "device_id": 2, "message": "y"}])).await;
    let frame = by_device.next_json(WAIT).await.unwrap();
    assert_eq!(
        (frame["seq"].as_i64(), frame["message"].as_str()),
        (Some(12), Some("y"))
    );

    // Bad parameters are refused before the upgrade.
    for bad in [
        "/ws/jobs/0",
        "/ws/jobs/abc",
        "/ws/jobs/3?level=loud",
        "/ws/jobs/3?tail=-1",
    ] {
        let url = format!("ws://127.0.0.1:{}{bad}", app.port);
        let err = crate::helpers::Viewer::try_connect(&url).await.err();
        assert!(err.is_some(), "{bad} should be refused");
    }
}

#[actix_web::test]
async fn records_missing_from_the_live_stream_are_healed_from_postgresql_in_order() {
    let app = spawn_app().await;
    let mut viewer = app.viewer("/ws/jobs/11").await;
    viewer.history().await;
    // Stored but never published (as if PUBLISH had failed), then one that is published.
    let stored = app
        .store
        .insert(vec![
            new_record(11, "q1"),
            new_record(11, "q2"),
            new_record(11, "q3"),
        ])
        .await
        .unwrap();
    assert_eq!(stored.last().unwrap().seq, 3);
    app.ingest(&json!(record(11, "published"))).await;
    let frames = viewer.collect_until(WAIT, |f| f["seq"] == 4).await;
    assert_eq!(seqs(&frames), [1, 2, 3, 4]);

    // Published out of order: 6 before 5; the viewer still sees 5 then 6, once each.
    let late = app
        .store
        .insert(vec![new_record(11, "five"), new_record(11, "six")])
        .await
        .unwrap();
    app.publish_raw("session-logs:11", late[1].to_json().as_bytes())
        .await;
    app.publish_raw("session-logs:11", late[0].to_json().as_bytes())
        .await;
    let frames = viewer.collect_until(QUIET, |_| false).await;
    assert_eq!(seqs(&frames), [5, 6]);
}

#[actix_web::test]
async fn a_malformed_redis_message_is_dropped_counted_and_the_gateway_keeps_serving() {
    let app = spawn_app().await;
    let mut viewer = app.viewer("/ws/jobs/4").await;
    viewer.history().await;
    let bad: [&[u8]; 7] = [
        b"not json",
        b"[1,2,3]",
        b"{\"message\":\"no job id\"}",
        b"{\"job_id\":5,\"message\":\"wrong channel\"}",
        b"{\"job_id\":4,\"control\":\"history_end\"}",
        b"\xff\xfe\x00",
        b"{\"job_id\":\"4\"}",
    ];
    for payload in bad {
        app.publish_raw("session-logs:4", payload).await;
    }
    app.publish_raw("session-logs:not-a-number", br#"{"job_id":4}"#)
        .await;
    app.publish_raw("session-logs:4", br#"{"job_id":4,"message":"good"}"#)
        .await;
    let frame = viewer.next_json(WAIT).await.unwrap();
    assert_eq!(frame["message"], "good", "{frame}");
    assert_eq!(app.metric("gateway_malformed_dropped_total").await, 8);
    app.wait_ready().await;
}

#[actix_web::test]
async fn two_hundred_viewers_share_one_redis_subscriber_connection() {
    let app = spawn_app().await;
    let mut viewers = Vec::new();
    for i in 0..200 {
        let mut v = app.viewer(&format!("/ws/jobs/{}", 1 + i % 20)).await;
        v.history().await;
        viewers.push(v);
    }
    let mut conn = app.redis_conn().await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let subscribers = clients
        .lines()
        .filter(|l| l.contains("psub=1") || l.contains("cmd=psubscribe"))
        .count();
    assert_eq!(subscribers, 1, "{clients}");
    // Every one of them is served by that connection.
    app.ingest(&json!((1..=20)
        .map(|j| record(j, "hello"))
        .collect::<Vec<_>>()))
        .await;
    for v in &mut viewers {
        assert_eq!(v.next_json(WAIT).await.unwrap()["message"], "hello");
    }
}

fn new_record(job_id: i64, message: &str) -> session_log_gateway::record::NewRecord {
    session_log_gateway::record::validate(
        json!({"job_id": job_id, "message": message}),
        0,
        &Default::default(),
        chrono::Utc::now(),
    )
    .unwrap()
}

#[actix_web::test]
async fn a_viewer_that_stops_reading_never_delays_the_others_and_is_closed() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.viewer_queue = 8;
        s.slow_viewer_secs = 2;
    })
    .await;
    let mut stalled = app.viewer("/ws/jobs/30").await;
    stalled.history().await;
    let mut reader = app.viewer("/ws/jobs/30").await;
    reader.history().await;

    // ~17 MB of device output: far more than the socket buffers of the stalled viewer hold.
    let chunk = "interface GigabitEthernet0/1\n description uplink\n".repeat(5200);
    let mut received = Vec::new();
    for _ in 0..16 {
        let batch: Vec<Value> = (0..4).map(|_| record(30, &chunk)).collect();
        app.ingest(&json!(batch)).await;
        received.extend(
            reader
                .collect_until(WAIT, |f| f["seq"].as_i64().unwrap_or(0) % 4 == 0)
                .await,
        );
    }
    assert_eq!(seqs(&received), (1..=64).collect::<Vec<_>>());

    // The stalled viewer is dropped by the gateway; the reader stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while app.metric("gateway_viewers_connected").await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled viewer was never closed"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    app.ingest(&json!(record(30, "still live"))).await;
    assert_eq!(reader.next_json(WAIT).await.unwrap()["seq"], 65);
    drop(stalled);
}
