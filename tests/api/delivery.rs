//! Lossless delivery under faults: idempotent retries, two gateways on one Redis and one
//! PostgreSQL, and a soak with Redis killed mid-run.

use std::rc::Rc;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    client, produce, record, seqs, spawn_app, spawn_app_with, start, test_settings, GatewayProcess,
};

#[actix_web::test]
async fn a_retried_ingest_with_the_same_idempotency_key_stores_nothing_twice() {
    let app = spawn_app().await;
    let body = json!([record(1, "a"), record(1, "b")]);
    let (status, first, replayed) = app.post_idempotent("req-1", &body).await;
    assert_eq!((status, replayed), (201, false));
    let (status, again, replayed) = app.post_idempotent("req-1", &body).await;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, first);
    assert_eq!(app.row_count().await, 2);

    let (status, answer, _) = app
        .post_idempotent("req-1", &json!(record(1, "other")))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(app.row_count().await, 2);

    // Two concurrent first attempts: one stores, the other replays its answer.
    let body = json!(record(2, "c"));
    let (a, b) = futures_util::join!(
        app.post_idempotent("req-2", &body),
        app.post_idempotent("req-2", &body)
    );
    assert_eq!((a.0, b.0), (201, 201));
    assert_eq!(a.1, b.1);
    assert!(a.2 != b.2, "exactly one of them is a replay");
    assert_eq!(app.row_count().await, 3);
}

#[actix_web::test]
async fn a_record_ingested_at_one_gateway_reaches_viewers_on_another() {
    let first = spawn_app().await;
    // A second gateway on the same database and the same Redis.
    let mut settings = test_settings(&first.database_url, &first.redis_url);
    settings.bind = "127.0.0.1:0".parse().unwrap();
    let second = start(settings, None).await;
    let mut viewer = second.viewer("/ws/jobs/77").await;
    viewer.history().await;
    first
        .ingest(&json!(record(77, "from the first gateway")))
        .await;
    let frame = viewer.next_json(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (frame["seq"].as_i64(), frame["message"].as_str()),
        (Some(1), Some("from the first gateway"))
    );
}

#[actix_web::test]
async fn soak_every_viewer_gets_exactly_its_jobs_seqs_while_redis_is_killed_twice() {
    const JOBS: usize = 20;
    const TOTAL: usize = 50_000;
    let per_job = (TOTAL / JOBS) as i64;
    let app = Rc::new(tokio::sync::Mutex::new(
        spawn_app_with(|s| {
            s.viewer_queue = 64;
        })
        .await,
    ));
    let (address, port) = {
        let a = app.lock().await;
        (a.address.clone(), a.port)
    };

    let mut readers = Vec::new();
    for job in 1..=JOBS + 1 {
        let slow = job == JOBS + 1;
        let job = if slow { 1 } else { job };
        let mut viewer =
            crate::helpers::Viewer::connect(&format!("ws://127.0.0.1:{port}/ws/jobs/{job}")).await;
        readers.push(actix_web::rt::spawn(async move {
            let mut frames = Vec::new();
            while let Some(frame) = viewer.next_json(Duration::from_secs(20)).await {
                let done = frame["seq"].as_i64() == Some(per_job);
                frames.push(frame);
                if slow && frames.len() % 50 == 0 {
                    actix_web::rt::time::sleep(Duration::from_millis(30)).await;
                }
                if done {
                    break;
                }
            }
            (job, seqs(&frames))
        }));
    }

    let producers = actix_web::rt::spawn(produce(address, 4, TOTAL, JOBS, 50));
    for _ in 0..2 {
        actix_web::rt::time::sleep(Duration::from_millis(700)).await;
        let mut a = app.lock().await;
        a.redis().kill();
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        a.redis().resume();
    }
    producers.await.unwrap();
    for reader in readers {
        let (job, got) = reader.await.unwrap();
        assert_eq!(
            got.len() as i64,
            per_job,
            "job {job}: {} records",
            got.len()
        );
        assert!(
            got.iter().copied().eq(1..=per_job),
            "job {job}: out of order or duplicated"
        );
    }
    let a = app.lock().await;
    assert_eq!(a.row_count().await, TOTAL as i64);
    assert!(a.metric("gateway_redis_subscribes_total").await >= 3);
}

#[actix_web::test]
async fn sigterm_closes_viewers_with_1001_finishes_ingests_and_exits_promptly() {
    let app = spawn_app().await;
    let port = crate::services::free_port();
    let gateway = GatewayProcess::start(port, &app.database_url, &app.redis_url).await;
    let mut viewer =
        crate::helpers::Viewer::connect(&format!("ws://127.0.0.1:{port}/ws/jobs/3")).await;
    viewer.history().await;

    // Ingests keep coming while the signal lands.
    let address = gateway.address.clone();
    let producer = actix_web::rt::spawn(async move {
        let mut acked = 0;
        for i in 0..200 {
            let sent = client()
                .post(format!("{address}/api/v1/logs"))
                .send_json(&record(3, &format!("r{i}")))
                .await;
            match sent {
                Ok(resp) if resp.status() == 201 => acked += 1,
                _ => break,
            }
        }
        acked
    });
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let (clean, took) = gateway.terminate().await;
    assert!(clean, "exit status not 0");
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    while viewer.next_json(Duration::from_secs(5)).await.is_some() {}
    assert_eq!(viewer.close_code, Some(1001));
    let acked = producer.await.unwrap();
    assert!(acked > 0);
    assert_eq!(
        app.row_count().await,
        acked,
        "every acknowledged record is stored"
    );
}

#[actix_web::test]
async fn soak_viewers_of_a_restarted_gateway_resume_with_after_seq_and_miss_nothing() {
    const JOBS: usize = 10;
    const TOTAL: usize = 20_000;
    let per_job = (TOTAL / JOBS) as i64;
    let app = spawn_app().await;
    let (port_a, port_b) = (crate::services::free_port(), crate::services::free_port());
    let a = GatewayProcess::start(port_a, &app.database_url, &app.redis_url).await;
    let b = GatewayProcess::start(port_b, &app.database_url, &app.redis_url).await;

    let readers: Vec<_> = (1..=JOBS)
        .flat_map(|job| [(job, port_a), (job, port_b)])
        .map(|(job, port)| {
            actix_web::rt::spawn(crate::helpers::follow_with_reconnects(
                format!("ws://127.0.0.1:{port}/ws/jobs/{job}"),
                per_job,
                Duration::from_secs(60),
            ))
        })
        .collect();
    // Producers write through gateway A (which stays up) while B restarts.
    let producers = actix_web::rt::spawn(produce(a.address.clone(), 4, TOTAL, JOBS, 50));
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    let (clean, _) = b.terminate().await;
    assert!(clean);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let b = GatewayProcess::start(port_b, &app.database_url, &app.redis_url).await;
    producers.await.unwrap();
    for reader in readers {
        let got = reader.await.unwrap();
        assert!(
            got.iter().copied().eq(1..=per_job),
            "{} records, first {:?}, last {:?}",
            got.len(),
            got.first(),
            got.last()
        );
    }
    drop((a, b));
}

#[actix_web::test]
async fn a_record_acknowledged_while_redis_is_down_reaches_viewers_on_every_gateway() {
    let mut first = spawn_app().await;
    let mut settings = test_settings(&first.database_url, &first.redis_url);
    settings.bind = "127.0.0.1:0".parse().unwrap();
    let second = start(settings, None).await;
    let mut on_first = first.viewer("/ws/jobs/90").await;
    let mut on_second = second.viewer("/ws/jobs/90").await;
    on_first.history().await;
    on_second.history().await;

    first.redis().kill();
    // Acknowledged while no PUBLISH can succeed.
    first.ingest(&json!(record(90, "during the outage"))).await;
    first.redis().resume();

    for viewer in [&mut on_first, &mut on_second] {
        let frames = viewer
            .collect_until(Duration::from_secs(10), |f| f["seq"] == 1)
            .await;
        assert_eq!(seqs(&frames), [1], "{frames:?}");
        // The kept frame is also published again once Redis answers: still delivered once.
        assert!(viewer
            .collect_until(Duration::from_millis(1500), |_| false)
            .await
            .iter()
            .all(|f| f.get("seq").is_none()));
    }
}
