//! Small helpers: the shared clock, a random generator, base64, targets parsed from URLs,
//! byte searches and number scanning, the progress line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the shared clock (call once, early).
pub fn init_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// Nanoseconds since the shared epoch: the publish timestamps and receive times use it.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// xorshift64*: enough for WebSocket keys, masks and job ids.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        let seed = t ^ (u64::from(std::process::id()) << 32) ^ 0x2545_F491_4F6C_DD1D;
        Rng(seed | 1)
    }

    pub fn seeded(seed: u64) -> Rng {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        out
    }

    /// A job id from 1,000,000,000 to 1,999,999,999 (well above demo and test jobs, and
    /// below 2^53 so that JavaScript viewers read it exactly).
    pub fn high_job_id(&mut self) -> i64 {
        1_000_000_000 + (self.next_u64() % 900_000_000) as i64
    }
}

pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(v >> 18) as usize & 63] as char);
        out.push(T[(v >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(v >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[v as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// First position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Last position of `needle` in `hay` (our own fields sit at the end of the records).
pub fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = hay.len() - needle.len();
    loop {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        if i == 0 {
            return None;
        }
        i -= 1;
    }
}

/// The unsigned integer at `hay[pos..]`, after optional spaces.
pub fn uint_at(hay: &[u8], mut pos: usize) -> Option<u64> {
    while pos < hay.len() && (hay[pos] == b' ' || hay[pos] == b'\t') {
        pos += 1;
    }
    let start = pos;
    let mut v: u64 = 0;
    while pos < hay.len() && hay[pos].is_ascii_digit() {
        v = v.wrapping_mul(10).wrapping_add(u64::from(hay[pos] - b'0'));
        pos += 1;
    }
    (pos > start).then_some(v)
}

/// Value of the integer field `key` (given as `"name":`), searched from the end.
pub fn rfield_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    rfind(hay, key).and_then(|p| uint_at(hay, p + key.len()))
}

/// Value of the integer field `key` (given as `"name":`), searched from the start.
pub fn field_u64(hay: &[u8], key: &[u8]) -> Option<u64> {
    find(hay, key).and_then(|p| uint_at(hay, p + key.len()))
}

/// `http://host:port/prefix` (or `ws://`) as the address to connect to.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    pub host_header: String,
    /// Path prefix without a trailing slash ("" normally).
    pub prefix: String,
}

impl HttpTarget {
    pub async fn parse(url: &str) -> Result<HttpTarget> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if let Some(r) = url.strip_prefix("ws://") {
            r
        } else if url.starts_with("https://") || url.starts_with("wss://") {
            bail!(
                "TLS is not supported by loadgen: use http:// (it measures the gateway, not TLS)"
            );
        } else {
            url
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let with_port = if has_port(authority) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .ok_or_else(|| anyhow!("{with_port} resolves to no address"))?;
        Ok(HttpTarget {
            addr,
            host_header: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

/// `redis://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub addr: SocketAddr,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl RedisTarget {
    pub async fn parse(url: &str) -> Result<RedisTarget> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| anyhow!("redis URL {url:?} must start with redis://"))?;
        let rest = rest.split('/').next().unwrap_or("");
        let (auth, hostport) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        let with_port = if has_port(hostport) {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .ok_or_else(|| anyhow!("{with_port} resolves to no address"))?;
        Ok(RedisTarget {
            addr,
            user,
            password,
        })
    }
}

/// A status line redrawn on stderr every 200 ms (only when stderr is a terminal).
pub struct Progress {
    stop: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn enabled(json: bool) -> bool {
        !json && std::io::stderr().is_terminal()
    }

    pub fn start(enabled: bool, line: impl Fn() -> String + Send + 'static) -> Progress {
        let stop = CancellationToken::new();
        let handle = enabled.then(|| {
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    eprint!("\r\x1b[2K{}", line());
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                eprint!("\r\x1b[2K");
            })
        });
        Progress { stop, handle }
    }

    pub async fn finish(self) {
        self.stop.cancel();
        if let Some(h) = self.handle {
            let _ = h.await;
        }
    }
}

/// `[#####.....]` for a fraction from 0 to 1.
pub fn bar(frac: f64) -> String {
    const W: usize = 24;
    let filled = ((frac.clamp(0.0, 1.0)) * W as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(W - filled))
}

/// 1234567 as "1.23M".
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn fields_are_scanned() {
        let rec = br#"{"job_id":5,"message":"xx","meta":{"r":7,"n":12,"t": 99}}"#;
        assert_eq!(rfield_u64(rec, b"\"n\":"), Some(12));
        assert_eq!(rfield_u64(rec, b"\"t\":"), Some(99));
        assert_eq!(field_u64(rec, b"\"job_id\":"), Some(5));
        assert_eq!(rfield_u64(rec, b"\"seq\":"), None);
    }
}
