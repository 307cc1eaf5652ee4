//! Security: viewer JWTs and ingest tokens, origins, connection caps, the refusal to serve
//! without auth on a public address, and the whole bad-input catalogue.

use std::time::Duration;

use serde_json::{json, Value};
use session_log_gateway::auth::sign_jwt;

use crate::helpers::{client, record, spawn_app, spawn_app_with, TestApp, Viewer};

const SECRET: &str = "netraven-test-secret";
const SERVICE_TOKEN: &str = "svc-token-1";

fn jwt(exp_offset: i64, secret: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + exp_offset;
    sign_jwt(
        &json!({"sub": "operator", "role": "user", "exp": exp}),
        secret.as_bytes(),
    )
}

async fn secured_app() -> TestApp {
    spawn_app_with(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.ingest_tokens = vec![SERVICE_TOKEN.into()];
        s.allowed_origins = vec!["https://netraven.example".into()];
    })
    .await
}

async fn status_of(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = client().get(format!("{}{path}", app.address));
    for (k, v) in headers {
        request = request.insert_header((*k, *v));
    }
    request.send().await.expect("request").status().as_u16()
}

#[actix_web::test]
async fn readers_need_a_valid_viewer_jwt_from_the_header_or_the_query() {
    let app = secured_app().await;
    app.post_logs_as(SERVICE_TOKEN, &json!(record(5, "secret config")))
        .await;
    let ws = format!("ws://127.0.0.1:{}/ws/jobs/5", app.port);
    let good = jwt(300, SECRET);
    let none_alg = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = good.split('.').nth(1).unwrap();
        format!("{header}.{payload}.")
    };
    let refused = [
        ("no token", None),
        ("expired", Some(jwt(-300, SECRET))),
        ("wrong signature", Some(jwt(300, "another-secret"))),
        ("alg none", Some(none_alg)),
        ("malformed", Some("not.a.jwt".to_string())),
    ];
    for (case, token) in &refused {
        let auth = token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        assert_eq!(
            Viewer::handshake_status(&ws, &headers).await,
            401,
            "WebSocket, {case}"
        );
        assert_eq!(
            status_of(&app, "/api/v1/jobs/5/logs", &headers).await,
            401,
            "history, {case}"
        );
        assert_eq!(
            status_of(&app, "/api/v1/jobs/5/stream", &headers).await,
            401,
            "SSE, {case}"
        );
        if let Some(t) = token {
            let url = format!("{ws}?access_token={t}");
            assert_eq!(
                Viewer::handshake_status(&url, &[]).await,
                401,
                "query, {case}"
            );
        }
    }
    // Accepted from the header and from the query; the record flows.
    let bearer = format!("Bearer {good}");
    assert_eq!(
        status_of(&app, "/api/v1/jobs/5/logs", &[("Authorization", &bearer)]).await,
        200
    );
    let mut viewer = Viewer::connect(&format!("{ws}?access_token={good}")).await;
    assert_eq!(viewer.history().await[0]["message"], "secret config");
    assert_eq!(
        Viewer::handshake_status(&ws, &[("Authorization", &bearer)]).await,
        101
    );
}

#[actix_web::test]
async fn ingest_takes_service_tokens_only() {
    let app = secured_app().await;
    assert_eq!(
        app.post_logs("application/json", record(1, "x").to_string())
            .await
            .0,
        401
    );
    assert_eq!(
        app.post_logs_as("wrong-token", &json!(record(1, "x")))
            .await
            .0,
        401
    );
    assert_eq!(
        app.post_logs_as(&jwt(300, SECRET), &json!(record(1, "x")))
            .await
            .0,
        403
    );
    assert_eq!(
        app.post_logs_as(SERVICE_TOKEN, &json!(record(1, "x")))
            .await
            .0,
        201
    );
    assert_eq!(app.row_count().await, 1);
}

#[actix_web::test]
async fn websockets_from_other_origins_are_refused_before_the_upgrade() {
    let app = secured_app().await;
    let url = format!(
        "ws://127.0.0.1:{}/ws/jobs/1?access_token={}",
        app.port,
        jwt(300, SECRET)
    );
    assert_eq!(
        Viewer::handshake_status(&url, &[("Origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(
        Viewer::handshake_status(&url, &[("Origin", "https://netraven.example")]).await,
        101
    );
    assert_eq!(
        Viewer::handshake_status(&url, &[]).await,
        101,
        "a service client without Origin"
    );
    // Same origin is allowed by default.
    let open = spawn_app().await;
    let url = format!("ws://127.0.0.1:{}/ws/jobs/1", open.port);
    let same = format!("http://127.0.0.1:{}", open.port);
    assert_eq!(
        Viewer::handshake_status(&url, &[("Origin", &same)]).await,
        101
    );
    assert_eq!(
        Viewer::handshake_status(&url, &[("Origin", "http://evil.example")]).await,
        403
    );
}

#[actix_web::test]
async fn connections_per_client_address_are_capped() {
    let app = spawn_app_with(|s| s.max_connections_per_ip = 2).await;
    let url = format!("ws://127.0.0.1:{}/ws/jobs/1", app.port);
    let first = Viewer::connect(&url).await;
    let _second = Viewer::connect(&url).await;
    assert_eq!(Viewer::handshake_status(&url, &[]).await, 429);
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Viewer::handshake_status(&url, &[]).await != 101 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never released"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn the_gateway_refuses_to_start_without_auth_on_a_public_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_session-log-gateway"))
        .env("GATEWAY_BIND", "0.0.0.0:0")
        .env_remove("GATEWAY_JWT_SECRET")
        .env_remove("NETRAVEN_API__JWT_SECRET")
        .env_remove("GATEWAY_INSECURE_NO_AUTH")
        .output()
        .expect("run the gateway");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve session logs without authentication on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");

    let mut settings = session_log_gateway::config::Settings::defaults();
    settings.bind = "0.0.0.0:0".parse().unwrap();
    settings.jwt_secret = None;
    assert!(settings.check_exposure().is_err());
    settings.insecure_no_auth = true;
    assert!(settings.check_exposure().is_ok());
    settings.insecure_no_auth = false;
    settings.jwt_secret = Some("s".into());
    assert!(settings.check_exposure().is_ok());
}

#[actix_web::test]
async fn every_bad_input_gets_a_clear_4xx_and_stores_nothing() {
    let app = spawn_app().await;
    let deep_json = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_meta = {
        let mut meta = json!(1);
        for _ in 0..20 {
            meta = json!({ "a": meta });
        }
        json!({"job_id": 1, "message": "m", "meta": meta}).to_string()
    };
    let ten_mb_line = format!(
        "{{\"job_id\":1,\"message\":\"{}\"}}\n",
        "x".repeat(10 * 1024 * 1024)
    );
    let catalogue: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"job_id\":1,".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "wrong type of job_id",
            "application/json",
            br#"{"job_id":"1","message":"m"}"#.to_vec(),
            422,
            "must be an integer",
        ),
        (
            "wrong type of message",
            "application/json",
            br#"{"job_id":1,"message":["m"]}"#.to_vec(),
            422,
            "must be a string",
        ),
        (
            "job_id 0",
            "application/json",
            br#"{"job_id":0,"message":"m"}"#.to_vec(),
            422,
            "positive",
        ),
        (
            "negative job_id",
            "application/json",
            br#"{"job_id":-5,"message":"m"}"#.to_vec(),
            422,
            "positive",
        ),
        (
            "job_id beyond i64",
            "application/json",
            br#"{"job_id":9223372036854775808,"message":"m"}"#.to_vec(),
            422,
            "at most",
        ),
        (
            "device_id 0",
            "application/json",
            br#"{"job_id":1,"device_id":0,"message":"m"}"#.to_vec(),
            422,
            "positive",
        ),
        (
            "NaN",
            "application/json",
            br#"{"job_id":NaN,"message":"m"}"#.to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "huge number",
            "application/json",
            br#"{"job_id":1e400,"message":"m"}"#.to_vec(),
            422,
            "number out of range",
        ),
        (
            "fractional id",
            "application/json",
            br#"{"job_id":1.5,"message":"m"}"#.to_vec(),
            422,
            "fraction",
        ),
        (
            "invalid UTF-8",
            "application/json",
            b"{\"job_id\":1,\"message\":\"\xff\xfe\"}".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "deep nesting",
            "application/json",
            deep_json.into_bytes(),
            422,
            "recursion limit exceeded",
        ),
        (
            "meta nested too deep",
            "application/json",
            deep_meta.into_bytes(),
            422,
            "invalid",
        ),
        (
            "empty body",
            "application/json",
            Vec::new(),
            400,
            "no record",
        ),
        (
            "whitespace body",
            "application/json",
            b"  \r\n ".to_vec(),
            400,
            "no record",
        ),
        (
            "empty NDJSON",
            "application/x-ndjson",
            b"\r\n\r\n".to_vec(),
            400,
            "no record",
        ),
        (
            "duplicate keys",
            "application/json",
            br#"{"job_id":1,"job_id":2,"message":"m"}"#.to_vec(),
            422,
            "invalid",
        ),
        (
            "a 10 MB line",
            "application/x-ndjson",
            ten_mb_line.into_bytes(),
            422,
            "invalid",
        ),
        (
            "not JSON content type",
            "text/plain",
            b"hello".to_vec(),
            415,
            "content type",
        ),
        (
            "a scalar",
            "application/json",
            b"42".to_vec(),
            422,
            "invalid",
        ),
        (
            "an array of scalars",
            "application/json",
            b"[1,2]".to_vec(),
            422,
            "invalid",
        ),
    ];
    for (case, content_type, body, status, text) in catalogue {
        let (got, answer) = app.post_logs(content_type, body).await;
        assert_eq!(got, status, "{case}: {answer}");
        let message = answer.to_string();
        assert!(message.contains(text), "{case}: {message:.300}");
        assert_eq!(app.row_count().await, 0, "{case} stored something");
    }
    // The server stayed healthy through all of it.
    app.wait_ready().await;

    // Accepted on purpose: NDJSON with blank lines and CRLF, and a NUL in the message, which
    // PostgreSQL text cannot hold: stored and sent as U+2400.
    let (status, body) = app
        .post_logs("application/x-ndjson", "\r\n{\"job_id\":1,\"message\":\"a\\u0000b\"}\r\n\r\n{\"job_id\":1,\"message\":\"c\"}\r\n")
        .await;
    assert_eq!(status, 201, "{body}");
    let stored = app
        .store
        .history(1, 0, None, &Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(stored[0].message, "a\u{2400}b");
    let (_, problems) = app
        .post_logs(
            "application/json",
            r#"{"job_id":1,"job_id":2,"message":"m"}"#,
        )
        .await;
    assert_eq!(problems["problems"][0]["field"], Value::from("record"));
}
