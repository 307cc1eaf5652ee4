//! A smoke run of every `loadgen` scenario at a small size against the gateway binary: seconds,
//! not minutes, and no timing thresholds; it fails on any lost or duplicated frame.

use std::process::Command;

use crate::helpers::{spawn_app, GatewayProcess};

#[actix_web::test]
async fn every_loadgen_scenario_runs_small_without_loss_or_duplicates() {
    let app = spawn_app().await;
    let port = crate::services::free_port();
    let gateway = GatewayProcess::start(port, &app.database_url, &app.redis_url).await;
    for scenario in ["fanout", "many-jobs", "ingest", "catch-up", "idle"] {
        let url = gateway.address.clone();
        let redis_url = app.redis_url.clone();
        let out = actix_web::rt::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .args([
                    "--url",
                    &url,
                    "--redis-url",
                    &redis_url,
                    "--json",
                    "--fail-on-loss",
                ])
                .args([scenario, "--small"])
                .output()
        })
        .await
        .expect("join")
        .expect("run loadgen");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "loadgen {scenario} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
        println!("{scenario}: {report}");
    }
}
