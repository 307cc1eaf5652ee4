//! `loadgen`: a frugal load generator for the session log gateway, or any server with the same
//! routes (`POST /api/v1/logs`, `GET /ws/jobs/{job_id}`, Redis `session-logs:{job_id}`).
//!
//! It shares the machine with the gateway, so it is built to cost little per frame: its own
//! WebSocket client over plain TCP, most viewers drained in large periodic reads from a few
//! tasks (an epoll set each), a sample of viewers read on arrival for latency, frames scanned
//! for a few byte patterns instead of parsed as JSON, a 1-2 thread runtime.
//!
//! ```text
//! loadgen --redis-url redis://127.0.0.1:56379 fanout --viewers 1000 --rate 50   # 50,000 frames/s
//! loadgen --redis-url redis://127.0.0.1:56379 fanout --viewers 1000 --rate 0    # the most it sustains
//! loadgen --redis-url redis://127.0.0.1:56379 many-jobs --viewers 10000 --rate 50000
//! loadgen ingest --batch 1000 --records 200000 --concurrency 4
//! loadgen catch-up --records 100000
//! loadgen idle --connections 10000 --hold 10
//! loadgen --small --fail-on-loss fanout                  # CI smoke test, a few seconds
//! ```
//!
//! fanout / many-jobs: every viewer connects with `tail=0` and the publisher starts once all
//! of them got `history_end`, so each viewer expects every record of its job. Record `c` goes to
//! job `c % jobs` with `meta: {"r": run id, "n": c / jobs, "t": publish time in ns}`; a viewer
//! counts the distinct `n` of this run (lost = expected - distinct), a second `n` is a
//! duplicate; records of other producers or runs are counted as foreign, control frames
//! separately (`dropped` counts summed as `dropped_reported`, `gap` frames counted).
//!
//! Exit status: 0 done (and, with `--fail-on-loss`, nothing lost or duplicated), 1 a check
//! failed with `--fail-on-loss`, 2 the scenario could not run.

mod hist;
mod http;
mod procfs;
mod publish;
mod reader;
mod report;
mod scenario;
mod util;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::procfs::Gateway;
use crate::scenario::{Env, StreamKind};
use crate::util::{HttpTarget, Progress};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load generator for the session log gateway: WebSocket fan-out, many jobs, ingest, catch-up, idle connections",
    after_help = "Small sizes for a CI smoke test (a few seconds each): --small, or the [--small: …] defaults shown per flag.\n\
                  With --fail-on-loss the exit status is 1 when a frame was lost or duplicated (fanout, many-jobs, catch-up), \
                  a request failed (ingest) or a connection failed or was closed (idle); 2 when the scenario could not run."
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The gateway's base URL (http:// only)
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "LOADGEN_URL"
    )]
    pub url: String,
    /// Redis the gateway subscribes to (for --via redis)
    #[arg(
        long,
        global = true,
        default_value = "redis://127.0.0.1:6379",
        env = "LOADGEN_REDIS_URL"
    )]
    pub redis_url: String,
    /// Job N's Redis channel is {prefix}:N
    #[arg(long, global = true, default_value = "session-logs")]
    pub channel_prefix: String,
    /// Viewer token, sent as `Authorization: Bearer …` with every WebSocket handshake
    #[arg(long, global = true, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Ingest (service) token, sent as `Authorization: Bearer …` with every POST
    #[arg(
        long,
        global = true,
        env = "LOADGEN_INGEST_TOKEN",
        hide_env_values = true
    )]
    pub ingest_token: Option<String>,
    /// Spread WebSocket connections over this many loopback source addresses (127.0.0.1,
    /// 127.0.0.2, …), for per-address connection caps and port ranges [against a loopback
    /// --url: one per 500 connections]
    #[arg(long, global = true)]
    pub source_ips: Option<usize>,
    /// Gateway process id(s) whose CPU time and RSS are measured (comma-separated); default:
    /// the process(es) listening on the --url port
    #[arg(long, global = true, value_delimiter = ',')]
    pub gateway_pid: Vec<i32>,
    /// Print one JSON object with all results instead of the table
    #[arg(long, global = true)]
    pub json: bool,
    /// Tokio worker threads of the load client (it shares the cores with the gateway)
    #[arg(long, global = true, default_value_t = 1)]
    pub client_threads: usize,
    /// Small parameters that finish in a few seconds (explicit flags still win)
    #[arg(long, global = true)]
    pub small: bool,
    /// Exit with status 1 when a check fails (lost or duplicated frames, …)
    #[arg(long, global = true)]
    pub fail_on_loss: bool,
    /// With --fail-on-loss: frames lost are no failure when the gateway reported exactly as
    /// many as dropped ({"control":"dropped"}, records without seq only)
    #[arg(long, global = true)]
    pub allow_reported_drops: bool,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N viewers on one job; a publisher sends records at a given rate; loss, duplicates,
    /// frames/s, publish→receive latency, gateway CPU per frame
    Fanout(FanoutArgs),
    /// N viewers each on its own job; records spread over the jobs; same report
    ManyJobs(ManyJobsArgs),
    /// POST batches through the REST route: records/s persisted, request latency, errors
    Ingest(IngestArgs),
    /// Ingest N records into a fresh job, then time one viewer with after_seq=0 until
    /// history_end; checks seq 1..N exactly once, in order
    CatchUp(CatchUpArgs),
    /// Open N WebSocket connections that do nothing; gateway RSS per connection (measure a
    /// freshly started gateway: its RSS does not shrink back after earlier load)
    Idle(IdleArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// PUBLISH straight to Redis (records without seq; the gateway may shed them when a
    /// viewer falls behind, and says so with a "dropped" frame)
    Redis,
    /// POST /api/v1/logs (records with seq, stored; never lost)
    Ingest,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Redis => "redis",
            Via::Ingest => "ingest",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StreamOpts {
    /// WebSocket viewers [fanout: 1000, many-jobs: 10000; --small: 50 / 200]
    #[arg(long)]
    pub viewers: Option<usize>,
    /// Records published per second, all jobs together (each is delivered to every viewer of
    /// its job); 0: as fast as the viewers keep up, see --window [50000; --small: 1000 / 2000]
    #[arg(long)]
    pub rate: Option<u64>,
    /// Instead of --rate: the delivered frames per second wanted (rate = this / viewers per job)
    #[arg(long, conflicts_with = "rate")]
    pub frame_rate: Option<u64>,
    /// Seconds of publishing [10; --small: 2]
    #[arg(long)]
    pub duration: Option<f64>,
    /// Size of one record's JSON, in bytes (the message is padded)
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Where records are published
    #[arg(long, value_enum, default_value_t = Via::Redis)]
    pub via: Via,
    /// Viewers read on arrival and timed publish→receive [20; --small: 10]
    #[arg(long)]
    pub sample: Option<usize>,
    /// The other viewers are drained this often (ms): more frames per read, less client CPU
    /// [the time a viewer takes to get ~50 frames, from 5 to 1000 ms; 50 with --rate 0]
    #[arg(long)]
    pub batch_interval_ms: Option<u64>,
    /// With --rate 0: publishing waits while viewers are on average this many records behind
    /// (well below the gateway's per-viewer queue, so nothing is shed; the latency measured
    /// then includes that queue); 0: flood with no limit
    #[arg(long, default_value_t = 250)]
    pub window: u64,
    /// Seconds to wait after publishing for the last frames (ends early when all arrived or
    /// nothing arrived for 1 s, or 3 batch intervals)
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// WebSocket handshakes in flight at once
    #[arg(long, default_value_t = 200)]
    pub connect_batch: usize,
    /// With --via ingest: concurrent POST connections
    #[arg(long, default_value_t = 1)]
    pub ingest_connections: usize,
    /// With --via ingest: most records per request
    #[arg(long, default_value_t = 1000)]
    pub ingest_batch: u64,
    /// Batch reader tasks [--client-threads]
    #[arg(long)]
    pub readers: Option<usize>,
    /// Write every sampled latency to this CSV (ms since publishing started, latency ms)
    #[arg(long)]
    pub latency_csv: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub stream: StreamOpts,
    /// The job (default: a random one from 1,000,000,000)
    #[arg(long)]
    pub job: Option<i64>,
}

#[derive(Args, Debug, Clone)]
pub struct ManyJobsArgs {
    #[command(flatten)]
    pub stream: StreamOpts,
    /// Jobs are job-base .. job-base+N-1 (default: a random base from 1,000,000,000)
    #[arg(long)]
    pub job_base: Option<i64>,
}

#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    /// Records per request [1000; --small: 500]
    #[arg(long)]
    pub batch: Option<u64>,
    /// Records in all [200000; --small: 5000]
    #[arg(long)]
    pub records: Option<u64>,
    /// Requests in flight [4; --small: 2]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Size of one record's JSON, in bytes
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Batches go to this many jobs in turn (each job's seq counter is one row: one job
    /// serialises concurrent requests)
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// First job (default: a random one from 1,000,000,000)
    #[arg(long)]
    pub job_base: Option<i64>,
    /// Stop sending new requests after this many seconds
    #[arg(long)]
    pub duration: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct CatchUpArgs {
    /// Records stored before the viewer joins [100000; --small: 5000]
    #[arg(long)]
    pub records: Option<u64>,
    /// The job (default: a fresh random one from 1,000,000,000; records already there are
    /// expected too)
    #[arg(long)]
    pub job: Option<i64>,
    /// Records per ingest request
    #[arg(long, default_value_t = 1000)]
    pub batch: u64,
    /// Ingest requests in flight
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Size of one record's JSON, in bytes
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Give up after this many seconds (ingest, and again for the viewer)
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connections [10000; --small: 200]
    #[arg(long)]
    pub connections: Option<usize>,
    /// Seconds to hold them open (answering pings) [10; --small: 1]
    #[arg(long)]
    pub hold: Option<f64>,
    /// All on one job (default: a job each)
    #[arg(long)]
    pub same_job: bool,
    /// First job (default: a random one from 1,000,000,000)
    #[arg(long)]
    pub job_base: Option<i64>,
    /// WebSocket handshakes in flight at once
    #[arg(long, default_value_t = 200)]
    pub connect_batch: usize,
    /// Seconds between the last history_end and the RSS reading
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
}

async fn run(cli: Cli) -> anyhow::Result<scenario::Outcome> {
    let http = HttpTarget::parse(&cli.common.url).await?;
    let gw = Gateway::resolve(&cli.common.gateway_pid, http.addr.port());
    let env = Env {
        progress: Progress::enabled(cli.common.json),
        common: cli.common.clone(),
        http,
        gw,
    };
    if env.gw.pids.is_empty() && !env.common.json {
        eprintln!(
            "loadgen: no gateway process found listening on port {} (pass --gateway-pid): CPU and RSS are not measured",
            env.http.addr.port()
        );
    }
    match &cli.scenario {
        Scenario::Fanout(a) => {
            scenario::run_stream(&env, StreamKind::Fanout, &a.stream, a.job, None).await
        }
        Scenario::ManyJobs(a) => {
            scenario::run_stream(&env, StreamKind::ManyJobs, &a.stream, None, a.job_base).await
        }
        Scenario::Ingest(a) => scenario::run_ingest(&env, a).await,
        Scenario::CatchUp(a) => scenario::run_catch_up(&env, a).await,
        Scenario::Idle(a) => scenario::run_idle(&env, a).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::init_clock();
    let json = cli.common.json;
    let fail_on_loss = cli.common.fail_on_loss;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.client_threads.clamp(1, 64))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(run(cli));
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(outcome) => {
            if json {
                println!("{}", outcome.report);
            } else {
                print!("{}", report::human(&outcome.report));
            }
            if fail_on_loss && !outcome.failures.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": format!("{e:#}") })
                );
            }
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
