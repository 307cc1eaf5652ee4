//! A minimal WebSocket client: the HTTP/1.1 upgrade, server frames parsed straight out of a
//! large read buffer, masked client frames (pong, close), and the per-viewer bookkeeping with
//! a cheap byte scan of each text frame (no JSON parsing).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::hist::Hist;
use crate::util::{base64, field_u64, find, rfield_u64, uint_at, Rng};

/// Where and how to open WebSockets.
pub struct Dial<'a> {
    pub addr: SocketAddr,
    pub host: &'a str,
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<&'a str>,
    pub timeout: Duration,
}

/// A TCP connection to `addr`, from `source` when given (another loopback address, to spread
/// many connections over per-address caps and port ranges).
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding to {ip}"))?;
            socket.connect(addr).await
        }
    }
    .with_context(|| match source {
        Some(ip) => format!("connecting to {addr} from {ip}"),
        None => format!("connecting to {addr}"),
    })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens `path` (e.g. `/ws/jobs/7?tail=0`) as a WebSocket. Returns the stream and the bytes
/// read past the handshake (the first frames, possibly).
pub async fn connect(
    dial: &Dial<'_>,
    path: &str,
    source: Option<IpAddr>,
    rng: &mut Rng,
) -> Result<(TcpStream, Vec<u8>)> {
    let key = base64(&rng.bytes16());
    let host = dial.host;
    let auth = dial
        .token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    tokio::time::timeout(dial.timeout, async {
        let mut stream = tcp_connect(dial.addr, source).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}User-Agent: loadgen\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        loop {
            buf.reserve(2048);
            let n = stream.read_buf(&mut buf).await?;
            if n == 0 {
                bail!("{path}: connection closed during the WebSocket handshake");
            }
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]);
                let status_line = head.lines().next().unwrap_or("");
                let code = status_line.split_whitespace().nth(1).unwrap_or("");
                if code != "101" {
                    let body = String::from_utf8_lossy(&buf[end + 4..]);
                    bail!("{path}: handshake answered {status_line:?} {}", body.trim());
                }
                return Ok((stream, buf[end + 4..].to_vec()));
            }
            if buf.len() > 16 * 1024 {
                bail!("{path}: handshake response headers too long");
            }
        }
    })
    .await
    .with_context(|| format!("{path}: WebSocket handshake timed out"))?
}

/// A masked client frame (clients must mask; the mask need not be secret here).
pub fn client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// A close frame with status 1000.
pub fn close_frame() -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    client_frame(
        &mut out,
        0x8,
        &1000u16.to_be_bytes(),
        [0x5a, 0x17, 0xc3, 0x2e],
    );
    out
}

struct Head {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

/// Largest frame accepted from the server.
const MAX_FRAME: u64 = 256 * 1024 * 1024;

fn parse_head(b: &[u8]) -> Result<Option<Head>, ()> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut h) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(a), 10)
        }
        l => (u64::from(l), 2),
    };
    if len > MAX_FRAME {
        return Err(());
    }
    let mask = if masked {
        if b.len() < h + 4 {
            return Ok(None);
        }
        let m = [b[h], b[h + 1], b[h + 2], b[h + 3]];
        h += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask,
        header_len: h,
        payload_len: len as usize,
    }))
}

/// What the scan of frames adds up, flushed into the shared counters by the readers.
#[derive(Default)]
pub struct Totals {
    pub frames: u64,
    pub distinct: u64,
    pub dropped: u64,
    pub ready: u64,
}

/// Per-read context.
pub struct Cx<'a> {
    pub now_ns: u64,
    pub run_id: u64,
    pub hist: Option<&'a mut Hist>,
    pub totals: &'a mut Totals,
}

/// The sequence numbers `n` a viewer has seen, in a sliding window of 16,384: duplicates are
/// caught however late they come within the window; anything older counts as a duplicate
/// too (in-order streams never produce that otherwise).
#[derive(Default)]
pub struct SeenWindow {
    base: u64,
    bits: Vec<u64>,
}

const WINDOW_WORDS: usize = 256;
const WINDOW: u64 = (WINDOW_WORDS * 64) as u64;

impl SeenWindow {
    /// True when `n` is new.
    fn insert(&mut self, n: u64) -> bool {
        if self.bits.is_empty() {
            self.bits = vec![0; WINDOW_WORDS];
        }
        if n < self.base {
            return false;
        }
        if n >= self.base + WINDOW {
            let new_base = n + 1 - WINDOW;
            if new_base - self.base >= WINDOW {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for p in self.base..new_base {
                    let i = (p % WINDOW) as usize;
                    self.bits[i / 64] &= !(1u64 << (i % 64));
                }
            }
            self.base = new_base;
        }
        let i = (n % WINDOW) as usize;
        let m = 1u64 << (i % 64);
        let w = &mut self.bits[i / 64];
        if *w & m != 0 {
            false
        } else {
            *w |= m;
            true
        }
    }
}

/// Exact `seq` check for catch-up: every seq from 1 to `expected` once, in order.
pub struct SeqCheck {
    pub expected: u64,
    seen: Vec<u64>,
    pub distinct: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub out_of_range: u64,
    pub missing_seq: u64,
    max_seq: u64,
    pub complete_ns: Option<u64>,
}

impl SeqCheck {
    pub fn new(expected: u64) -> SeqCheck {
        SeqCheck {
            expected,
            seen: vec![0; (expected as usize).div_ceil(64).max(1)],
            distinct: 0,
            duplicated: 0,
            out_of_order: 0,
            out_of_range: 0,
            missing_seq: 0,
            max_seq: 0,
            complete_ns: None,
        }
    }

    fn add(&mut self, seq: Option<u64>, now_ns: u64) {
        let Some(s) = seq else {
            self.missing_seq += 1;
            return;
        };
        if s == 0 || s > self.expected {
            self.out_of_range += 1;
            return;
        }
        let i = (s - 1) as usize;
        let m = 1u64 << (i % 64);
        if self.seen[i / 64] & m != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[i / 64] |= m;
        self.distinct += 1;
        if s < self.max_seq {
            self.out_of_order += 1;
        }
        self.max_seq = self.max_seq.max(s);
        if self.distinct == self.expected {
            self.complete_ns = Some(now_ns);
        }
    }
}

/// One viewer's connection state and counts.
#[derive(Default)]
pub struct Viewer {
    pub job_idx: usize,
    /// Our records received (duplicates included).
    pub frames: u64,
    pub distinct: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    next_n: u64,
    seen: SeenWindow,
    /// Records of other producers or runs on the same job.
    pub foreign: u64,
    pub controls: u64,
    pub history_end_ns: Option<u64>,
    /// `last_seq` of the `history_end` frame.
    pub history_last_seq: Option<u64>,
    pub gaps: u64,
    pub dropped_reported: u64,
    pub pings: u64,
    pub bytes: u64,
    /// When the last of our records arrived.
    pub last_rx_ns: u64,
    pub close_code: Option<u16>,
    pub close_sent: bool,
    pub eof: bool,
    pub protocol_error: bool,
    pub counted_closed: bool,
    /// Bytes of a frame not complete yet.
    pub pending: Vec<u8>,
    frag: Vec<u8>,
    in_frag: bool,
    /// Frames to send (pongs, close).
    pub outbox: Vec<u8>,
    pub seq: Option<SeqCheck>,
}

impl Viewer {
    pub fn new(job_idx: usize) -> Viewer {
        Viewer {
            job_idx,
            ..Viewer::default()
        }
    }

    pub fn is_closed(&self) -> bool {
        self.eof || self.protocol_error || self.close_code.is_some()
    }

    /// Parses every complete frame at the start of `buf`; returns the bytes consumed.
    pub fn process(&mut self, buf: &[u8], cx: &mut Cx) -> usize {
        let mut off = 0;
        while off < buf.len() {
            let head = match parse_head(&buf[off..]) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(()) => {
                    self.protocol_error = true;
                    return buf.len();
                }
            };
            let total = head.header_len + head.payload_len;
            if buf.len() - off < total {
                break;
            }
            let payload = &buf[off + head.header_len..off + total];
            self.bytes += total as u64;
            match head.mask {
                None => self.on_frame(head.fin, head.opcode, payload, cx),
                Some(mask) => {
                    let clear: Vec<u8> = payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ mask[i & 3])
                        .collect();
                    self.on_frame(head.fin, head.opcode, &clear, cx);
                }
            }
            off += total;
        }
        off
    }

    fn on_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], cx: &mut Cx) {
        match opcode {
            0x1 | 0x2 => {
                if self.in_frag {
                    self.protocol_error = true;
                } else if fin {
                    self.on_message(payload, cx);
                } else {
                    self.frag.clear();
                    self.frag.extend_from_slice(payload);
                    self.in_frag = true;
                }
            }
            0x0 => {
                if !self.in_frag {
                    self.protocol_error = true;
                    return;
                }
                self.frag.extend_from_slice(payload);
                if fin {
                    let msg = std::mem::take(&mut self.frag);
                    self.on_message(&msg, cx);
                    self.frag = msg;
                    self.frag.clear();
                    self.in_frag = false;
                }
            }
            0x8 => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                self.close_code = Some(code);
                if !self.close_sent {
                    self.close_sent = true;
                    let mut out = std::mem::take(&mut self.outbox);
                    client_frame(
                        &mut out,
                        0x8,
                        &payload[..payload.len().min(2)],
                        [1, 2, 3, 4],
                    );
                    self.outbox = out;
                }
            }
            0x9 => {
                self.pings += 1;
                let mut out = std::mem::take(&mut self.outbox);
                client_frame(&mut out, 0xA, payload, [0x37, 0xfa, 0x21, 0x3d]);
                self.outbox = out;
            }
            0xA => {}
            _ => self.protocol_error = true,
        }
    }

    /// One text (or binary) message: our record, a control frame, or something else.
    fn on_message(&mut self, msg: &[u8], cx: &mut Cx) {
        if let Some(n) = rfield_u64(msg, b"\"n\":") {
            if rfield_u64(msg, b"\"r\":") != Some(cx.run_id) {
                self.foreign += 1;
                if let Some(check) = self.seq.as_mut() {
                    check.add(seq_of(msg), cx.now_ns);
                }
                return;
            }
            self.frames += 1;
            self.last_rx_ns = cx.now_ns;
            cx.totals.frames += 1;
            if self.seen.insert(n) {
                self.distinct += 1;
                cx.totals.distinct += 1;
                if n < self.next_n {
                    self.out_of_order += 1;
                }
                self.next_n = self.next_n.max(n + 1);
            } else {
                self.duplicated += 1;
            }
            if let Some(h) = cx.hist.as_deref_mut() {
                if let Some(t) = rfield_u64(msg, b"\"t\":") {
                    h.record_at(cx.now_ns, cx.now_ns.saturating_sub(t));
                }
            }
            if let Some(check) = self.seq.as_mut() {
                check.add(seq_of(msg), cx.now_ns);
            }
            return;
        }
        // Control frames are small; records never have a "control" key.
        if let Some(p) = find(msg, b"\"control\"") {
            self.controls += 1;
            let kind = &msg[p..];
            if find(kind, b"history_end").is_some() {
                if self.history_end_ns.is_none() {
                    self.history_end_ns = Some(cx.now_ns);
                    self.history_last_seq = field_u64(msg, b"\"last_seq\":");
                    cx.totals.ready += 1;
                }
            } else if find(kind, b"\"dropped\"").is_some() {
                let count = find(msg, b"\"count\":")
                    .and_then(|p| uint_at(msg, p + 8))
                    .unwrap_or(0);
                self.dropped_reported += count;
                cx.totals.dropped += count;
            } else if find(kind, b"\"gap\"").is_some() {
                self.gaps += 1;
            }
            return;
        }
        if let Some(check) = self.seq.as_mut() {
            // A stored record without our meta (catch-up of a job filled by someone else).
            check.add(seq_of(msg), cx.now_ns);
        }
        self.foreign += 1;
    }
}

/// The record's top-level `seq` (our meta has no such key).
fn seq_of(msg: &[u8]) -> Option<u64> {
    rfield_u64(msg, b"\"seq\":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(len as u8);
        } else if len <= 0xFFFF {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    fn record(run: u64, n: u64) -> Vec<u8> {
        format!(
            r#"{{"job_id":1,"message":"{}","meta":{{"r":{run},"n":{n},"t":0}}}}"#,
            "x".repeat(if n == 7 { 70_000 } else { n as usize * 37 })
        )
        .into_bytes()
    }

    #[test]
    fn frames_split_anywhere_are_counted_once() {
        let mut stream = Vec::new();
        stream.extend(server_frame(
            1,
            br#"{"control":"history_end","job_id":1,"last_seq":0}"#,
        ));
        for n in 0..50 {
            stream.extend(server_frame(1, &record(9, n)));
        }
        stream.extend(server_frame(9, b"hi"));
        stream.extend(server_frame(
            1,
            br#"{"control":"dropped","job_id":1,"count":42}"#,
        ));
        stream.extend(server_frame(1, &record(9, 3)));
        stream.extend(server_frame(1, &record(8, 3)));
        for step in [1usize, 7, 1000, 65536, stream.len()] {
            let mut v = Viewer::new(0);
            let mut totals = Totals::default();
            let mut pending: Vec<u8> = Vec::new();
            for chunk in stream.chunks(step) {
                pending.extend_from_slice(chunk);
                let mut cx = Cx {
                    now_ns: 1,
                    run_id: 9,
                    hist: None,
                    totals: &mut totals,
                };
                let used = v.process(&pending, &mut cx);
                pending.drain(..used);
            }
            assert!(pending.is_empty());
            assert_eq!(v.frames, 51);
            assert_eq!(v.distinct, 50);
            assert_eq!(v.duplicated, 1);
            assert_eq!(v.foreign, 1);
            assert_eq!(v.dropped_reported, 42);
            assert_eq!(v.controls, 2);
            assert!(v.history_end_ns.is_some());
            assert_eq!(v.pings, 1);
            assert!(!v.outbox.is_empty());
            assert_eq!(totals.distinct, 50);
        }
    }

    #[test]
    fn fragmented_message() {
        let msg = record(1, 1);
        let mut stream = vec![0x01, 10];
        stream.extend_from_slice(&msg[..10]);
        stream.extend(server_frame(9, b""));
        stream.push(0x80);
        stream.push((msg.len() - 10) as u8);
        stream.extend_from_slice(&msg[10..]);
        let mut v = Viewer::new(0);
        let mut totals = Totals::default();
        let mut cx = Cx {
            now_ns: 1,
            run_id: 1,
            hist: None,
            totals: &mut totals,
        };
        assert_eq!(v.process(&stream, &mut cx), stream.len());
        assert_eq!(v.distinct, 1);
        assert_eq!(v.pings, 1);
    }

    #[test]
    fn window_dedupes_and_slides() {
        let mut w = SeenWindow::default();
        for n in 0..100_000 {
            assert!(w.insert(n));
        }
        assert!(!w.insert(99_999));
        assert!(!w.insert(5));
        assert!(w.insert(200_000));
        assert!(w.insert(199_000));
        assert!(!w.insert(199_000));
    }
}
