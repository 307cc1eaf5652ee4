//! The scenarios: fan-out and many-jobs (one runner), ingest, catch-up, idle. Each returns one
//! JSON object; `report` turns it into the table.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::hist::Hist;
use crate::http::HttpConn;
use crate::procfs::{raise_nofile, round3, self_cpu_s, Gateway};
use crate::publish::{
    ingest_body_job, publish_ingest, publish_redis, redis_connect, IngestRoute, Pace, Plan,
};
use crate::reader::{run_sample, BatchReader, Shared};
use crate::util::{bar, now_ns, si, HttpTarget, Progress, RedisTarget, Rng};
use crate::ws::{self, SeqCheck, Viewer};
use crate::{CatchUpArgs, Common, IdleArgs, IngestArgs, StreamOpts, Via};

pub struct Env {
    pub common: Common,
    pub http: HttpTarget,
    pub gw: Gateway,
    pub progress: bool,
}

/// Connections per loopback source address when spreading automatically (gateways often cap
/// connections per client address; ours allows 1,000 by default).
const PER_SOURCE: usize = 500;

impl Env {
    fn dial(&self) -> ws::Dial<'_> {
        ws::Dial {
            addr: self.http.addr,
            host: &self.http.host_header,
            token: self.common.token.as_deref(),
            timeout: Duration::from_secs(20),
        }
    }

    /// Source addresses for `count` connections: none given (the kernel picks) unless
    /// `--source-ips` says otherwise or, against a loopback IPv4 target, more than
    /// `PER_SOURCE` connections are opened: then 127.0.0.1, 127.0.0.2, …
    fn sources(&self, count: usize) -> Result<Vec<Option<IpAddr>>> {
        let target = self.http.addr.ip();
        let loopback_v4 = target.is_ipv4() && target.is_loopback();
        let n = match self.common.source_ips {
            Some(n) => n.max(1),
            None if loopback_v4 => count.div_ceil(PER_SOURCE).max(1),
            None => 1,
        };
        if n == 1 {
            return Ok(vec![None]);
        }
        if !loopback_v4 {
            bail!("--source-ips above 1 needs a loopback IPv4 --url (127.0.0.0/8)");
        }
        Ok((0..n as u32)
            .map(|k| Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0001u32 + k))))
            .collect())
    }
}

/// The outcome of a scenario: the report, and whether it passed its checks.
pub struct Outcome {
    pub report: Value,
    pub failures: Vec<String>,
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

fn warn(env: &Env, msg: &str) {
    if !env.common.json || std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("loadgen: {msg}");
    }
}

fn check_nofile(env: &Env, sockets: usize) {
    let want = sockets as u64 + 256;
    let got = raise_nofile(want);
    if got < want {
        warn(
            env,
            &format!("RLIMIT_NOFILE is {got}, below the {want} descriptors needed: some connections will fail"),
        );
    }
}

/// A WebSocket handshake's outcome: the stream and the bytes read past the response.
type Handshake = Result<(TcpStream, Vec<u8>)>;

struct Opened {
    conns: Vec<(usize, TcpStream, Vec<u8>)>,
    /// Client source addresses used.
    sources: usize,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

/// Opens `count` WebSocket viewers, `concurrency` handshakes at a time.
async fn open_viewers(
    env: &Env,
    count: usize,
    concurrency: usize,
    seed: u64,
    path: impl Fn(usize) -> String,
) -> Result<Opened> {
    let sources = env.sources(count)?;
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let done = done.clone();
        Progress::start(env.progress, move || {
            let d = done.load(Relaxed);
            format!(
                "connecting {} {d}/{count}",
                bar(d as f64 / count.max(1) as f64)
            )
        })
    };
    let start = Instant::now();
    let dial = env.dial();
    let dial = &dial;
    let sources = &sources;
    let results: Vec<(usize, Handshake)> = futures_util::stream::iter(0..count)
        .map(|i| {
            let p = path(i);
            let done = done.clone();
            async move {
                let mut rng = Rng::seeded(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9));
                let source = sources[i % sources.len()];
                let r = ws::connect(dial, &p, source, &mut rng).await;
                done.fetch_add(1, Relaxed);
                (i, r)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    progress.finish().await;
    let mut opened = Opened {
        conns: Vec::with_capacity(count),
        sources: 0,
        errors: 0,
        first_error: None,
        elapsed: start.elapsed(),
    };
    for (i, r) in results {
        match r {
            Ok((s, left)) => opened.conns.push((i, s, left)),
            Err(e) => {
                opened.errors += 1;
                opened.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    opened.conns.sort_by_key(|c| c.0);
    opened.sources = sources.len();
    Ok(opened)
}

/// Waits until `want` viewers got `history_end` (or `timeout`); returns how many did.
async fn wait_ready(env: &Env, shared: &Shared, want: u64, timeout: Duration) -> u64 {
    let progress = {
        let ready = Arc::new(AtomicU64::new(0));
        let r2 = ready.clone();
        let p = Progress::start(env.progress, move || {
            format!("waiting for history_end {}/{want}", r2.load(Relaxed))
        });
        (p, ready)
    };
    let deadline = Instant::now() + timeout;
    loop {
        let r = shared.ready.load(Relaxed);
        progress.1.store(r, Relaxed);
        if r >= want || Instant::now() >= deadline {
            progress.0.finish().await;
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends a close frame on every socket, gives the server a moment to answer, drops them.
async fn close_all(std_socks: Vec<std::net::TcpStream>, tokio_socks: Vec<TcpStream>) {
    let frame = ws::close_frame();
    for s in &std_socks {
        let _ = (&*s).write(&frame);
    }
    for s in &tokio_socks {
        let _ = s.try_write(&frame);
    }
    if !std_socks.is_empty() || !tokio_socks.is_empty() {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn client_report(cpu_before: f64, units: u64, unit: &str) -> Value {
    let cpu = self_cpu_s() - cpu_before;
    json!({
        "cpu_s": round3(cpu),
        format!("us_per_{unit}"): (units > 0).then(|| round3(cpu * 1e6 / units as f64)),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Fanout,
    ManyJobs,
}

/// fanout (all viewers on one job) and many-jobs (a job per viewer).
pub async fn run_stream(
    env: &Env,
    kind: StreamKind,
    o: &StreamOpts,
    job: Option<i64>,
    job_base: Option<i64>,
) -> Result<Outcome> {
    let small = env.common.small;
    let name = match kind {
        StreamKind::Fanout => "fanout",
        StreamKind::ManyJobs => "many-jobs",
    };
    let (big_v, small_v, big_rate, small_rate) = match kind {
        StreamKind::Fanout => (1000, 50, 50_000, 1000),
        StreamKind::ManyJobs => (10_000, 200, 50_000, 2000),
    };
    let viewers = o
        .viewers
        .unwrap_or(if small { small_v } else { big_v })
        .max(1);
    let duration = o.duration.unwrap_or(if small { 2.0 } else { 10.0 });
    let sample = o.sample.unwrap_or(if small { 10 } else { 20 }).min(viewers);
    let mut rng = Rng::new();
    let run_id = rng.next_u64() % 1_000_000_000_000;
    let jobs: Vec<i64> = match kind {
        StreamKind::Fanout => vec![job.unwrap_or_else(|| rng.high_job_id())],
        StreamKind::ManyJobs => {
            let base = job_base.unwrap_or_else(|| rng.high_job_id());
            (0..viewers).map(|i| base + i as i64).collect()
        }
    };
    let job_of = |i: usize| match kind {
        StreamKind::Fanout => 0,
        StreamKind::ManyJobs => i,
    };
    let viewers_per_job = viewers as f64 / jobs.len() as f64;
    let rate = match (o.rate, o.frame_rate) {
        (Some(r), _) => r,
        (None, Some(f)) => ((f as f64 / viewers_per_job).ceil() as u64).max(1),
        (None, None) => {
            if small {
                small_rate
            } else {
                big_rate
            }
        }
    };
    let redis = match o.via {
        Via::Redis => {
            let target = RedisTarget::parse(&env.common.redis_url).await?;
            // Fail before connecting the viewers when Redis is not there.
            drop(redis_connect(&target).await?);
            Some(target)
        }
        Via::Ingest => None,
    };
    check_nofile(env, viewers);

    // Connect everyone, then hand the sockets to the readers.
    let prefix = env.http.prefix.clone();
    let opened = open_viewers(env, viewers, o.connect_batch, run_id, |i| {
        format!("{prefix}/ws/jobs/{}?tail=0", jobs[job_of(i)])
    })
    .await?;
    let connected = opened.conns.len();
    if connected == 0 {
        bail!(
            "no viewer could connect: {}",
            opened.first_error.unwrap_or_default()
        );
    }
    let shared = Arc::new(Shared::new(run_id));
    let nreaders = o.readers.unwrap_or(env.common.client_threads).max(1);
    let mut batch_readers = (0..nreaders)
        .map(|_| BatchReader::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    let connected_jobs: Vec<usize> = opened.conns.iter().map(|c| job_of(c.0)).collect();
    let mut samples = Vec::new();
    let mut sampled = 0;
    // Sampled viewers are spread evenly over the connection order.
    let is_sample = |i: usize| (i * sample) % viewers < sample;
    for (k, (i, stream, left)) in opened.conns.into_iter().enumerate() {
        let v = Viewer::new(job_of(i));
        if is_sample(i) {
            sampled += 1;
            samples.push(tokio::spawn(run_sample(
                stream,
                left,
                v,
                shared.clone(),
                false,
                o.latency_csv.is_some(),
            )));
        } else {
            batch_readers[k % nreaders].add(stream, left, v)?;
        }
    }
    let interval_ms = o.batch_interval_ms.unwrap_or_else(|| {
        // Records a viewer gets per second (rate 0: assume ~1,000).
        let per_viewer = if rate > 0 {
            rate as f64 / jobs.len() as f64
        } else {
            1000.0
        };
        // Aim at ~50 frames per read, within 5..1000 ms.
        (50.0 * 1000.0 / per_viewer).clamp(5.0, 1000.0) as u64
    });
    let interval = Duration::from_millis(interval_ms);
    let readers: Vec<_> = batch_readers
        .into_iter()
        .filter(|b| b.len() > 0)
        .map(|b| tokio::spawn(b.run(shared.clone(), interval)))
        .collect();
    let ready = wait_ready(env, &shared, connected as u64, secs(30.0)).await;

    // Publish.
    let plan = Arc::new(Plan::new(
        jobs.clone(),
        &env.common.channel_prefix,
        o.payload_bytes,
        run_id,
    ));
    let pace = Pace {
        rate,
        duration: secs(duration),
        window: o.window,
        viewers_per_job,
    };
    let sent = Arc::new(AtomicU64::new(0));
    let gw_before = env.gw.snap();
    let cpu_before = self_cpu_s();
    let pub_start_ns = now_ns();
    let progress = {
        let (shared, sent) = (shared.clone(), sent.clone());
        Progress::start(env.progress, move || {
            let el = (now_ns() - pub_start_ns) as f64 / 1e9;
            let frames = shared.frames.load(Relaxed);
            let phase = if el < duration {
                "publishing"
            } else {
                "draining"
            };
            format!(
                "{name} {} {el:.1}/{duration:.0}s {phase}: sent {} delivered {} ({}/s) dropped {}",
                bar(el / duration.max(0.001)),
                si(sent.load(Relaxed) as f64),
                si(frames as f64),
                si(frames as f64 / el.max(0.001)),
                si(shared.dropped.load(Relaxed) as f64),
            )
        })
    };
    let published = match &redis {
        Some(target) => {
            publish_redis(target, plan.clone(), pace, shared.clone(), sent.clone()).await
        }
        None => {
            let route = IngestRoute {
                http: &env.http,
                conns: o.ingest_connections,
                batch: o.ingest_batch,
                token: env.common.ingest_token.as_deref(),
            };
            publish_ingest(route, plan.clone(), pace, shared.clone(), sent.clone()).await
        }
    };
    let published = match published {
        Ok(p) => p,
        Err(e) => {
            shared.cancel.cancel();
            progress.finish().await;
            return Err(e);
        }
    };

    // Wait for the last frames: until everything expected arrived (or was reported dropped),
    // nothing arrived for a second, or the drain time is up.
    let expected_per_job: Vec<u64> = (0..jobs.len())
        .map(|j| plan.expected(j, published.claimed, &published.failed))
        .collect();
    let target: u64 = connected_jobs.iter().map(|&j| expected_per_job[j]).sum();
    let drain_deadline = Instant::now() + secs(o.drain);
    // Batch readers report once per interval: "nothing more arrives" needs a few of them.
    let quiet = Duration::from_secs(1).max(interval * 3);
    let mut last_frames = shared.frames.load(Relaxed);
    let mut last_change = Instant::now();
    loop {
        let got = shared.distinct.load(Relaxed) + shared.dropped.load(Relaxed);
        if got >= target || Instant::now() >= drain_deadline {
            break;
        }
        let f = shared.frames.load(Relaxed);
        if f != last_frames {
            last_frames = f;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gw_after = env.gw.snap();
    progress.finish().await;
    shared.cancel.cancel();

    // Collect.
    let mut all: Vec<Viewer> = Vec::with_capacity(connected);
    let mut hist = Hist::default();
    if o.latency_csv.is_some() {
        hist.trace = Some(Vec::new());
    }
    let mut tokio_socks = Vec::new();
    let mut std_socks = Vec::new();
    // When the last frame arrived: sampled viewers know it exactly; batch-read viewers know
    // it to within one batch interval.
    let mut last_rx_ns = 0;
    for h in samples {
        let s = h.await?;
        hist.merge(&s.hist);
        last_rx_ns = last_rx_ns.max(s.v.last_rx_ns);
        all.push(s.v);
        tokio_socks.push(s.stream);
    }
    let interval_ns = interval.as_nanos() as u64;
    for h in readers {
        for c in h.await? {
            last_rx_ns = last_rx_ns.max(c.v.last_rx_ns.saturating_sub(interval_ns));
            all.push(c.v);
            std_socks.push(c.sock);
        }
    }
    if let (Some(path), Some(trace)) = (&o.latency_csv, hist.trace.as_mut()) {
        trace.sort_unstable();
        let mut csv = String::from("received_ms,latency_ms\n");
        for (at, lat) in trace.iter() {
            let at_ms = at.saturating_sub(pub_start_ns) as f64 / 1e6;
            csv.push_str(&format!("{at_ms:.3},{:.3}\n", *lat as f64 / 1e6));
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    let frames: u64 = all.iter().map(|v| v.frames).sum();
    let client = client_report(cpu_before, frames, "frame");
    close_all(std_socks, tokio_socks).await;

    let mut expected = 0;
    let mut distinct = 0;
    let mut lost = 0;
    let mut unexplained = 0;
    let mut duplicated = 0;
    let mut out_of_order = 0;
    let mut dropped = 0;
    let mut gaps = 0;
    let mut controls = 0;
    let mut foreign = 0;
    let mut closed = 0;
    let mut viewers_losing = 0;
    let mut close_codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut min_distinct = u64::MAX;
    let mut max_distinct = 0;
    for v in &all {
        let e = expected_per_job[v.job_idx];
        let l = e.saturating_sub(v.distinct);
        expected += e;
        distinct += v.distinct;
        lost += l;
        unexplained += l.saturating_sub(v.dropped_reported);
        viewers_losing += u64::from(l > 0);
        duplicated += v.duplicated;
        out_of_order += v.out_of_order;
        dropped += v.dropped_reported;
        gaps += v.gaps;
        controls += v.controls;
        foreign += v.foreign;
        min_distinct = min_distinct.min(v.distinct);
        max_distinct = max_distinct.max(v.distinct);
        if v.is_closed() {
            closed += 1;
            let code = v
                .close_code
                .map_or_else(|| "eof".to_string(), |c| c.to_string());
            *close_codes.entry(code).or_default() += 1;
        }
    }
    let window_s = last_rx_ns.saturating_sub(pub_start_ns) as f64 / 1e9;
    let per_s = if window_s > 0.0 {
        frames as f64 / window_s
    } else {
        0.0
    };
    let publish_rate = published.claimed as f64 / published.elapsed.as_secs_f64().max(1e-9);

    let mut failures = Vec::new();
    if opened.errors > 0 {
        failures.push(format!(
            "{} viewers failed to connect: {}",
            opened.errors,
            opened.first_error.clone().unwrap_or_default()
        ));
    }
    if ready < connected as u64 {
        failures.push(format!(
            "{} viewers got no history_end within 30 s",
            connected as u64 - ready
        ));
    }
    if published.errors > 0 {
        failures.push(format!(
            "{} publish errors: {}",
            published.errors,
            published.first_error.clone().unwrap_or_default()
        ));
    }
    if published.zero_receivers > 0 {
        failures.push(format!(
            "{} PUBLISHes reached no subscriber (the gateway was not subscribed then: another Redis, or reconnecting)",
            published.zero_receivers
        ));
    }
    if duplicated > 0 {
        failures.push(format!("{duplicated} duplicated frames"));
    }
    if lost > 0 && !(env.common.allow_reported_drops && unexplained == 0) {
        failures.push(format!(
            "{lost} frames lost ({dropped} reported dropped by the gateway, {unexplained} not; {gaps} gap frames)"
        ));
    }

    let latency = hist.to_json_ms();
    let params_text = format!(
        "{viewers} viewers, {} job{}, {} rec/s, {duration} s, {}",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" },
        if rate == 0 {
            if o.window == 0 {
                "max (flood)".to_string()
            } else {
                format!("max (window {})", o.window)
            }
        } else {
            rate.to_string()
        },
        o.via.as_str()
    );
    let mut report = json!({
        "scenario": name,
        "params_text": params_text,
        "params": {
            "url": env.common.url,
            "via": o.via.as_str(),
            "viewers": viewers,
            "jobs": jobs.len(),
            "first_job": jobs[0],
            "rate": rate,
            "duration_s": duration,
            "payload_bytes": o.payload_bytes,
            "sample_viewers": sampled,
            "batch_interval_ms": interval_ms,
            "client_threads": env.common.client_threads,
            "readers": nreaders,
            "run_id": run_id,
        },
        "connected": connected,
        "connect_errors": opened.errors,
        "source_ips": opened.sources,
        "connect_s": round3(opened.elapsed.as_secs_f64()),
        "not_ready": connected as u64 - ready.min(connected as u64),
        "sent": published.claimed,
        "publish_rate": publish_rate.round(),
        "publish_errors": published.errors,
        "expected": expected,
        "delivered": frames,
        "distinct": distinct,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "dropped_reported": dropped,
        "lost_unexplained": unexplained,
        "viewers_with_loss": viewers_losing,
        "min_per_viewer": if all.is_empty() { 0 } else { min_distinct },
        "max_per_viewer": max_distinct,
        "gaps_reported": gaps,
        "control_frames": controls,
        "foreign_frames": foreign,
        "viewers_closed": closed,
        "close_codes": close_codes,
        "elapsed_s": round3(window_s),
        "per_s": per_s.round(),
        "latency_ms": latency,
        "gateway": env.gw.report(gw_before, gw_after, frames, "frame"),
        "client": client,
        "ok": failures.is_empty(),
        "failures": failures,
    });
    if rate == 0 {
        report["params"]["window"] = json!(o.window);
    }
    Ok(Outcome { report, failures })
}

struct IngestStats {
    persisted: u64,
    requests: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    hist: Hist,
    elapsed: Duration,
}

/// Posts `records` records in batches of `batch` on `concurrency` connections; batch `b`
/// goes to job `b % jobs`.
async fn ingest_records(
    env: &Env,
    plan: Arc<Plan>,
    records: u64,
    batch: u64,
    concurrency: usize,
    max: Duration,
    label: &'static str,
) -> IngestStats {
    let batch = batch.max(1);
    let nbatches = records.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let persisted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let progress = {
        let persisted = persisted.clone();
        Progress::start(env.progress, move || {
            let p = persisted.load(Relaxed);
            let el = start.elapsed().as_secs_f64();
            format!(
                "{label} {} {}/{} ({}/s)",
                bar(p as f64 / records.max(1) as f64),
                si(p as f64),
                si(records as f64),
                si(p as f64 / el.max(0.001))
            )
        })
    };
    let merged = Arc::new(Mutex::new(IngestStats {
        persisted: 0,
        requests: 0,
        errors: BTreeMap::new(),
        first_error: None,
        hist: Hist::default(),
        elapsed: Duration::ZERO,
    }));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (plan, next, persisted, merged) = (
            plan.clone(),
            next.clone(),
            persisted.clone(),
            merged.clone(),
        );
        let mut conn = HttpConn::new(&env.http, env.common.ingest_token.as_deref());
        tasks.push(tokio::spawn(async move {
            let mut hist = Hist::default();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut first_error = None;
            let mut requests = 0;
            let mut last_done = start;
            let mut body = Vec::with_capacity(1 << 20);
            let jobs = plan.jobs.len() as u64;
            loop {
                if start.elapsed() >= max {
                    break;
                }
                let b = next.fetch_add(1, Relaxed);
                if b >= nbatches {
                    break;
                }
                let count = batch.min(records - b * batch);
                ingest_body_job(
                    &plan,
                    (b % jobs) as usize,
                    (b / jobs) * batch,
                    count,
                    &mut body,
                );
                let t0 = Instant::now();
                let r = conn.post("/api/v1/logs", "application/json", &body).await;
                hist.record(t0.elapsed().as_nanos() as u64);
                requests += 1;
                match r {
                    Ok(resp) if resp.status == 201 => {
                        persisted.fetch_add(count, Relaxed);
                    }
                    Ok(resp) => {
                        *errors.entry(resp.status.to_string()).or_default() += 1;
                        first_error.get_or_insert_with(|| {
                            format!(
                                "{}: {}",
                                resp.status,
                                String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)])
                            )
                        });
                    }
                    Err(e) => {
                        *errors.entry("io".into()).or_default() += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                last_done = Instant::now();
            }
            let mut m = merged.lock().expect("not poisoned");
            m.hist.merge(&hist);
            m.requests += requests;
            for (k, v) in errors {
                *m.errors.entry(k).or_default() += v;
            }
            if m.first_error.is_none() {
                m.first_error = first_error;
            }
            m.elapsed = m.elapsed.max(last_done.duration_since(start));
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    progress.finish().await;
    let mut m = std::mem::replace(
        &mut *merged.lock().expect("not poisoned"),
        IngestStats {
            persisted: 0,
            requests: 0,
            errors: BTreeMap::new(),
            first_error: None,
            hist: Hist::default(),
            elapsed: Duration::ZERO,
        },
    );
    m.persisted = persisted.load(Relaxed);
    m
}

pub async fn run_ingest(env: &Env, o: &IngestArgs) -> Result<Outcome> {
    let small = env.common.small;
    let batch = o.batch.unwrap_or(if small { 500 } else { 1000 });
    let records = o.records.unwrap_or(if small { 5000 } else { 200_000 });
    let concurrency = o.concurrency.unwrap_or(if small { 2 } else { 4 });
    let mut rng = Rng::new();
    let run_id = rng.next_u64() % 1_000_000_000_000;
    let base = o.job_base.unwrap_or_else(|| rng.high_job_id());
    let jobs: Vec<i64> = (0..o.jobs.max(1)).map(|i| base + i as i64).collect();
    let plan = Arc::new(Plan::new(
        jobs.clone(),
        &env.common.channel_prefix,
        o.payload_bytes,
        run_id,
    ));
    let gw_before = env.gw.snap();
    let cpu_before = self_cpu_s();
    let stats = ingest_records(
        env,
        plan,
        records,
        batch,
        concurrency,
        secs(o.duration.unwrap_or(600.0)),
        "ingest",
    )
    .await;
    let gw_after = env.gw.snap();
    let per_s = stats.persisted as f64 / stats.elapsed.as_secs_f64().max(1e-9);
    let error_count: u64 = stats.errors.values().sum();
    let mut failures = Vec::new();
    if error_count > 0 {
        failures.push(format!(
            "{error_count} requests failed: {}",
            stats.first_error.clone().unwrap_or_default()
        ));
    }
    if stats.persisted < records {
        failures.push(format!(
            "{} of {records} records persisted",
            stats.persisted
        ));
    }
    let report = json!({
        "scenario": "ingest",
        "params_text": format!("{records} records, batches of {batch}, {concurrency} concurrent, {} job{}, {} B", jobs.len(), if jobs.len() == 1 { "" } else { "s" }, o.payload_bytes),
        "params": {
            "url": env.common.url,
            "records": records,
            "batch": batch,
            "concurrency": concurrency,
            "jobs": jobs.len(),
            "first_job": jobs[0],
            "payload_bytes": o.payload_bytes,
            "client_threads": env.common.client_threads,
        },
        "sent": records,
        "delivered": stats.persisted,
        "persisted": stats.persisted,
        "requests": stats.requests,
        "errors": error_count,
        "errors_by_status": stats.errors,
        "first_error": stats.first_error,
        "elapsed_s": round3(stats.elapsed.as_secs_f64()),
        "per_s": per_s.round(),
        "latency_ms": stats.hist.to_json_ms(),
        "gateway": env.gw.report(gw_before, gw_after, stats.persisted, "record"),
        "client": client_report(cpu_before, stats.persisted, "record"),
        "ok": failures.is_empty(),
        "failures": failures,
    });
    Ok(Outcome { report, failures })
}

pub async fn run_catch_up(env: &Env, o: &CatchUpArgs) -> Result<Outcome> {
    let small = env.common.small;
    let records = o.records.unwrap_or(if small { 5000 } else { 100_000 });
    let mut rng = Rng::new();
    let run_id = rng.next_u64() % 1_000_000_000_000;
    let job = o.job.unwrap_or_else(|| rng.high_job_id());
    let prefix = env.http.prefix.clone();
    let dial = env.dial();

    // What the job already holds (0 for a fresh one).
    let (probe, left) = ws::connect(
        &dial,
        &format!("{prefix}/ws/jobs/{job}?tail=0"),
        None,
        &mut rng,
    )
    .await?;
    let probe_shared = Arc::new(Shared::new(run_id));
    let probed = tokio::time::timeout(
        Duration::from_secs(20),
        run_sample(probe, left, Viewer::new(0), probe_shared, true, false),
    )
    .await;
    let prior = match probed {
        Ok(s) => {
            let last = s.v.history_last_seq;
            close_all(Vec::new(), vec![s.stream]).await;
            // A server whose history_end has no last_seq: assume the job is fresh.
            last.unwrap_or(0)
        }
        Err(_) => bail!("job {job}: no history_end within 20 s"),
    };

    let plan = Arc::new(Plan::new(
        vec![job],
        &env.common.channel_prefix,
        o.payload_bytes,
        run_id,
    ));
    let stats = ingest_records(
        env,
        plan,
        records,
        o.batch.max(1),
        o.concurrency.max(1),
        secs(o.timeout),
        "catch-up: ingesting",
    )
    .await;
    if stats.persisted < records {
        bail!(
            "only {} of {records} records were persisted: {}",
            stats.persisted,
            stats.first_error.unwrap_or_default()
        );
    }
    let expected = prior + records;

    let gw_before = env.gw.snap();
    let cpu_before = self_cpu_s();
    let t0 = now_ns();
    let (stream, left) = ws::connect(
        &dial,
        &format!("{prefix}/ws/jobs/{job}?after_seq=0"),
        None,
        &mut rng,
    )
    .await?;
    let t_open = now_ns();
    let shared = Arc::new(Shared::new(run_id));
    let mut v = Viewer::new(0);
    v.seq = Some(SeqCheck::new(expected));
    let progress = {
        let shared = shared.clone();
        Progress::start(env.progress, move || {
            let f = shared.frames.load(Relaxed);
            format!(
                "catch-up: receiving {} {}/{}",
                bar(f as f64 / records.max(1) as f64),
                si(f as f64),
                si(records as f64)
            )
        })
    };
    let run = tokio::spawn(run_sample(stream, left, v, shared.clone(), true, false));
    let out = tokio::select! {
        r = run => Some(r?),
        _ = tokio::time::sleep(secs(o.timeout)) => None,
    };
    shared.cancel.cancel();
    let gw_after = env.gw.snap();
    progress.finish().await;
    let Some(out) = out else {
        bail!("no history_end within {} s", o.timeout);
    };
    let v = out.v;
    close_all(Vec::new(), vec![out.stream]).await;
    let check = v.seq.as_ref().expect("set above");
    let received = v.frames + v.foreign;
    let ms = |t: Option<u64>| t.map(|t| round3(t.saturating_sub(t0) as f64 / 1e6));
    let t_end = v.history_end_ns;
    let t_all = check.complete_ns;
    let lost = expected - check.distinct;
    let exact = lost == 0
        && check.duplicated == 0
        && check.out_of_order == 0
        && check.out_of_range == 0
        && check.missing_seq == 0;
    let mut failures = Vec::new();
    if !exact {
        failures.push(format!(
            "seq 1..{expected} not delivered exactly once in order: {lost} missing, {} duplicated, {} out of order, {} out of range, {} without seq",
            check.duplicated, check.out_of_order, check.out_of_range, check.missing_seq
        ));
    }
    let window_ns = t_all.or(t_end).unwrap_or(t0).saturating_sub(t0);
    let per_s = if window_ns > 0 {
        received as f64 / (window_ns as f64 / 1e9)
    } else {
        0.0
    };
    let report = json!({
        "scenario": "catch-up",
        "params_text": format!("{records} records, job {job}, after_seq=0"),
        "params": {
            "url": env.common.url,
            "records": records,
            "job": job,
            "batch": o.batch,
            "concurrency": o.concurrency,
            "payload_bytes": o.payload_bytes,
        },
        "prior_records": prior,
        "ingest_per_s": (stats.persisted as f64 / stats.elapsed.as_secs_f64().max(1e-9)).round(),
        "sent": expected,
        "delivered": received,
        "distinct": check.distinct,
        "lost": lost,
        "duplicated": check.duplicated,
        "out_of_order": check.out_of_order,
        "out_of_range": check.out_of_range,
        "without_seq": check.missing_seq,
        "exactly_once_in_order": exact,
        "handshake_ms": round3(t_open.saturating_sub(t0) as f64 / 1e6),
        "time_to_all_ms": ms(t_all),
        "time_to_history_end_ms": ms(t_end),
        "per_s": per_s.round(),
        "gateway": env.gw.report(gw_before, gw_after, received, "frame"),
        "client": client_report(cpu_before, received, "frame"),
        "ok": failures.is_empty(),
        "failures": failures,
    });
    Ok(Outcome { report, failures })
}

pub async fn run_idle(env: &Env, o: &IdleArgs) -> Result<Outcome> {
    let small = env.common.small;
    let n = o
        .connections
        .unwrap_or(if small { 200 } else { 10_000 })
        .max(1);
    let hold = o.hold.unwrap_or(if small { 1.0 } else { 10.0 });
    let mut rng = Rng::new();
    let run_id = rng.next_u64() % 1_000_000_000_000;
    let base = o.job_base.unwrap_or_else(|| rng.high_job_id());
    check_nofile(env, n);
    let prefix = env.http.prefix.clone();
    let same = o.same_job;

    let gw_before = env.gw.snap();
    let opened = open_viewers(env, n, o.connect_batch, run_id, |i| {
        let job = if same { base } else { base + i as i64 };
        format!("{prefix}/ws/jobs/{job}?tail=0")
    })
    .await?;
    let connected = opened.conns.len();
    let shared = Arc::new(Shared::new(run_id));
    let nreaders = env.common.client_threads.max(1);
    let mut batch_readers = (0..nreaders)
        .map(|_| BatchReader::new())
        .collect::<std::io::Result<Vec<_>>>()?;
    for (k, (_, stream, left)) in opened.conns.into_iter().enumerate() {
        batch_readers[k % nreaders].add(stream, left, Viewer::new(0))?;
    }
    let readers: Vec<_> = batch_readers
        .into_iter()
        .filter(|b| b.len() > 0)
        .map(|b| tokio::spawn(b.run(shared.clone(), Duration::from_millis(100))))
        .collect();
    let ready = wait_ready(env, &shared, connected as u64, secs(30.0)).await;
    tokio::time::sleep(secs(o.settle)).await;
    let gw_connected = env.gw.snap();
    let progress = {
        let shared = shared.clone();
        let start = Instant::now();
        Progress::start(env.progress, move || {
            let el = start.elapsed().as_secs_f64();
            format!(
                "idle {} {el:.1}/{hold:.0}s {connected} open, {} closed",
                bar(el / hold.max(0.001)),
                shared.closed.load(Relaxed)
            )
        })
    };
    tokio::time::sleep(secs(hold)).await;
    let gw_after = env.gw.snap();
    progress.finish().await;
    let closed_during = shared.closed.load(Relaxed);
    shared.cancel.cancel();
    let mut std_socks = Vec::new();
    let mut pings = 0;
    for h in readers {
        for c in h.await? {
            pings += c.v.pings;
            std_socks.push(c.sock);
        }
    }
    close_all(std_socks, Vec::new()).await;

    let mb = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
    let per_conn = match (gw_before, gw_connected) {
        (Some(b), Some(c)) if connected > 0 => {
            Some(((c.rss as f64 - b.rss as f64) / connected as f64).round())
        }
        _ => None,
    };
    let mut failures = Vec::new();
    if opened.errors > 0 {
        failures.push(format!(
            "{} connections failed: {}",
            opened.errors,
            opened.first_error.clone().unwrap_or_default()
        ));
    }
    if closed_during > 0 {
        failures.push(format!("{closed_during} connections closed while idle"));
    }
    let gateway = match (gw_before, gw_connected, gw_after) {
        (Some(b), Some(c), Some(a)) => json!({
            "pids": env.gw.pids,
            "rss_mb_before": mb(b.rss),
            "rss_mb_connected": mb(c.rss),
            "rss_mb_after": mb(a.rss),
            "bytes_per_connection": per_conn,
            "cpu_s_connecting": round3(c.cpu_s - b.cpu_s),
            "cpu_s": round3(a.cpu_s - c.cpu_s),
            "cpu_cores_idle": round3((a.cpu_s - c.cpu_s) / a.at.duration_since(c.at).as_secs_f64().max(1e-9)),
        }),
        _ => json!({ "pids": env.gw.pids, "rss_mb_after": null, "bytes_per_connection": null }),
    };
    let report = json!({
        "scenario": "idle",
        "params_text": format!("{n} connections, {} job{}, hold {hold} s", if same { 1 } else { n }, if same { "" } else { "s" }),
        "params": {
            "url": env.common.url,
            "connections": n,
            "hold_s": hold,
            "same_job": same,
            "first_job": base,
        },
        "connected": connected,
        "connect_errors": opened.errors,
        "source_ips": opened.sources,
        "connect_s": round3(opened.elapsed.as_secs_f64()),
        "not_ready": connected as u64 - ready.min(connected as u64),
        "closed_while_idle": closed_during,
        "pings_answered": pings,
        "bytes_per_connection": per_conn,
        "gateway": gateway,
        "ok": failures.is_empty(),
        "failures": failures,
    });
    Ok(Outcome { report, failures })
}
