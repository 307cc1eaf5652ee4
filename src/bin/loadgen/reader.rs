//! The two ways viewers are read.
//!
//! - Batch readers: one task owns many sockets in its own epoll set (plain non-blocking std
//!   sockets, not registered with tokio). It sleeps the batch interval so that frames pile
//!   up, then drains every ready socket with large reads: one read returns many frames, and
//!   an idle socket costs nothing. Nobody waits on the epoll set, so arriving frames wake no
//!   thread (on loopback that wake-up would run inside the gateway's send()). It yields to the runtime
//!   every 300 µs of work so that the publisher and the sampled viewers are not held up.
//! - Sampled viewers: a task each, reading on arrival, timing every record publish→receipt.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::hist::Hist;
use crate::util::now_ns;
use crate::ws::{Cx, Totals, Viewer};

/// Counters every reader adds to, read by the publisher (flow control), the progress line
/// and the drain check.
pub struct Shared {
    pub run_id: u64,
    pub frames: AtomicU64,
    pub distinct: AtomicU64,
    pub dropped: AtomicU64,
    pub ready: AtomicU64,
    pub closed: AtomicU64,
    pub cancel: CancellationToken,
}

impl Shared {
    pub fn new(run_id: u64) -> Shared {
        Shared {
            run_id,
            frames: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        }
    }

    fn flush(&self, t: &mut Totals) {
        if t.frames > 0 {
            self.frames.fetch_add(t.frames, Relaxed);
        }
        if t.distinct > 0 {
            self.distinct.fetch_add(t.distinct, Relaxed);
        }
        if t.dropped > 0 {
            self.dropped.fetch_add(t.dropped, Relaxed);
        }
        if t.ready > 0 {
            self.ready.fetch_add(t.ready, Relaxed);
        }
        *t = Totals::default();
    }
}

/// Smallest free space offered to one read.
const MIN_READ: usize = 256 * 1024;
/// Work done between two yields to the runtime.
const SLICE: Duration = Duration::from_micros(300);

pub struct Conn {
    pub sock: std::net::TcpStream,
    pub v: Viewer,
}

pub struct BatchReader {
    epfd: OwnedFd,
    conns: Vec<Conn>,
}

impl BatchReader {
    pub fn new() -> std::io::Result<BatchReader> {
        // SAFETY: epoll_create1 returns a new descriptor that we own, or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(BatchReader {
            // SAFETY: `fd` is a fresh descriptor owned by nobody else.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            conns: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Takes a connected viewer over from tokio.
    pub fn add(
        &mut self,
        stream: TcpStream,
        leftover: Vec<u8>,
        mut v: Viewer,
    ) -> std::io::Result<()> {
        let sock = stream.into_std()?;
        sock.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: self.conns.len() as u64,
        };
        // SAFETY: both descriptors are open; `ev` outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                sock.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        v.pending = leftover;
        self.conns.push(Conn { sock, v });
        Ok(())
    }

    /// Reads until cancelled; returns the connections with their counts.
    pub async fn run(self, shared: Arc<Shared>, interval: Duration) -> Vec<Conn> {
        let BatchReader { epfd, mut conns } = self;
        let epfd_raw = epfd.as_raw_fd();
        let mut buf = vec![0u8; MIN_READ];
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut totals = Totals::default();

        // Frames that came in with the handshake response.
        let now = now_ns();
        for c in conns.iter_mut() {
            if !c.v.pending.is_empty() {
                let data = std::mem::take(&mut c.v.pending);
                let mut cx = Cx {
                    now_ns: now,
                    run_id: shared.run_id,
                    hist: None,
                    totals: &mut totals,
                };
                let used = c.v.process(&data, &mut cx);
                c.v.pending.extend_from_slice(&data[used..]);
                flush_outbox(c);
            }
        }
        shared.flush(&mut totals);

        'outer: loop {
            // Sleep, then look: nobody waits on the epoll set meanwhile. (Waiting on it, even
            // nested in tokio's reactor, made every frame the gateway sent wake this thread:
            // on loopback that wake-up runs inside the gateway's send(), so it inflated the
            // gateway's measured cost and latency.)
            tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => break,
                _ = tokio::time::sleep(interval.max(Duration::from_millis(1))) => {}
            }
            loop {
                // SAFETY: `events` is a valid buffer of `events.len()` entries.
                let n = unsafe {
                    libc::epoll_wait(epfd_raw, events.as_mut_ptr(), events.len() as i32, 0)
                };
                if n <= 0 {
                    break;
                }
                let n = n as usize;
                let mut slice_start = Instant::now();
                for ev in events.iter().take(n) {
                    let idx = { ev.u64 } as usize;
                    drain(&mut conns[idx], epfd_raw, &mut buf, &shared, &mut totals);
                    if slice_start.elapsed() >= SLICE {
                        shared.flush(&mut totals);
                        tokio::task::yield_now().await;
                        if shared.cancel.is_cancelled() {
                            break 'outer;
                        }
                        slice_start = Instant::now();
                    }
                }
                shared.flush(&mut totals);
                if n < events.len() {
                    break;
                }
            }
        }
        // A last pass, so that whatever arrived before the end is counted.
        for _ in 0..conns.len().div_ceil(events.len()) + 1 {
            // SAFETY: as above.
            let n =
                unsafe { libc::epoll_wait(epfd_raw, events.as_mut_ptr(), events.len() as i32, 0) };
            if n <= 0 {
                break;
            }
            for ev in events.iter().take(n as usize) {
                let idx = { ev.u64 } as usize;
                drain(&mut conns[idx], epfd_raw, &mut buf, &shared, &mut totals);
            }
            if (n as usize) < events.len() {
                break;
            }
        }
        shared.flush(&mut totals);
        drop(epfd);
        conns
    }
}

/// Reads everything the socket has, in large reads.
fn drain(c: &mut Conn, epfd: RawFd, buf: &mut Vec<u8>, shared: &Shared, totals: &mut Totals) {
    if c.v.counted_closed {
        return;
    }
    loop {
        let p = c.v.pending.len();
        if buf.len() < p + MIN_READ {
            buf.resize(p + MIN_READ, 0);
        }
        buf[..p].copy_from_slice(&c.v.pending);
        match (&c.sock).read(&mut buf[p..]) {
            Ok(0) => {
                c.v.eof = true;
                break;
            }
            Ok(k) => {
                let end = p + k;
                let mut cx = Cx {
                    now_ns: now_ns(),
                    run_id: shared.run_id,
                    hist: None,
                    totals,
                };
                let used = c.v.process(&buf[..end], &mut cx);
                c.v.pending.clear();
                c.v.pending.extend_from_slice(&buf[used..end]);
                if c.v.protocol_error || end < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                c.v.eof = true;
                break;
            }
        }
    }
    flush_outbox(c);
    if (c.v.eof || c.v.protocol_error) && !c.v.counted_closed {
        c.v.counted_closed = true;
        // SAFETY: removing an fd we added; a null event is allowed for DEL.
        unsafe {
            libc::epoll_ctl(
                epfd,
                libc::EPOLL_CTL_DEL,
                c.sock.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
        shared.closed.fetch_add(1, Relaxed);
    }
}

/// Sends queued pongs/close without blocking (what does not fit is retried next time).
fn flush_outbox(c: &mut Conn) {
    while !c.v.outbox.is_empty() {
        match (&c.sock).write(&c.v.outbox) {
            Ok(0) => break,
            Ok(k) => {
                c.v.outbox.drain(..k);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => {
                c.v.outbox.clear();
                c.v.eof = true;
                break;
            }
        }
    }
}

pub struct SampleOut {
    pub stream: TcpStream,
    pub v: Viewer,
    pub hist: Hist,
}

/// Reads one viewer on arrival, timing each of our records; stops when cancelled, at EOF,
/// or (with `stop_at_history_end`) once `history_end` has arrived.
pub async fn run_sample(
    mut stream: TcpStream,
    leftover: Vec<u8>,
    mut v: Viewer,
    shared: Arc<Shared>,
    stop_at_history_end: bool,
    trace: bool,
) -> SampleOut {
    let mut hist = Hist::default();
    if trace {
        hist.trace = Some(Vec::new());
    }
    let mut totals = Totals::default();
    let mut buf = vec![0u8; (64 * 1024).max(leftover.len() * 2)];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let mut p = 0;
    let mut fresh = leftover.len();
    loop {
        if fresh == 0 {
            if buf.len() - p < 16 * 1024 {
                buf.resize(buf.len() * 2, 0);
            }
            let r = tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => break,
                r = stream.read(&mut buf[p..]) => r,
            };
            match r {
                Ok(0) | Err(_) => {
                    v.eof = true;
                    break;
                }
                Ok(k) => fresh = k,
            }
        }
        let end = p + fresh;
        fresh = 0;
        let now = now_ns();
        let mut cx = Cx {
            now_ns: now,
            run_id: shared.run_id,
            hist: Some(&mut hist),
            totals: &mut totals,
        };
        let used = v.process(&buf[..end], &mut cx);
        buf.copy_within(used..end, 0);
        p = end - used;
        shared.flush(&mut totals);
        if !v.outbox.is_empty() {
            if stream.write_all(&v.outbox).await.is_err() {
                v.eof = true;
            }
            v.outbox.clear();
        }
        if v.protocol_error || v.eof || (stop_at_history_end && v.history_end_ns.is_some()) {
            break;
        }
    }
    if v.eof || v.protocol_error {
        v.counted_closed = true;
        shared.closed.fetch_add(1, Relaxed);
    }
    SampleOut { stream, v, hist }
}
