//! `POST /api/v1/logs`: what is stored, what is refused, and how.

use serde_json::{json, Value};

use crate::helpers::{record, spawn_app};

#[actix_web::test]
async fn ingest_stores_records_with_dense_seq_per_job_and_answers_201() {
    let app = spawn_app().await;
    let acks = app
        .ingest(&json!([record(1, "a"), record(2, "b"), record(1, "c")]))
        .await;
    let pairs: Vec<(i64, i64)> = acks
        .iter()
        .map(|a| (a["job_id"].as_i64().unwrap(), a["seq"].as_i64().unwrap()))
        .collect();
    assert_eq!(pairs, [(1, 1), (2, 1), (1, 2)]);
    assert!(acks.iter().all(|a| a["id"].as_i64().unwrap() > 0));

    // A single object and NDJSON continue the same counters.
    let (status, body) = app
        .post_logs("application/json", record(1, "d").to_string())
        .await;
    assert_eq!((status, body["records"][0]["seq"].as_i64()), (201, Some(3)));
    let nd = format!("{}\r\n\n{}\n", record(2, "e"), record(1, "f"));
    let (status, body) = app.post_logs("application/x-ndjson", nd).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["records"][0]["seq"], 2);
    assert_eq!(body["records"][1]["seq"], 4);
    assert_eq!(app.row_count().await, 6);
}

#[actix_web::test]
async fn netraven_shaped_records_are_normalised_on_the_way_in() {
    let app = spawn_app().await;
    let netraven = json!({
        "timestamp": "2025-05-20T12:34:56.123456Z", "level": "WARN", "job_id": 9,
        "device_id": 3, "source": "worker.executor", "message": "High CPU", "extra": {"cpu": 87}
    });
    app.ingest(&netraven).await;
    let rows = app
        .store
        .history(9, 0, None, &Default::default(), 10)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&rows[0].to_json()).unwrap();
    assert_eq!(stored["level"], "warning");
    assert_eq!(stored["log_type"], "session");
    assert_eq!(stored["meta"], json!({"cpu": 87}));
    assert_eq!(stored["timestamp"], "2025-05-20T12:34:56.123456Z");
    assert_eq!(stored["seq"], 1);
}

#[actix_web::test]
async fn bad_input_gets_the_right_4xx_and_stores_nothing() {
    let app = spawn_app_small_caps().await;
    let big = "x".repeat(2048);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "application/json",
            "{not json".into(),
            400,
            "not valid JSON",
        ),
        ("application/json", "".into(), 400, "no record"),
        ("application/json", "[]".into(), 400, "no record"),
        (
            "text/plain",
            record(1, "m").to_string(),
            415,
            "content type",
        ),
        (
            "application/x-www-form-urlencoded",
            "a=b".into(),
            415,
            "content type",
        ),
        (
            "application/json",
            json!([record(1, "ok"), {"job_id": 0, "message": "m"}]).to_string(),
            422,
            "invalid",
        ),
        (
            "application/json",
            json!({"job_id": 1}).to_string(),
            422,
            "invalid",
        ),
        (
            "application/json",
            json!({"job_id": 1, "message": "m", "level": "loud"}).to_string(),
            422,
            "invalid",
        ),
        (
            "application/json",
            json!({"job_id": 1, "message": big}).to_string(),
            422,
            "invalid",
        ),
        (
            "application/json",
            json!([
                record(1, "a"),
                record(1, "b"),
                record(1, "c"),
                record(1, "d")
            ])
            .to_string(),
            413,
            "over the limit of 3",
        ),
        (
            "application/json",
            format!(
                "[{}]",
                vec![format!("{{\"job_id\":1,\"message\":\"{}\"}}", "y".repeat(900)); 5].join(",")
            ),
            413,
            "body is over the limit",
        ),
        (
            "application/x-ndjson",
            format!("{}\nnope\n", record(1, "a")),
            400,
            "line 2",
        ),
    ];
    for (content_type, body, want_status, want_text) in cases {
        let (status, answer) = app.post_logs(content_type, body.clone()).await;
        assert_eq!(status, want_status, "{content_type} {body:.80} -> {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(want_text),
            "{body:.80}: {answer}"
        );
    }
    assert_eq!(app.row_count().await, 0);
}

#[actix_web::test]
async fn a_422_names_the_index_field_and_reason_of_each_problem() {
    let app = spawn_app().await;
    let body = json!([record(1, "fine"), {"job_id": -4, "message": 5}, {"message": "m", "timestamp": "soon"}]);
    let (status, answer) = app.post_logs("application/json", body.to_string()).await;
    assert_eq!(status, 422);
    let problems: Vec<(i64, String)> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["index"].as_i64().unwrap(),
                p["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            (1, "job_id".into()),
            (1, "message".into()),
            (2, "job_id".into()),
            (2, "timestamp".into())
        ]
    );
    assert!(answer["problems"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("positive"));
    assert_eq!(app.row_count().await, 0);
}

async fn spawn_app_small_caps() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|s| {
        s.max_message_bytes = 1024;
        s.max_records_per_request = 3;
        s.max_body_bytes = 4096;
    })
    .await
}
