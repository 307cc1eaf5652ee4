/*
 * Session log gateway – live log viewer.
 * Plain JS, no build step, no dependencies.
 *
 * Protocol: WebSocket /ws/jobs/{job}?tail=N | ?after_seq=M [&level=L]
 * Frames are JSON: either a log record, or {"control": "history_end"|"gap"|"dropped", ...}.
 * Log data is ALWAYS inserted via textContent (never innerHTML).
 */
(function () {
  'use strict';

  const TAIL = 1000;           // history lines requested on first connect
  const MAX_LINES = 20000;     // max line/marker elements kept in #log
  const BACKOFF_MIN = 500;     // ms, doubles per failed attempt ...
  const BACKOFF_MAX = 10000;   // ... up to this
  const LIVE_FALLBACK = 3000;  // ms after open without history_end before we call it live anyway
  const LEVELS = ['debug', 'info', 'warning', 'error', 'critical'];

  const $ = (id) => document.getElementById(id);
  const el = {
    form: $('watch-form'), input: $('job-input'), level: $('level-select'),
    stop: $('stop-btn'), status: $('status'), log: $('log'), jump: $('jump-btn'),
    job: $('job-label'), count: $('line-count'), lastSeq: $('last-seq'),
  };

  // All mutable viewer state in one place.
  const st = {
    jobId: null,        // job being watched (string of digits)
    level: '',          // minimum level param ('' = all)
    ws: null,           // current socket; handlers of older sockets are ignored
    stopped: true,      // true = do not reconnect
    lastSeq: null,      // highest seq displayed (dedup + resume point)
    received: 0,        // records displayed
    trimmed: 0,         // elements dropped from the top
    backoff: BACKOFF_MIN,
    attempt: 0,
    retryTimer: null, countdownTimer: null, liveTimer: null,
    follow: true,       // stick to the bottom
    unseen: 0,          // lines appended while not following
    pending: [],        // nodes waiting for the next flush
    flushScheduled: false,
  };
  let trimMarker = null;

  // ---------------------------------------------------------------- status

  /** state: idle|connecting|live|reconnecting|closed; detail shown via CSS only. */
  function setStatus(state, detail) {
    el.status.textContent = state;
    el.status.dataset.state = state;
    if (detail) el.status.dataset.detail = detail;
    else delete el.status.dataset.detail;
    el.status.title = detail ? state + ' – ' + detail : state;
  }

  function updateStats() {
    el.job.textContent = st.jobId ?? '–';
    el.count.textContent = st.received.toLocaleString();
    el.lastSeq.textContent = st.lastSeq ?? '–';
    el.stop.disabled = st.stopped;
  }

  // ------------------------------------------------------------ connection

  /** Start watching a job from scratch (clears the screen). */
  function watch(jobId) {
    disconnect();
    Object.assign(st, {
      jobId, stopped: false, lastSeq: null, received: 0, trimmed: 0,
      backoff: BACKOFF_MIN, attempt: 0, follow: true, unseen: 0, pending: [],
    });
    trimMarker = null;
    el.log.replaceChildren();
    el.log.dataset.empty = 'Waiting for log lines of job ' + jobId + '…';
    updateJump();
    updateUrl();
    updateStats();
    connect();
  }

  /** Stop any socket and timers without touching the displayed lines. */
  function disconnect() {
    clearTimeout(st.retryTimer);
    clearInterval(st.countdownTimer);
    clearTimeout(st.liveTimer);
    st.retryTimer = st.countdownTimer = st.liveTimer = null;
    const ws = st.ws;
    st.ws = null;                       // makes the old handlers no-ops
    if (ws) try { ws.close(1000, 'viewer closed'); } catch (_) { /* ignore */ }
  }

  function connect() {
    disconnect();
    const params = new URLSearchParams();
    // First connect: tail; afterwards resume right after the last displayed seq.
    if (st.lastSeq === null) params.set('tail', String(TAIL));
    else params.set('after_seq', String(st.lastSeq));
    if (st.level) params.set('level', st.level);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = proto + '//' + location.host + '/ws/jobs/' +
      encodeURIComponent(st.jobId) + '?' + params.toString();

    st.attempt++;
    setStatus('connecting', st.attempt > 1 ? 'attempt ' + st.attempt : null);

    let ws;
    try { ws = new WebSocket(url); } catch (err) {
      console.error('WebSocket failed', err);
      scheduleReconnect();
      return;
    }
    st.ws = ws;
    let gotFrame = false;

    ws.onopen = () => {
      if (ws !== st.ws) return;
      setStatus('connecting', 'loading history');
      // Should history_end never arrive, don't stay "connecting" forever.
      st.liveTimer = setTimeout(() => { if (ws === st.ws) goLive(); }, LIVE_FALLBACK);
    };
    ws.onmessage = (ev) => {
      if (ws !== st.ws) return;
      if (!gotFrame) { gotFrame = true; st.backoff = BACKOFF_MIN; }  // server is healthy
      if (typeof ev.data === 'string') handleFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== st.ws) return;
      st.ws = null;
      clearTimeout(st.liveTimer);
      flush();
      // 1008 (policy) and 4xxx (application) closes are final, e.g. unknown job.
      if (ev.code === 1008 || (ev.code >= 4000 && ev.code < 5000)) {
        st.stopped = true;
        updateStats();
        setStatus('closed', ev.reason || 'server closed (code ' + ev.code + ')');
        return;
      }
      scheduleReconnect();
    };
  }

  function goLive() {
    clearTimeout(st.liveTimer);
    st.attempt = 0;
    setStatus('live');
  }

  /** Retry with exponential backoff, showing a countdown in the badge. */
  function scheduleReconnect() {
    if (st.stopped) return;
    const delay = st.backoff;
    st.backoff = Math.min(st.backoff * 2, BACKOFF_MAX);
    const due = Date.now() + delay;
    const tick = () => {
      const s = Math.max(0, due - Date.now()) / 1000;
      setStatus('reconnecting', 'retry in ' + s.toFixed(1) + 's');
    };
    tick();
    st.countdownTimer = setInterval(tick, 100);
    st.retryTimer = setTimeout(connect, delay);
  }

  // ---------------------------------------------------------------- frames

  function handleFrame(data) {
    let msg;
    try { msg = JSON.parse(data); } catch (_) {
      console.warn('ignoring non-JSON frame', data.slice(0, 200));
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if ('control' in msg) handleControl(msg);
    else handleRecord(msg);
  }

  function handleControl(msg) {
    switch (msg.control) {
      case 'history_end':
        flush();          // render the history before announcing "live"
        goLive();
        break;
      case 'gap':
        enqueue(makeMarker('possible gap: ' + (msg.reason ?? 'unknown') +
          ' (healed from database)', 'gap'));
        break;
      case 'dropped': {
        const n = Number(msg.count) || 0;
        enqueue(makeMarker(n + ' unsequenced line' + (n === 1 ? '' : 's') +
          ' dropped (viewer too slow)', 'dropped'));
        break;
      }
      default:
        console.debug('unknown control frame', msg);
    }
  }

  function handleRecord(rec) {
    const seq = Number.isFinite(rec.seq) ? rec.seq : null;
    if (seq !== null) {
      if (st.lastSeq !== null && seq <= st.lastSeq) return;   // duplicate / replay
      st.lastSeq = seq;
    }
    st.received++;
    enqueue(renderRecord(rec, seq));
  }

  // ------------------------------------------------------------- rendering

  function span(cls, text) {
    const s = document.createElement('span');
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function renderRecord(rec, seq) {
    const level = String(rec.level ?? 'info').toLowerCase();
    const line = document.createElement('div');
    line.className = 'line';
    line.dataset.level = level;
    if (seq !== null) line.dataset.seq = String(seq);

    const ts = span('ts', formatTime(rec.timestamp));
    if (rec.timestamp) ts.title = String(rec.timestamp);

    // device + source; log_type and meta go into the tooltip
    const ctx = span('ctx', '');
    const tip = [];
    if (rec.device_id != null) { ctx.append(span('dev', 'dev ' + rec.device_id)); tip.push('device ' + rec.device_id); }
    if (rec.source) { ctx.append(span('src', String(rec.source))); tip.push('source ' + rec.source); }
    if (rec.log_type) tip.push('type ' + rec.log_type);
    if (rec.meta != null) {
      let m = '';
      try { m = JSON.stringify(rec.meta); } catch (_) { /* ignore */ }
      if (m && m !== '{}') tip.push('meta ' + (m.length > 500 ? m.slice(0, 500) + '…' : m));
    }
    if (tip.length) ctx.title = tip.join('\n');

    const text = typeof rec.message === 'string' ? rec.message
      : rec.message == null ? '' : JSON.stringify(rec.message);

    line.append(ts, span('lvl', level), ctx,
      span('seq', seq !== null ? '#' + seq : ''), span('msg', cleanText(text)));
    return line;
  }

  function makeMarker(text, kind) {
    const m = document.createElement('div');
    m.className = 'marker ' + kind;
    m.setAttribute('role', 'note');
    m.textContent = text;
    return m;
  }

  // CSI / OSC / DCS-like strings / single-char ESC sequences
  const ANSI_RE = /\x1b(?:\[[0-?]*[ -\/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[ -\/]*[0-~])/g;
  // remaining control chars except \t and \n
  const CTRL_RE = /[\x00-\x08\x0b-\x1f\x7f]/g;

  function cleanText(s) {
    return s.replace(ANSI_RE, '').replace(/\r\n/g, '\n').replace(CTRL_RE, '');
  }

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  /** ISO timestamp -> local HH:MM:SS.mmm (sub-millisecond digits are cut before parsing). */
  function formatTime(ts) {
    if (!ts) return '';
    const d = new Date(String(ts).replace(/(\.\d{3})\d+/, '$1'));
    if (isNaN(d.getTime())) return String(ts);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' +
      pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
  }

  // ------------------------------------------------ batching, trim, follow

  /** Queue a node; the DOM is updated at most once per frame. */
  function enqueue(node) {
    st.pending.push(node);
    if (st.pending.length > MAX_LINES) {          // e.g. background tab: no frames
      const drop = st.pending.length - MAX_LINES;
      st.pending.splice(0, drop);
      st.trimmed += drop + el.log.childElementCount - (trimMarker ? 1 : 0);
      el.log.replaceChildren();                   // everything on screen is older
      trimMarker = null;
    }
    if (!st.flushScheduled) {
      st.flushScheduled = true;
      requestAnimationFrame(flush);
      setTimeout(flush, 250);                     // rAF is paused in hidden tabs
    }
  }

  function flush() {
    st.flushScheduled = false;
    if (!st.pending.length) return;
    const frag = document.createDocumentFragment();
    let added = 0;
    for (const n of st.pending) {
      frag.appendChild(n);
      if (n.classList.contains('line')) added++;
    }
    st.pending = [];
    el.log.appendChild(frag);
    trim();
    if (st.follow) scrollToBottom();
    else { st.unseen += added; updateJump(); }
    updateStats();
  }

  /** Keep at most MAX_LINES elements (plus the trim marker at the top). */
  function trim() {
    const log = el.log;
    const excess = log.childElementCount - (trimMarker ? 1 : 0) - MAX_LINES;
    if (excess <= 0 && !(st.trimmed && !trimMarker)) return;
    const before = log.scrollHeight;
    if (!trimMarker) {
      trimMarker = makeMarker('', 'trimmed');
      log.prepend(trimMarker);
    }
    for (let i = 0; i < excess; i++) trimMarker.nextElementSibling.remove();
    if (excess > 0) st.trimmed += excess;
    trimMarker.textContent = 'earlier lines trimmed (' + st.trimmed.toLocaleString() +
      ' removed, keeping the last ' + MAX_LINES.toLocaleString() + ')';
    if (!st.follow) log.scrollTop -= before - log.scrollHeight;  // keep the view steady
  }

  function scrollToBottom() {
    el.log.scrollTop = el.log.scrollHeight;
  }

  function updateJump() {
    const show = !st.follow && st.unseen > 0;
    el.jump.hidden = !show;
    if (show) el.jump.textContent = st.unseen.toLocaleString() + ' new line' +
      (st.unseen === 1 ? '' : 's') + ' ↓';
  }

  el.log.addEventListener('scroll', () => {
    const log = el.log;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (atBottom === st.follow) return;
    st.follow = atBottom;
    if (atBottom) st.unseen = 0;
    updateJump();
  }, { passive: true });

  el.jump.addEventListener('click', () => {
    st.follow = true;
    st.unseen = 0;
    scrollToBottom();
    updateJump();
  });

  // -------------------------------------------------------------- controls

  const validJob = (v) => /^[0-9]+$/.test(v);

  function updateUrl() {
    const p = new URLSearchParams(location.search);
    if (st.jobId) p.set('job', st.jobId); else p.delete('job');
    if (st.level) p.set('level', st.level); else p.delete('level');
    const q = p.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
  }

  el.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = el.input.value.trim();
    if (!validJob(v)) { el.input.focus(); return; }
    watch(v);
  });

  // Changing the minimum level starts a fresh view of the job with the new filter.
  el.level.addEventListener('change', () => {
    st.level = el.level.value;
    if (st.jobId && !st.stopped) watch(st.jobId);
    else updateUrl();
  });

  el.stop.addEventListener('click', () => {
    st.stopped = true;
    disconnect();
    flush();
    updateStats();
    setStatus('closed', 'stopped');
  });

  // ------------------------------------------------------------------ init

  (function init() {
    const p = new URLSearchParams(location.search);
    const lvl = p.get('level');
    if (LEVELS.includes(lvl)) { st.level = lvl; el.level.value = lvl; }
    setStatus('idle');
    updateStats();
    const job = (p.get('job') || '').trim();
    if (validJob(job)) {
      el.input.value = job;
      watch(job);
    } else {
      if (job) el.input.value = job;
      el.input.focus();
    }
  })();
})();
