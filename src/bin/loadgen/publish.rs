//! The publishers: records carry `meta: {"r": run id, "n": per-job sequence number, "t":
//! publish time in ns since the shared epoch}`, at the end of the record so that a backward
//! scan finds them at once. Record `c` of a run goes to job `c % jobs` with `n = c / jobs`.
//!
//! - Redis: PUBLISH on one pipelined connection (our own RESP writer), a batch per 1 ms tick;
//!   a separate task counts the replies.
//! - Ingest: `POST /api/v1/logs` with JSON arrays, on one or more keep-alive connections.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::HttpConn;
use crate::reader::Shared;
use crate::util::{now_ns, HttpTarget, RedisTarget};

pub struct Plan {
    pub jobs: Vec<i64>,
    pub run_id: u64,
    pad: String,
    /// `*3 $7 PUBLISH $len channel` per job, ready to be followed by the payload.
    publish_prefix: Vec<Vec<u8>>,
}

impl Plan {
    pub fn new(jobs: Vec<i64>, channel_prefix: &str, payload_bytes: usize, run_id: u64) -> Plan {
        let publish_prefix = jobs
            .iter()
            .map(|j| {
                let chan = format!("{channel_prefix}:{j}");
                format!("*3\r\n$7\r\nPUBLISH\r\n${}\r\n{chan}\r\n", chan.len()).into_bytes()
            })
            .collect();
        let mut plan = Plan {
            jobs,
            run_id,
            pad: String::new(),
            publish_prefix,
        };
        // Size the message so that a typical record is `payload_bytes` long.
        let mut probe = Vec::new();
        plan.write_record_at(&mut probe, 0, 10_000, 1_000_000_000);
        plan.pad = "x".repeat(payload_bytes.saturating_sub(probe.len()));
        plan
    }

    /// Which job (index) record `c` goes to, and its `n` there.
    pub fn locate(&self, c: u64) -> (usize, u64) {
        let j = self.jobs.len() as u64;
        ((c % j) as usize, c / j)
    }

    fn write_record_at(&self, out: &mut Vec<u8>, job_idx: usize, n: u64, t: u64) {
        let _ = write!(
            out,
            "{{\"job_id\":{},\"level\":\"info\",\"source\":\"loadgen\",\"message\":\"{}\",\"meta\":{{\"r\":{},\"n\":{n},\"t\":{t}}}}}",
            self.jobs[job_idx], self.pad, self.run_id
        );
    }

    /// Record `c`, stamped now.
    pub fn write_record(&self, out: &mut Vec<u8>, c: u64) {
        let (ji, n) = self.locate(c);
        self.write_record_at(out, ji, n, now_ns());
    }

    /// Records job `job_idx` was sent among the first `claimed`, minus the failed ranges.
    pub fn expected(&self, job_idx: usize, claimed: u64, failed: &[(u64, u64)]) -> u64 {
        let m = self.jobs.len() as u64;
        let j = job_idx as u64;
        let upto = |x: u64| x / m + u64::from(x % m > j);
        let lost: u64 = failed.iter().map(|&(a, b)| upto(b) - upto(a)).sum();
        upto(claimed) - lost
    }
}

/// How fast to publish.
#[derive(Clone, Copy)]
pub struct Pace {
    /// Records per second; 0: as fast as the viewers keep up (see `window`).
    pub rate: u64,
    pub duration: Duration,
    /// With rate 0: how many records a viewer may be behind on average before the publisher
    /// waits; 0: no limit at all (an open-loop flood).
    pub window: u64,
    pub viewers_per_job: f64,
}

impl Pace {
    /// How long to sleep before the next batch: until the next record is due (a 1 ms tick at
    /// 1,000 records/s and more; no busy ticking at low rates), at most until the end.
    fn wait(&self, elapsed: Duration, claimed: u64) -> Duration {
        let tick = Duration::from_millis(1);
        if self.rate == 0 {
            return tick;
        }
        let due = Duration::from_secs_f64((claimed + 1) as f64 / self.rate as f64);
        let until_end = self.duration.saturating_sub(elapsed);
        due.saturating_sub(elapsed)
            .max(tick)
            .min(until_end.max(tick))
    }

    fn allowance(&self, elapsed: Duration, claimed: u64, shared: &Shared) -> u64 {
        if self.rate > 0 {
            ((self.rate as f64 * elapsed.as_secs_f64()) as u64).saturating_sub(claimed)
        } else if self.window > 0 {
            let got = (shared.distinct.load(Relaxed) + shared.dropped.load(Relaxed)) as f64
                / self.viewers_per_job.max(1.0);
            let outstanding = (claimed as f64 - got).max(0.0);
            (self.window as f64 - outstanding).max(0.0) as u64
        } else {
            u64::MAX
        }
    }
}

#[derive(Default)]
pub struct PubResult {
    pub claimed: u64,
    /// Ranges of record numbers that were not accepted (ingest answered other than 201).
    pub failed: Vec<(u64, u64)>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Redis PUBLISH replies of 0: nobody subscribed (the gateway is not listening).
    pub zero_receivers: u64,
    pub elapsed: Duration,
}

const MAX_PER_TICK: u64 = 20_000;
const MAX_IN_FLIGHT: u64 = 200_000;

/// Counts RESP replies (`:N`, `-ERR`) across reads.
#[derive(Default)]
struct ReplyScan {
    kind: u8,
    len: usize,
    at_line_start: bool,
    first_is_zero: bool,
}

impl ReplyScan {
    fn feed(&mut self, data: &[u8], replies: &AtomicU64, errors: &AtomicU64, zero: &AtomicU64) {
        let (mut r, mut e, mut z) = (0, 0, 0);
        for &b in data {
            if self.at_line_start {
                self.kind = b;
                self.len = 0;
                self.first_is_zero = false;
                self.at_line_start = false;
                continue;
            }
            if b == b'\n' {
                match self.kind {
                    b':' => {
                        r += 1;
                        if self.first_is_zero && self.len == 2 {
                            z += 1;
                        }
                    }
                    b'-' => {
                        r += 1;
                        e += 1;
                    }
                    _ => {}
                }
                self.at_line_start = true;
                continue;
            }
            if self.len == 0 && b == b'0' {
                self.first_is_zero = true;
            }
            self.len += 1;
        }
        replies.fetch_add(r, Relaxed);
        errors.fetch_add(e, Relaxed);
        zero.fetch_add(z, Relaxed);
    }
}

pub async fn redis_connect(target: &RedisTarget) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connecting to Redis at {}", target.addr))?;
    stream.set_nodelay(true)?;
    if let Some(pw) = &target.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(u) = &target.user {
            args.push(u.as_bytes());
        }
        args.push(pw.as_bytes());
        let mut cmd = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            write!(cmd, "${}\r\n", a.len())?;
            cmd.extend_from_slice(a);
            cmd.extend_from_slice(b"\r\n");
        }
        stream.write_all(&cmd).await?;
        let mut line = [0u8; 512];
        let n = stream.read(&mut line).await?;
        if !line[..n].starts_with(b"+OK") {
            bail!(
                "Redis AUTH failed: {}",
                String::from_utf8_lossy(&line[..n]).trim()
            );
        }
    }
    Ok(stream)
}

/// Publishes straight to Redis for `pace.duration`.
pub async fn publish_redis(
    target: &RedisTarget,
    plan: Arc<Plan>,
    pace: Pace,
    shared: Arc<Shared>,
    sent: Arc<AtomicU64>,
) -> Result<PubResult> {
    let stream = redis_connect(target).await?;
    let (mut rd, mut wr) = stream.into_split();
    let replies = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let zero = Arc::new(AtomicU64::new(0));
    let reader = {
        let (replies, errors, zero) = (replies.clone(), errors.clone(), zero.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut scan = ReplyScan {
                at_line_start: true,
                ..ReplyScan::default()
            };
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                scan.feed(&buf[..n], &replies, &errors, &zero);
            }
        })
    };

    let start = Instant::now();
    let mut claimed = 0u64;
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut rec: Vec<u8> = Vec::with_capacity(1024);
    let mut write_error = None;
    loop {
        tokio::time::sleep(pace.wait(start.elapsed(), claimed)).await;
        let elapsed = start.elapsed();
        if elapsed >= pace.duration {
            break;
        }
        let in_flight = claimed - replies.load(Relaxed).min(claimed);
        let k = pace
            .allowance(elapsed, claimed, &shared)
            .min(MAX_PER_TICK)
            .min(MAX_IN_FLIGHT.saturating_sub(in_flight));
        for _ in 0..k {
            rec.clear();
            plan.write_record(&mut rec, claimed);
            let (ji, _) = plan.locate(claimed);
            out.extend_from_slice(&plan.publish_prefix[ji]);
            write!(out, "${}\r\n", rec.len())?;
            out.extend_from_slice(&rec);
            out.extend_from_slice(b"\r\n");
            claimed += 1;
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                write_error = Some(format!("writing to Redis: {e}"));
                break;
            }
            out.clear();
        }
        sent.store(claimed, Relaxed);
    }
    let elapsed = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    while replies.load(Relaxed) < claimed && Instant::now() < deadline && write_error.is_none() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(wr);
    reader.abort();
    let got = replies.load(Relaxed);
    let mut errors_n = errors.load(Relaxed);
    let mut first_error = write_error;
    if got < claimed {
        errors_n += claimed - got;
        first_error.get_or_insert_with(|| format!("{} PUBLISH replies missing", claimed - got));
    } else if errors_n > 0 {
        first_error.get_or_insert_with(|| "Redis answered PUBLISH with an error".into());
    }
    Ok(PubResult {
        claimed,
        failed: Vec::new(),
        errors: errors_n,
        first_error,
        zero_receivers: zero.load(Relaxed),
        elapsed,
    })
}

/// A JSON array of records `c0..c1`.
pub fn ingest_body(plan: &Plan, c0: u64, c1: u64, out: &mut Vec<u8>) {
    out.clear();
    out.push(b'[');
    for c in c0..c1 {
        if c > c0 {
            out.push(b',');
        }
        plan.write_record(out, c);
    }
    out.push(b']');
}

/// A JSON array of `count` records for job `job_idx`, numbered from `n0`.
pub fn ingest_body_job(plan: &Plan, job_idx: usize, n0: u64, count: u64, out: &mut Vec<u8>) {
    out.clear();
    out.push(b'[');
    for n in n0..n0 + count {
        if n > n0 {
            out.push(b',');
        }
        plan.write_record_at(out, job_idx, n, now_ns());
    }
    out.push(b']');
}

/// Publishes through `POST /api/v1/logs` for `pace.duration`, on `conns` connections, at
/// most `batch` records per request.
pub struct IngestRoute<'a> {
    pub http: &'a HttpTarget,
    /// Concurrent connections.
    pub conns: usize,
    /// Most records per request.
    pub batch: u64,
    pub token: Option<&'a str>,
}

pub async fn publish_ingest(
    route: IngestRoute<'_>,
    plan: Arc<Plan>,
    pace: Pace,
    shared: Arc<Shared>,
    sent: Arc<AtomicU64>,
) -> Result<PubResult> {
    let batch = route.batch.max(1);
    let claimed = Arc::new(AtomicU64::new(0));
    let result = Arc::new(Mutex::new(PubResult::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..route.conns.max(1) {
        let (plan, shared, sent, claimed, result) = (
            plan.clone(),
            shared.clone(),
            sent.clone(),
            claimed.clone(),
            result.clone(),
        );
        let mut conn = HttpConn::new(route.http, route.token);
        tasks.push(tokio::spawn(async move {
            let mut body = Vec::with_capacity(1 << 20);
            loop {
                let elapsed = start.elapsed();
                if elapsed >= pace.duration {
                    break;
                }
                let cur = claimed.load(Relaxed);
                let allow = pace.allowance(elapsed, cur, &shared).min(batch);
                if allow == 0 {
                    tokio::time::sleep(pace.wait(elapsed, cur)).await;
                    continue;
                }
                if claimed
                    .compare_exchange(cur, cur + allow, Relaxed, Relaxed)
                    .is_err()
                {
                    continue;
                }
                ingest_body(&plan, cur, cur + allow, &mut body);
                let failure = match conn.post("/api/v1/logs", "application/json", &body).await {
                    Ok(r) if r.status == 201 => None,
                    Ok(r) => Some(format!(
                        "ingest answered {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
                    )),
                    Err(e) => Some(format!("ingest failed: {e:#}")),
                };
                match failure {
                    None => {
                        sent.fetch_add(allow, Relaxed);
                    }
                    Some(msg) => {
                        let mut r = result.lock().expect("not poisoned");
                        r.failed.push((cur, cur + allow));
                        r.errors += 1;
                        r.first_error.get_or_insert(msg);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut r = std::mem::take(&mut *result.lock().expect("not poisoned"));
    r.claimed = claimed.load(Relaxed);
    r.elapsed = start.elapsed();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_counts_per_job() {
        let plan = Plan::new(vec![10, 11, 12], "p", 200, 1);
        assert_eq!(plan.expected(0, 10, &[]), 4);
        assert_eq!(plan.expected(1, 10, &[]), 3);
        assert_eq!(plan.expected(2, 10, &[]), 3);
        assert_eq!(plan.expected(0, 10, &[(3, 7)]), 2);
        assert_eq!(plan.expected(1, 10, &[(3, 7)]), 2);
        let mut rec = Vec::new();
        plan.write_record(&mut rec, 4);
        assert!((185..=215).contains(&rec.len()), "{}", rec.len());
        let v: serde_json::Value = serde_json::from_slice(&rec).unwrap();
        assert_eq!(v["job_id"], 11);
        assert_eq!(v["meta"]["n"], 1);
    }

    #[test]
    fn replies_are_counted_across_reads() {
        let (r, e, z) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let mut s = ReplyScan {
            at_line_start: true,
            ..ReplyScan::default()
        };
        let data = b":1\r\n:0\r\n:10\r\n-ERR x\r\n:0\r\n";
        for chunk in data.chunks(3) {
            s.feed(chunk, &r, &e, &z);
        }
        assert_eq!(r.load(Relaxed), 5);
        assert_eq!(e.load(Relaxed), 1);
        assert_eq!(z.load(Relaxed), 2);
    }
}
