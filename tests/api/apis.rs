//! The history API, SSE streams (ours and NetRaven's), the multi-job WebSocket, and legacy
//! channels.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{client, record, seqs, spawn_app, spawn_app_with, SseClient};

const WAIT: Duration = Duration::from_secs(5);

async fn get_json(app: &crate::helpers::TestApp, path: &str) -> (u16, Value) {
    let mut resp = client()
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().limit(64 << 20).await.unwrap_or(Value::Null);
    (resp.status().as_u16(), body)
}

#[actix_web::test]
async fn history_pages_by_seq_with_a_cursor_and_filters() {
    let app = spawn_app().await;
    let records: Vec<Value> = (1..=25)
        .map(|i| json!({"job_id": 6, "message": format!("m{i}"), "level": if i % 10 == 0 { "error" } else { "info" }}))
        .collect();
    app.ingest(&json!(records)).await;

    let (status, page) = get_json(&app, "/api/v1/jobs/6/logs?limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(
        seqs(page["records"].as_array().unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        (page["next_after_seq"].as_i64(), page["last_seq"].as_i64()),
        (Some(10), Some(25))
    );
    let (_, page) = get_json(&app, "/api/v1/jobs/6/logs?limit=10&after_seq=20").await;
    assert_eq!(
        seqs(page["records"].as_array().unwrap()),
        [21, 22, 23, 24, 25]
    );
    assert!(page["next_after_seq"].is_null());
    let (_, page) = get_json(&app, "/api/v1/jobs/6/logs?level=error").await;
    assert_eq!(seqs(page["records"].as_array().unwrap()), [10, 20]);
    let (_, page) = get_json(&app, "/api/v1/jobs/6/logs?before_seq=11&limit=3").await;
    assert_eq!(seqs(page["records"].as_array().unwrap()), [8, 9, 10]);
    let (_, empty) = get_json(&app, "/api/v1/jobs/999/logs").await;
    assert_eq!(
        (
            empty["records"].as_array().unwrap().len(),
            empty["last_seq"].as_i64()
        ),
        (0, Some(0))
    );
    for bad in [
        "/api/v1/jobs/0/logs",
        "/api/v1/jobs/6/logs?limit=0",
        "/api/v1/jobs/6/logs?level=x",
    ] {
        assert_eq!(get_json(&app, bad).await.0, 400, "{bad}");
    }

    let mut resp = client()
        .get(format!("{}/api/v1/jobs/6/logs.txt", app.address))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    assert_eq!(text.lines().count(), 25);
    assert!(
        text.lines().nth(9).unwrap().contains("ERROR") && text.ends_with("m25\n"),
        "{text}"
    );
}

#[actix_web::test]
async fn sse_streams_history_then_live_and_resumes_after_last_event_id() {
    let app = spawn_app().await;
    app.ingest(&json!((1..=5)
        .map(|i| record(8, &format!("r{i}")))
        .collect::<Vec<_>>()))
        .await;

    let mut sse = SseClient::open(&app, "/api/v1/jobs/8/stream", &[]).await;
    for seq in 1..=5 {
        let e = sse.next_event(WAIT).await.unwrap();
        assert_eq!(
            (e.event.as_str(), e.id.as_deref()),
            ("log", Some(seq.to_string().as_str()))
        );
        let record: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(record["seq"], seq);
    }
    let end = sse.next_event(WAIT).await.unwrap();
    assert_eq!(end.event, "control");
    app.ingest(&json!(record(8, "live"))).await;
    assert_eq!(sse.next_event(WAIT).await.unwrap().id.as_deref(), Some("6"));

    // A reconnect with Last-Event-ID gets exactly what follows: no gap, no duplicate.
    app.ingest(&json!([record(8, "r7"), record(8, "r8")])).await;
    let mut resumed =
        SseClient::open(&app, "/api/v1/jobs/8/stream", &[("Last-Event-ID", "6")]).await;
    let ids: Vec<String> = [
        resumed.next_event(WAIT).await.unwrap(),
        resumed.next_event(WAIT).await.unwrap(),
    ]
    .into_iter()
    .filter_map(|e| e.id)
    .collect();
    assert_eq!(ids, ["7", "8"]);
    assert_eq!(resumed.next_event(WAIT).await.unwrap().event, "control");
    assert_eq!(resumed.next_event(Duration::from_millis(300)).await, None);
}

#[actix_web::test]
async fn netravens_sse_route_streams_a_job_as_log_events() {
    let app = spawn_app().await;
    let mut sse = SseClient::open(
        &app,
        "/logs/stream?job_id=12&device_id=3&tail=0",
        &[("Authorization", "Bearer x")],
    )
    .await;
    assert_eq!(sse.next_event(WAIT).await.unwrap().event, "control");
    app.ingest(&json!([{"job_id": 12, "device_id": 2, "message": "other device"}, {"job_id": 12, "device_id": 3, "message": "mine"}])).await;
    let e = sse.next_event(WAIT).await.unwrap();
    assert_eq!(e.event, "log");
    assert_eq!(
        serde_json::from_str::<Value>(&e.data).unwrap()["message"],
        "mine"
    );
    let _also = SseClient::open(&app, "/api/logs/stream?job_id=12", &[]).await;
    let resp = client()
        .get(format!("{}/logs/stream", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[actix_web::test]
async fn one_websocket_watches_several_jobs_each_with_its_own_hand_off() {
    let app = spawn_app().await;
    app.ingest(&json!([record(1, "a1"), record(1, "a2"), record(2, "b1")]))
        .await;
    let mut ws = app.viewer("/ws").await;
    ws.send_text(r#"{"op":"subscribe","job_id":1,"after_seq":1}"#)
        .await;
    let frames = ws
        .collect_until(WAIT, |f| f["control"] == "history_end")
        .await;
    assert_eq!(seqs(&frames), [2]);
    ws.send_text(r#"{"op":"subscribe","job_id":2}"#).await;
    let frames = ws
        .collect_until(WAIT, |f| f["control"] == "history_end")
        .await;
    assert_eq!(frames[0]["message"], "b1");

    app.ingest(&json!([record(1, "a3"), record(2, "b2"), record(3, "c1")]))
        .await;
    let frames = ws
        .collect_until(Duration::from_millis(500), |_| false)
        .await;
    let mut got: Vec<(i64, i64)> = frames
        .iter()
        .map(|f| (f["job_id"].as_i64().unwrap(), f["seq"].as_i64().unwrap()))
        .collect();
    // Order is guaranteed per job, not across jobs (each job has its own ring).
    got.sort();
    assert_eq!(got, [(1, 3), (2, 2)]);

    ws.send_text(r#"{"op":"unsubscribe","job_id":1}"#).await;
    assert_eq!(ws.next_json(WAIT).await.unwrap()["control"], "unsubscribed");
    app.ingest(&json!([record(1, "a4"), record(2, "b3")])).await;
    assert_eq!(ws.next_json(WAIT).await.unwrap()["message"], "b3");
    assert_eq!(ws.next_json(Duration::from_millis(300)).await, None);

    ws.send_text(r#"{"op":"dance"}"#).await;
    assert_eq!(ws.next_json(WAIT).await.unwrap()["control"], "error");
}

#[actix_web::test]
async fn a_record_on_netravens_legacy_channel_reaches_only_its_jobs_viewers() {
    let app = spawn_app_with(|s| s.legacy_channels = vec!["netraven-logs".into()]).await;
    let mut mine = app.viewer("/ws/jobs/31?level=info").await;
    let mut other = app.viewer("/ws/jobs/32").await;
    mine.history().await;
    other.history().await;
    // NetRaven's UnifiedLogger: json.dumps(record), uppercase level, `extra` for meta.
    let netraven = r#"{"timestamp": "2025-05-20T12:34:56.123456Z", "log_type": "session", "level": "INFO", "job_id": 31, "device_id": 4, "source": "worker.executor", "message": "Connected to edge-rtr-02", "extra": {"attempt": 1}}"#;
    app.publish_raw("netraven-logs", netraven.as_bytes()).await;
    app.publish_raw(
        "netraven-logs",
        br#"{"level": "DEBUG", "job_id": 31, "message": "filtered out"}"#,
    )
    .await;
    assert_eq!(mine.next_text(WAIT).await.as_deref(), Some(netraven));
    assert_eq!(mine.next_json(Duration::from_millis(300)).await, None);
    assert_eq!(other.next_json(Duration::from_millis(300)).await, None);
}
