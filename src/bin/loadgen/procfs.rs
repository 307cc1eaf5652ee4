//! The gateway's CPU time and RSS from `/proc` (found by its listening port unless given),
//! this process's own CPU time, and RLIMIT_NOFILE.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::{json, Value};

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of one process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds used by this process so far.
pub fn self_cpu_s() -> f64 {
    cpu_ticks("self").map_or(0.0, |t| t as f64 / clk_tck())
}

/// Socket inodes listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> HashSet<String> {
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some((_, port_hex)) = f[1].rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(port_hex, 16).ok() == Some(port) {
                out.insert(f[9].to_string());
            }
        }
    }
    out
}

/// Processes holding a socket that listens on `port`.
pub fn pids_listening_on(port: u16) -> Vec<i32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: HashSet<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if target.to_str().is_some_and(|t| wanted.contains(t)) {
                    pids.push(pid);
                    break;
                }
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// The gateway process(es) whose CPU and memory are measured.
pub struct Gateway {
    pub pids: Vec<i32>,
    tck: f64,
}

#[derive(Clone, Copy)]
pub struct Snap {
    pub cpu_s: f64,
    pub rss: u64,
    pub at: Instant,
}

impl Gateway {
    /// The given pids, or those listening on `port`; empty when neither works (the gateway
    /// is on another machine, or /proc is not readable): then nothing is measured.
    pub fn resolve(given: &[i32], port: u16) -> Gateway {
        let pids = if given.is_empty() {
            pids_listening_on(port)
        } else {
            given.to_vec()
        };
        Gateway {
            pids,
            tck: clk_tck(),
        }
    }

    pub fn snap(&self) -> Option<Snap> {
        if self.pids.is_empty() {
            return None;
        }
        let mut ticks = 0;
        let mut rss = 0;
        for pid in &self.pids {
            ticks += cpu_ticks(&pid.to_string())?;
            rss += rss_bytes(*pid)?;
        }
        Some(Snap {
            cpu_s: ticks as f64 / self.tck,
            rss,
            at: Instant::now(),
        })
    }

    /// `{"pids","cpu_s","us_per_<unit>","rss_mb_before","rss_mb_after"}` between two snaps.
    pub fn report(
        &self,
        before: Option<Snap>,
        after: Option<Snap>,
        units: u64,
        unit: &str,
    ) -> Value {
        let mb = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
        match (before, after) {
            (Some(b), Some(a)) => {
                let cpu = a.cpu_s - b.cpu_s;
                let wall = a.at.duration_since(b.at).as_secs_f64();
                json!({
                    "pids": self.pids,
                    "cpu_s": round3(cpu),
                    "cpu_cores": round3(if wall > 0.0 { cpu / wall } else { 0.0 }),
                    format!("us_per_{unit}"): (units > 0).then(|| round3(cpu * 1e6 / units as f64)),
                    "rss_mb_before": mb(b.rss),
                    "rss_mb_after": mb(a.rss),
                })
            }
            _ => {
                json!({ "pids": self.pids, "cpu_s": null, format!("us_per_{unit}"): null, "rss_mb_before": null, "rss_mb_after": null })
            }
        }
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Raises the soft RLIMIT_NOFILE to at least `want` (up to the hard limit, or beyond it when
/// allowed); returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        if lim.rlim_max < want {
            let bigger = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &bigger) == 0 {
                return want;
            }
        }
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            lim.rlim_max
        } else {
            lim.rlim_cur
        }
    }
}
