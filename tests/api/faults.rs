//! Faults of Redis and PostgreSQL, recovered without a restart of the gateway.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{create_database, record, seqs, start, test_settings};
use crate::services::{own_cluster, RedisServer};

const WAIT: Duration = Duration::from_secs(10);

#[actix_web::test]
async fn the_subscriber_comes_back_after_redis_is_killed_and_viewers_get_a_gap_then_new_records() {
    let mut app = crate::helpers::spawn_app().await;
    let mut viewer = app.viewer("/ws/jobs/21").await;
    viewer.history().await;
    app.ingest(&json!(record(21, "before"))).await;
    assert_eq!(viewer.next_json(WAIT).await.unwrap()["seq"], 1);

    app.redis().kill();
    // Stored while Redis is down: 201 all the same.
    app.ingest(&json!(record(21, "during"))).await;
    app.redis().resume();

    let frames = viewer.collect_until(WAIT, |f| f["control"] == "gap").await;
    assert_eq!(
        seqs(&frames),
        [2],
        "the record stored during the outage is healed"
    );
    assert_eq!(frames.last().unwrap()["reason"], "redis_reconnect");
    app.wait_ready().await;
    app.ingest(&json!(record(21, "after"))).await;
    let frame = viewer.next_json(WAIT).await.unwrap();
    assert_eq!(
        (frame["seq"].as_i64(), frame["message"].as_str()),
        (Some(3), Some("after"))
    );
    assert!(app.metric("gateway_redis_subscribes_total").await >= 2);
}

#[actix_web::test]
async fn a_stopped_postgresql_gives_quick_503s_and_ingest_recovers_without_restart() {
    // A cluster of this test's own, since it is stopped mid-test.
    let mut cluster = own_cluster();
    let database_url = create_database(&cluster).await;
    let redis = RedisServer::start();
    let app = start(test_settings(&database_url, &redis.url()), Some(redis)).await;
    app.ingest(&json!(record(1, "one"))).await;

    cluster.stop();
    let began = Instant::now();
    let (status, body) = app
        .post_logs("application/json", record(1, "two").to_string())
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("nothing was stored"));
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "503 took {:?}",
        began.elapsed()
    );

    cluster.resume();
    let deadline = Instant::now() + WAIT;
    let acks = loop {
        let (status, body) = app
            .post_logs("application/json", record(1, "three").to_string())
            .await;
        if status == 201 {
            break body["records"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "ingest never recovered: {status} {body}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(acks[0]["seq"], 2, "the refused record took no seq");
    assert_eq!(app.row_count().await, 2);

    // During a stream of ingests: every 201 is stored once and delivered, every 503 is absent.
    let mut viewer = app.viewer("/ws/jobs/1").await;
    assert_eq!(seqs(&viewer.history().await), [1, 2]);
    let address = app.address.clone();
    let producer = actix_web::rt::spawn(async move {
        let (mut acked, mut refused) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let message = format!("stream-{i}");
            let resp = crate::helpers::client()
                .post(format!("{address}/api/v1/logs"))
                .send_json(&record(1, &message))
                .await
                .expect("post");
            match resp.status().as_u16() {
                201 => acked.push(message),
                503 => refused.push(message),
                other => panic!("unexpected status {other}"),
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        (acked, refused)
    });
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    cluster.stop();
    // Records published straight to Redis keep flowing while PostgreSQL is down.
    app.publish_raw(
        "session-logs:1",
        br#"{"job_id":1,"message":"raw during outage"}"#,
    )
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    cluster.resume();
    let (acked, refused) = producer.await.unwrap();
    assert!(!refused.is_empty(), "PostgreSQL was never seen down");
    let stored: Vec<String> = app
        .store
        .history(1, 2, None, &Default::default(), 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message)
        .collect();
    assert_eq!(
        stored, acked,
        "exactly the acknowledged records, once each, in order"
    );
    let frames = viewer
        .collect_until(WAIT, |f| f["seq"].as_i64() == Some(2 + acked.len() as i64))
        .await;
    assert!(frames.iter().any(|f| f["message"] == "raw during outage"));
    let delivered: Vec<&str> = frames
        .iter()
        .filter(|f| f.get("seq").is_some())
        .filter_map(|f| f["message"].as_str())
        .collect();
    assert_eq!(
        delivered,
        acked.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[actix_web::test]
async fn a_frozen_redis_is_noticed_within_the_ping_bound_and_recovered_from() {
    let mut app = crate::helpers::spawn_app().await;
    let mut viewer = app.viewer("/ws/jobs/2").await;
    viewer.history().await;
    app.redis().signal(libc::SIGSTOP);
    let began = Instant::now();
    // Ping every 200 ms, 1 s timeout: the subscriber must report itself down within ~1.5 s.
    loop {
        if app.metric("gateway_redis_subscriber_up").await == 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "half-open connection not detected"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    app.redis().signal(libc::SIGCONT);
    app.wait_ready().await;
    let frames = viewer.collect_until(WAIT, |f| f["control"] == "gap").await;
    assert_eq!(frames.last().unwrap()["reason"], "redis_reconnect");
    app.ingest(&json!(record(2, "after thaw"))).await;
    assert_eq!(
        viewer.next_json(WAIT).await.unwrap()["message"],
        "after thaw"
    );
}

#[actix_web::test]
async fn a_gateway_started_before_postgresql_waits_for_it() {
    let mut cluster = own_cluster();
    let database_url = create_database(&cluster).await;
    cluster.stop();
    // PostgreSQL comes up two seconds after the gateway (from a thread that stays alive, as
    // the server dies with the thread that started it).
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        cluster.resume();
        loop {
            std::thread::park();
        }
    });
    let redis = RedisServer::start();
    let port = crate::services::free_port();
    let began = Instant::now();
    let gateway = crate::helpers::GatewayProcess::start(port, &database_url, &redis.url()).await;
    assert!(began.elapsed() >= Duration::from_secs(2));
    let (status, body) = {
        let mut resp = crate::helpers::client()
            .post(format!("{}/api/v1/logs", gateway.address))
            .send_json(&record(1, "after a late start"))
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!((status, body["records"][0]["seq"].as_i64()), (201, Some(1)));
}
