//! The viewer in real headless Chromium: `tests/browser/viewer.test.mjs` (playwright-core
//! driving Debian's Chromium) against the gateway binary, over a database of this binary's
//! PostgreSQL cluster and a redis-server of its own. The script starts, stops and restarts the
//! gateway itself and writes screenshots under `target/`.

use std::process::Command;

use crate::helpers::create_database;
use crate::services::{shared_cluster, RedisServer};

#[actix_web::test]
async fn the_viewer_works_in_headless_chromium() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "run `npm ci --prefix tests/browser` first (scripts/test.sh does)"
    );
    let database_url = create_database(shared_cluster()).await;
    let redis = RedisServer::start();
    let out = actix_web::rt::task::spawn_blocking(move || {
        Command::new("node")
            .arg(root.join("tests/browser/viewer.test.mjs"))
            .env("GATEWAY_BIN", env!("CARGO_BIN_EXE_session-log-gateway"))
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", redis.url())
            .output()
            .map(|out| (out, redis))
    })
    .await
    .expect("join")
    .expect("run node (scripts/test.sh installs it)");
    let (out, _redis) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "browser tests failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
