//! Starts the gateway from CLI flags and environment variables.

use clap::Parser;
use session_log_gateway::config::Settings;
use session_log_gateway::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let settings = Settings::parse();
    let app = Application::build(settings.clone()).await?;
    log::info!(
        "session-log-gateway listening on http://{}:{} (viewer at /)",
        settings.bind.ip(),
        app.port()
    );
    app.run_until_stopped(true).await?;
    Ok(())
}
