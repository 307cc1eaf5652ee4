/*
 * Session log gateway – live log viewer.
 * Plain JS, no build step, no dependencies.
 *
 * Transport: ONE WebSocket `/ws` for every pane, with client frames
 *   {"op":"subscribe","job_id":N,"after_seq":M | "tail":K}   {"op":"unsubscribe","job_id":N}
 * (a gateway without `/ws` is detected, and each pane then uses `/ws/jobs/{job}`).
 * Frames are JSON: a log record, or {"control": "history_end"|"gap"|"dropped"|"unsubscribed"|
 * "error", "job_id": N, ...}.
 * History: GET /api/v1/jobs/{job}/logs?before_seq=|after_seq=&limit=&level= (load earlier lines,
 * jump back to the latest after browsing history).
 *
 * Log data is ALWAYS inserted as text (textContent / text nodes); ANSI colours become class
 * names; search matches are wrapped in <mark> elements built with createElement.
 *
 * Test hooks (stable):
 *   top bar: #job-input #watch-btn #stop-btn #level-select #search-input #search-count
 *     (data-count) #search-prev #search-next #match-only #pause-btn (aria-pressed)
 *     #add-pane-btn #status (text exactly idle|connecting|live|reconnecting|closed;
 *     data-state, data-detail) #panes (data-count)
 *   pane: .pane[data-job][data-state] > .pane-head (.pane-title .pane-form .pane-job-input
 *     .pane-watch .pane-count .pane-seq .pane-paused .pane-buffered .download .pane-close)
 *     and .log (the first pane's is #log, its jump button #jump-btn) holding .earlier
 *     (.load-earlier .earlier-info), .empty, then .chunk blocks of lines and markers; .jump
 *   line: .line[data-seq][data-level] > .ts .lvl .ctx(.dev .src) .seq .msg; ANSI spans
 *     .ansi-fg-N .ansi-bg-N .ansi-bold ...; markers .marker.gap .marker.dropped .marker.error
 *   search: .line.hit, mark.hit (mark.hit-start on each match's first piece, .current)
 * URL: ?job=1&job=2 (panes) &level=error &access_token=… (kept in sessionStorage, removed
 * from the address bar) &transport=job (force one socket per pane).
 */
(function () {
  'use strict';

  const TAIL = 1000;           // history lines requested when a pane starts
  const PAGE = 1000;           // lines per "load earlier" / catch-up request
  const MAX_LINES = 20000;     // max line/marker elements kept per pane
  const CHUNK = 100;           // lines per .chunk block (the unit of content-visibility)
  const MAX_PANES = 4;
  const BACKOFF_MIN = 500;     // ms, doubles per failed attempt ...
  const BACKOFF_MAX = 10000;   // ... up to this
  const LIVE_FALLBACK = 5000;  // ms after subscribing without history_end before we call it live
  const DRAIN_TIMEOUT = 3000;  // ms to wait for "unsubscribed" before restarting the socket
  const MAX_HITS_PER_LINE = 200;
  const LEVELS = ['debug', 'info', 'warning', 'error', 'critical'];
  const TOKEN_KEY = 'session-log-gateway.access_token';

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $('watch-form'), input: $('job-input'), stop: $('stop-btn'), status: $('status'),
    level: $('level-select'), search: $('search-input'), searchCount: $('search-count'),
    searchPrev: $('search-prev'), searchNext: $('search-next'), matchOnly: $('match-only'),
    pause: $('pause-btn'), add: $('add-pane-btn'), panes: $('panes'),
    template: $('pane-template'),
  };

  const app = {
    level: '',          // global minimum level ('' = all)
    paused: false,
    stopped: true,      // true: no connections wanted (Stop pressed, or nothing watched yet)
    everWatched: false,
    mode: 'mux',        // 'mux' (/ws) or 'job' (/ws/jobs/{id} per pane)
    panes: [],
  };

  // ------------------------------------------------------------------ auth

  /** Token from ?access_token= (then kept in sessionStorage and removed from the URL). */
  const auth = (function () {
    let token = null;
    const p = new URLSearchParams(location.search);
    if (p.has('access_token')) {
      token = p.get('access_token') || null;
      try {
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) { /* storage disabled: keep it in memory */ }
      p.delete('access_token');
      const q = p.toString();
      history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
    } else {
      try { token = sessionStorage.getItem(TOKEN_KEY); } catch (_) { token = null; }
    }
    return {
      get token() { return token; },
      headers() { return token ? { Authorization: 'Bearer ' + token } : {}; },
    };
  })();

  function wsUrl(path, params) {
    const p = new URLSearchParams(params || '');
    if (auth.token) p.set('access_token', auth.token);
    const q = p.toString();
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + path +
      (q ? '?' + q : '');
  }

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function getJson(path) {
    const res = await fetch(path, { headers: auth.headers(), cache: 'no-store' });
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try {
        const body = await res.json();
        if (body && typeof body.error === 'string') msg = res.status + ': ' + body.error;
      } catch (_) { /* not JSON */ }
      throw new HttpError(res.status, msg);
    }
    return res.json();
  }

  function historyUrl(jobId, params) {
    const p = new URLSearchParams(params);
    if (app.level) p.set('level', app.level);
    return '/api/v1/jobs/' + jobId + '/logs?' + p.toString();
  }

  // ------------------------------------------------------------- rendering

  function span(cls, text) {
    const s = document.createElement('span');
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function makeMarker(text, kind) {
    const m = document.createElement('div');
    m.className = 'marker ' + kind;
    m.setAttribute('role', 'note');
    m.textContent = text;
    return m;
  }

  const levelOf = (rec) => {
    const l = String(rec.level ?? 'info').toLowerCase();
    return l === 'warn' ? 'warning' : l;
  };
  const passesLevel = (level) =>
    !app.level || !LEVELS.includes(level) || LEVELS.indexOf(level) >= LEVELS.indexOf(app.level);
  const seqOf = (rec) => (Number.isSafeInteger(rec.seq) && rec.seq > 0 ? rec.seq : null);

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  /** ISO timestamp -> Date (sub-millisecond digits cut; naive means UTC, as the gateway says). */
  function parseTime(ts) {
    if (!ts) return null;
    let s = String(ts).replace(/(\.\d{3})\d+/, '$1');
    if (/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(s)) s += 'Z';
    const d = new Date(s);
    return isNaN(d.getTime()) ? null : d;
  }

  const FULL_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  function formatTime(d) {
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) + '.' +
      pad(d.getMilliseconds(), 3);
  }

  function renderRecord(rec) {
    const level = levelOf(rec);
    const seq = seqOf(rec);
    const line = document.createElement('div');
    line.className = 'line';
    line.dataset.level = level;
    if (seq !== null) line.dataset.seq = String(seq);

    const d = parseTime(rec.timestamp);
    const ts = span('ts', d ? formatTime(d) : String(rec.timestamp ?? ''));
    if (d) ts.title = FULL_TIME.format(d) + ' (local)\n' + String(rec.timestamp);

    // device + source; log_type and meta go into the tooltip
    const ctx = span('ctx', '');
    const tip = [];
    if (rec.device_id != null) {
      ctx.append(span('dev', 'dev ' + rec.device_id));
      tip.push('device ' + rec.device_id);
    }
    if (rec.source) {
      ctx.append(span('src', String(rec.source)));
      tip.push('source ' + rec.source);
    }
    if (rec.log_type) tip.push('type ' + rec.log_type);
    const meta = rec.meta ?? rec.extra;
    if (meta != null) {
      let m = '';
      try { m = JSON.stringify(meta); } catch (_) { /* ignore */ }
      if (m && m !== '{}') tip.push('meta ' + (m.length > 500 ? m.slice(0, 500) + '…' : m));
    }
    if (tip.length) ctx.title = tip.join('\n');

    const text = typeof rec.message === 'string' ? rec.message
      : rec.message == null ? '' : JSON.stringify(rec.message);
    const msg = document.createElement('span');
    msg.className = 'msg';
    renderAnsi(text, msg);

    line.append(ts, span('lvl', level), ctx, span('seq', seq !== null ? '#' + seq : ''), msg);
    return line;
  }

  // ------------------------------------------------------------------ ANSI

  // SGR (group 1 = parameters) | any other CSI / OSC / DCS-like string / 2-char ESC sequence |
  // 8-bit CSI. Everything but SGR is dropped.
  const ESC_RE = /\x1b\[([0-9;:]*)m|\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[ -/]*[0-~])|\x9b[0-?]*[ -/]*[@-~]/g;
  // remaining control characters except \t and \n (a lone ESC, BEL, backspace, ...)
  const CTRL_RE = /[\x00-\x08\x0b-\x1f\x7f]/g;

  /** Terminal-like line handling: CRLF is a newline; a bare CR returns to the line start. */
  function normaliseNewlines(s) {
    if (s.indexOf('\r') < 0) return s;
    return s.split('\n').map((l) => {
      l = l.replace(/\r+$/, '');
      const i = l.lastIndexOf('\r');
      return i < 0 ? l : l.slice(i + 1);
    }).join('\n');
  }

  /** xterm 24-bit colour -> nearest index of the 256-colour palette. */
  function rgbTo256(r, g, b) {
    const lvl = [0, 95, 135, 175, 215, 255];
    const near = (v) => {
      let best = 0;
      for (let i = 1; i < 6; i++) if (Math.abs(lvl[i] - v) < Math.abs(lvl[best] - v)) best = i;
      return best;
    };
    const ri = near(r), gi = near(g), bi = near(b);
    const cube = 16 + 36 * ri + 6 * gi + bi;
    const cubeErr = (lvl[ri] - r) ** 2 + (lvl[gi] - g) ** 2 + (lvl[bi] - b) ** 2;
    const avg = (r + g + b) / 3;
    const gray = Math.max(0, Math.min(23, Math.round((avg - 8) / 10)));
    const gv = 8 + 10 * gray;
    const grayErr = (gv - r) ** 2 + (gv - g) ** 2 + (gv - b) ** 2;
    return grayErr < cubeErr ? 232 + gray : cube;
  }

  /** Applies SGR parameters to the state {fg, bg, bold, dim, italic, underline, inverse, strike}. */
  function applySgr(st, params) {
    const p = params === '' ? [0] : params.split(/[;:]/).map((x) => (x === '' ? 0 : Number(x)));
    for (let i = 0; i < p.length; i++) {
      const n = p[i];
      if (n === 0) {
        st.fg = st.bg = null;
        st.bold = st.dim = st.italic = st.underline = st.inverse = st.strike = false;
      } else if (n === 1) st.bold = true;
      else if (n === 2) st.dim = true;
      else if (n === 3) st.italic = true;
      else if (n === 4) st.underline = true;
      else if (n === 7) st.inverse = true;
      else if (n === 9) st.strike = true;
      else if (n === 22) st.bold = st.dim = false;
      else if (n === 23) st.italic = false;
      else if (n === 24) st.underline = false;
      else if (n === 27) st.inverse = false;
      else if (n === 29) st.strike = false;
      else if (n >= 30 && n <= 37) st.fg = n - 30;
      else if (n === 39) st.fg = null;
      else if (n >= 40 && n <= 47) st.bg = n - 40;
      else if (n === 49) st.bg = null;
      else if (n >= 90 && n <= 97) st.fg = n - 90 + 8;
      else if (n >= 100 && n <= 107) st.bg = n - 100 + 8;
      else if (n === 38 || n === 48) {
        let c = null;
        if (p[i + 1] === 5 && i + 2 < p.length) { c = p[i + 2]; i += 2; }
        else if (p[i + 1] === 2 && i + 4 < p.length) {
          c = rgbTo256(p[i + 2], p[i + 3], p[i + 4]); i += 4;
        } else break;                       // malformed: ignore the rest
        if (Number.isInteger(c) && c >= 0 && c <= 255) {
          if (n === 38) st.fg = c; else st.bg = c;
        }
      }
      // anything else (blink, fonts, ...) is ignored
    }
  }

  function sgrClasses(st) {
    const cls = [];
    let fg = st.fg, bg = st.bg;
    if (st.inverse) {
      cls.push(bg === null ? 'ansi-fg-inv' : 'ansi-fg-' + bg);
      cls.push(fg === null ? 'ansi-bg-inv' : 'ansi-bg-' + fg);
      fg = bg = null;
    }
    if (fg !== null) cls.push('ansi-fg-' + fg);
    if (bg !== null) cls.push('ansi-bg-' + bg);
    if (st.bold) cls.push('ansi-bold');
    if (st.dim) cls.push('ansi-dim');
    if (st.italic) cls.push('ansi-italic');
    if (st.underline) cls.push('ansi-underline');
    if (st.strike) cls.push('ansi-strike');
    return cls.join(' ');
  }

  /** Renders text with ANSI escapes into `parent` as text nodes and classed spans. */
  function renderAnsi(raw, parent) {
    const s = normaliseNewlines(raw);
    if (s.indexOf('\x1b') < 0 && s.indexOf('\x9b') < 0) {
      parent.textContent = s.replace(CTRL_RE, '');
      return;
    }
    const st = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
      inverse: false, strike: false };
    let cls = '';
    let last = 0;
    const emit = (text) => {
      text = text.replace(CTRL_RE, '');
      if (!text) return;
      if (cls) parent.append(span(cls, text));
      else parent.append(document.createTextNode(text));
    };
    ESC_RE.lastIndex = 0;
    let m;
    while ((m = ESC_RE.exec(s)) !== null) {
      emit(s.slice(last, m.index));
      last = ESC_RE.lastIndex;
      if (m[1] !== undefined) {
        applySgr(st, m[1]);
        cls = sgrClasses(st);
      }
    }
    emit(s.slice(last));
  }

  // ---------------------------------------------------------------- search

  const search = {
    query: '',
    re: null,
    current: null,      // the mark.hit-start currently selected
    timer: null,
  };

  function escapeRegExp(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }

  /** Removes the highlights inside one line. */
  function unhighlightLine(line) {
    const msg = line.querySelector('.msg');
    line.classList.remove('hit');
    if (!msg) return;
    const marks = msg.querySelectorAll('mark');
    if (!marks.length) return;
    for (const mk of marks) mk.replaceWith(...mk.childNodes);
    msg.normalize();
  }

  /**
   * Wraps every match of the current search in the line's message in <mark> elements
   * (a match crossing ANSI spans gets one <mark> per piece). Returns the number of matches.
   */
  function highlightLine(line) {
    const re = search.re;
    if (!re) return 0;
    const msg = line.querySelector('.msg');
    if (!msg) return 0;
    const text = msg.textContent;
    const ranges = [];
    re.lastIndex = 0;
    let m;
    while ((m = re.exec(text)) !== null && ranges.length < MAX_HITS_PER_LINE) {
      ranges.push([m.index, m.index + m[0].length]);
    }
    if (!ranges.length) { line.classList.remove('hit'); return 0; }
    line.classList.add('hit');

    const walker = document.createTreeWalker(msg, NodeFilter.SHOW_TEXT);
    const nodes = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n);
    let offset = 0;
    let ri = 0;
    for (const node of nodes) {
      const start = offset;
      const end = offset + node.data.length;
      offset = end;
      const pieces = [];
      while (ri < ranges.length && ranges[ri][0] < end) {
        const [rs, re2] = ranges[ri];
        const s = Math.max(rs, start), e = Math.min(re2, end);
        if (s < e) pieces.push([s - start, e - start, rs >= start]);
        if (re2 <= end) ri++; else break;
      }
      // split from the back so that earlier offsets in `node` stay valid
      for (let k = pieces.length - 1; k >= 0; k--) {
        const [s, e, first] = pieces[k];
        const mid = s > 0 ? node.splitText(s) : node;
        if (e - s < mid.data.length) mid.splitText(e - s);
        const mark = document.createElement('mark');
        mark.className = first ? 'hit hit-start' : 'hit';
        mid.replaceWith(mark);
        mark.appendChild(mid);
      }
    }
    return ranges.length;
  }

  function setSearch(q) {
    search.query = q;
    search.re = q ? new RegExp(escapeRegExp(q), 'gi') : null;
    search.current = null;
    for (const pane of app.panes) {
      for (const line of pane.log.querySelectorAll('.line.hit')) unhighlightLine(line);
      if (search.re) for (const line of pane.log.querySelectorAll('.line')) highlightLine(line);
      pane.el.classList.toggle('only-matches', !!search.re && ui.matchOnly.checked);
    }
    updateSearchCount();
  }

  function allHits() {
    const hits = [];
    for (const pane of app.panes) hits.push(...pane.log.querySelectorAll('mark.hit-start'));
    return hits;
  }

  function updateSearchCount() {
    const on = !!search.re;
    ui.searchPrev.disabled = ui.searchNext.disabled = !on;
    if (!on) { ui.searchCount.textContent = ''; delete ui.searchCount.dataset.count; return; }
    const hits = allHits();
    const cur = search.current && search.current.isConnected ? hits.indexOf(search.current) : -1;
    ui.searchCount.dataset.count = String(hits.length);
    ui.searchCount.textContent = hits.length === 0 ? 'no matches'
      : (cur >= 0 ? (cur + 1).toLocaleString() + ' / ' : '') + hits.length.toLocaleString() +
        (hits.length === 1 ? ' match' : ' matches');
  }

  function gotoHit(dir) {
    const hits = allHits();
    if (!hits.length) { updateSearchCount(); return; }
    let i = search.current && search.current.isConnected ? hits.indexOf(search.current) : -1;
    i = i < 0 ? (dir > 0 ? 0 : hits.length - 1) : (i + dir + hits.length) % hits.length;
    if (search.current) search.current.classList.remove('current');
    search.current = hits[i];
    search.current.classList.add('current');
    const pane = app.panes.find((p) => p.log.contains(search.current));
    if (pane) pane.setFollow(false);
    search.current.scrollIntoView({ block: 'center', inline: 'nearest' });
    updateSearchCount();
  }

  // ---------------------------------------------------------------- panes

  // When the user last did something that scrolls (see Pane.onScroll).
  let userScrollAt = -Infinity;
  const SCROLL_KEYS = new Set(['ArrowUp', 'ArrowDown', 'PageUp', 'PageDown', 'Home', 'End', ' ']);
  const noteUserScroll = (ev) => {
    if (ev.type === 'keydown' && (!SCROLL_KEYS.has(ev.key) ||
        (ev.target && /^(INPUT|SELECT|TEXTAREA)$/.test(ev.target.tagName)))) return;
    userScrollAt = performance.now();
  };
  for (const type of ['wheel', 'touchstart', 'touchmove', 'pointerdown', 'keydown']) {
    document.addEventListener(type, noteUserScroll, { capture: true, passive: true });
  }

  let flushScheduled = false;
  function scheduleFlush() {
    if (flushScheduled) return;
    flushScheduled = true;
    requestAnimationFrame(flushAll);
    setTimeout(flushAll, 250);               // rAF is paused in hidden tabs
  }
  function flushAll() {
    if (!flushScheduled) return;
    flushScheduled = false;
    let searched = false;
    for (const pane of app.panes) searched = pane.flush() || searched;
    if (searched) updateSearchCount();
    updatePauseButton();
  }

  class Pane {
    constructor(primary) {
      const frag = ui.template.content.cloneNode(true);
      const q = (sel) => frag.querySelector(sel);
      this.el = q('.pane');
      this.title = q('.pane-title');
      this.form = q('.pane-form');
      this.jobInput = q('.pane-job-input');
      this.countEl = q('.pane-count');
      this.seqEl = q('.pane-seq');
      this.pausedEl = q('.pane-paused');
      this.bufferedEl = q('.pane-buffered');
      this.download = q('.download');
      this.closeBtn = q('.pane-close');
      this.log = q('.log');
      this.earlier = q('.earlier');
      this.earlierBtn = q('.load-earlier');
      this.earlierInfo = q('.earlier-info');
      this.emptyEl = q('.empty');   // lines follow this element
      this.jump = q('.jump');
      this.primary = primary;
      if (primary) {
        this.log.id = 'log';
        this.jump.id = 'jump-btn';
        this.countEl.id = 'line-count';
        this.seqEl.id = 'last-seq';
        this.title.id = 'job-label';
      } else {
        this.closeBtn.hidden = false;
        this.form.hidden = false;
        this.title.hidden = true;
        this.emptyEl.textContent = 'Type a job id above and press Watch.';
      }
      this.jobId = null;
      this.gen = 0;                 // bumped on every reset: stale async results are dropped
      this.conn = 'idle';           // idle | connecting | live | reconnecting | closed
      this.connDetail = null;
      this.failed = false;          // closed for good by the server (bad job, forbidden)
      this.ws = null;               // own socket in 'job' mode
      this.backoff = BACKOFF_MIN;
      this.attempt = 0;
      this.retryTimer = null;
      this.retryDue = 0;
      this.liveTimer = null;
      this.resetState();
      this.bind();
      ui.panes.append(this.el);
    }

    resetState() {
      this.gen++;
      this.lastSeq = null;          // highest seq received (dedupe + resume point)
      this.firstSeq = null;         // lowest seq in the DOM (for "load earlier")
      this.domLastSeq = null;       // highest seq in the DOM or pending
      this.count = 0;               // line + marker elements in the DOM
      this.received = 0;
      this.pending = [];            // {rec} | {node}, rendered at the next flush
      this.resetOnFlush = false;    // pending overflowed: clear the DOM before rendering it
      this.follow = true;           // stick to the bottom
      this.unseen = 0;              // lines not on screen: below the view, or not loaded
      this.detached = false;        // DOM holds an older window: live lines only counted
      this.atStart = false;         // the DOM starts at the job's first (matching) line
      this.loadingEarlier = false;
      this.catching = false;
      this.histCount = 0;           // records received in the current subscription's history
      this.histFresh = false;       // current subscription started with `tail`
      this.historyDone = false;
      clearTimeout(this.liveTimer);
    }

    bind() {
      this.log.addEventListener('scroll', () => this.onScroll(), { passive: true });
      // a pane added or closed beside this one, or a resized window: lines rewrap; stay pinned
      if (typeof ResizeObserver === 'function') {
        new ResizeObserver(() => { if (this.follow && !this.detached) this.scrollToBottom(); })
          .observe(this.log);
      }
      this.jump.addEventListener('click', () => this.jumpToLatest());
      this.earlierBtn.addEventListener('click', () => this.loadEarlier());
      this.closeBtn.addEventListener('click', () => closePane(this));
      this.download.addEventListener('click', (ev) => this.onDownload(ev));
      this.form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const v = normaliseJob(this.jobInput.value);
        if (!v) { this.jobInput.focus(); return; }
        const other = app.panes.find((p) => p !== this && p.jobId === v);
        if (other) { flash(other.el); this.jobInput.select(); return; }
        startWatching(this, v);
      });
    }

    // ---- lifecycle

    /** Shows `jobId` from scratch (clears the pane) and subscribes. */
    watch(jobId) {
      const old = this.jobId;
      this.stopSocket();
      if (old && app.mode === 'mux') mux.unsubscribe(old);
      this.jobId = jobId;
      this.failed = false;
      this.el.dataset.job = jobId;
      this.title.textContent = 'job ' + jobId;
      this.title.hidden = false;
      this.form.hidden = true;
      this.download.hidden = false;
      this.download.href = '/api/v1/jobs/' + jobId + '/logs.txt';
      this.download.setAttribute('download', 'job-' + jobId + '.log');
      this.restart();
    }

    /** Clears the lines and subscribes again (new job, or new level filter). */
    restart() {
      this.resetState();
      this.clearLines();
      this.emptyEl.textContent = 'Waiting for log lines of job ' + this.jobId + '…';
      this.updateEarlier();
      this.updateJump();
      this.updateStats();
      if (app.stopped) return;
      this.setConn('connecting');
      if (app.mode === 'mux') mux.subscribe(this);
      else this.connect();
    }

    /** Unsubscribes and removes the pane's socket (lines stay). */
    stopSocket() {
      clearTimeout(this.retryTimer);
      clearTimeout(this.liveTimer);
      this.retryTimer = null;
      const ws = this.ws;
      this.ws = null;
      if (ws) try { ws.close(1000, 'viewer closed'); } catch (_) { /* ignore */ }
    }

    destroy() {
      this.stopSocket();
      if (this.jobId && app.mode === 'mux') mux.unsubscribe(this.jobId);
      this.gen++;
      this.el.remove();
    }

    setConn(state, detail) {
      this.conn = state;
      this.connDetail = detail || null;
      this.el.dataset.state = state;
      this.title.title = detail ? state + ' – ' + detail : state;
      renderStatus();
    }

    /** Where the next subscription starts: the last seq held, or a fresh tail. */
    startParams() {
      if (this.lastSeq === null) {
        this.histFresh = true;
        return { tail: TAIL };
      }
      this.histFresh = false;
      return { after_seq: this.lastSeq };
    }

    /** Called right before a subscription is (re)made on a socket. */
    onSubscribing() {
      this.histCount = 0;
      this.historyDone = false;
      this.setConn('connecting', 'loading history');
      clearTimeout(this.liveTimer);
      const gen = this.gen;
      // Should history_end never arrive, don't stay "connecting" forever.
      this.liveTimer = setTimeout(() => {
        if (gen === this.gen && this.conn === 'connecting') this.goLive();
      }, LIVE_FALLBACK);
    }

    goLive() {
      clearTimeout(this.liveTimer);
      this.historyDone = true;
      this.attempt = 0;
      this.setConn('live');
    }

    onDisconnected(detail) {
      clearTimeout(this.liveTimer);
      if (!this.failed) this.setConn('reconnecting', detail);
    }

    fail(reason) {
      this.failed = true;
      clearTimeout(this.liveTimer);
      this.setConn('closed', reason);
      this.enqueueNode(makeMarker('closed: ' + reason, 'error'));
    }

    // ---- own socket ('job' mode: a gateway without /ws)

    connect() {
      this.stopSocket();
      if (app.stopped || !this.jobId || this.failed) return;
      const params = new URLSearchParams();
      const start = this.startParams();
      for (const k in start) params.set(k, String(start[k]));
      if (app.level) params.set('level', app.level);
      this.attempt++;
      this.setConn('connecting', this.attempt > 1 ? 'attempt ' + this.attempt : null);
      let ws;
      try { ws = new WebSocket(wsUrl('/ws/jobs/' + this.jobId, params)); } catch (err) {
        console.error('WebSocket failed', err);
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      let gotFrame = false;
      ws.onopen = () => { if (ws === this.ws) this.onSubscribing(); };
      ws.onmessage = (ev) => {
        if (ws !== this.ws) return;
        if (!gotFrame) { gotFrame = true; this.backoff = BACKOFF_MIN; }
        const msg = parseFrame(ev.data);
        if (msg) this.onFrame(msg);
      };
      ws.onclose = (ev) => {
        if (ws !== this.ws) return;
        this.ws = null;
        flushAll();
        if (isFinalClose(ev.code)) {
          this.fail(ev.reason || 'server closed the connection (code ' + ev.code + ')');
          return;
        }
        this.scheduleReconnect();
      };
    }

    scheduleReconnect() {
      if (app.stopped || this.failed) return;
      const delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
      this.retryDue = Date.now() + delay;
      this.onDisconnected();
      this.retryTimer = setTimeout(() => { this.retryTimer = null; this.connect(); }, delay);
      startTicker();
    }

    // ---- frames

    onFrame(msg) {
      if (typeof msg.control === 'string' || 'control' in msg) this.onControl(msg);
      else this.onRecord(msg);
    }

    onControl(msg) {
      switch (msg.control) {
        case 'history_end': {
          const last = Number(msg.last_seq);
          if (Number.isSafeInteger(last) && last > 0 && (this.lastSeq === null || last > this.lastSeq)) {
            // Everything stored up to last_seq has been sent (the rest was filtered out).
            this.lastSeq = last;
            if (!this.detached && !this.catching) this.domLastSeq = last;
          }
          if (this.histFresh && this.histCount < TAIL) this.atStart = true;
          if (!app.paused) flushAll();       // render the history before announcing "live"
          this.updateEarlier();
          this.updateStats();
          this.goLive();
          break;
        }
        case 'gap':
          this.enqueueNode(makeMarker(gapText(msg), 'gap'));
          break;
        case 'dropped': {
          const n = Number(msg.count) || 0;
          this.enqueueNode(makeMarker(n.toLocaleString() + ' unsequenced line' +
            (n === 1 ? '' : 's') + ' dropped (the viewer fell behind)', 'dropped'));
          break;
        }
        case 'error':
          this.fail(String(msg.message ?? 'error'));
          break;
        case 'unsubscribed':
          break;
        default:
          console.debug('unknown control frame', msg);
      }
    }

    onRecord(rec) {
      const seq = seqOf(rec);
      if (seq !== null) {
        if (this.lastSeq !== null && seq <= this.lastSeq) return;   // duplicate / replay
        this.lastSeq = seq;
      }
      if (!this.historyDone) this.histCount++;
      if (!passesLevel(levelOf(rec))) return;
      this.received++;
      if (this.detached || this.catching) {
        // The DOM shows an older window (or is being refilled from history): count only;
        // sequenced lines are fetched from the history API when the user comes back.
        this.unseen++;
        this.updateJump();
        this.updateStats();
        return;
      }
      if (seq !== null) this.domLastSeq = seq;
      this.pending.push({ rec });
      this.trimPending();
      scheduleFlush();
    }

    enqueueNode(node) {
      if (this.detached || this.catching) {
        this.appendNodes([node]);            // markers are rare: keep them visible
        return;
      }
      this.pending.push({ node });
      this.trimPending();
      scheduleFlush();
    }

    trimPending() {
      if (this.pending.length > MAX_LINES) {          // paused, or a hidden tab: keep the tail
        this.pending.splice(0, this.pending.length - MAX_LINES);
        this.resetOnFlush = true;
      }
    }

    // ---- DOM: lines live in .chunk blocks of up to CHUNK elements after .empty, so that
    // content-visibility skips whole blocks off screen (cheap with 20,000 lines).

    newChunk() {
      const c = document.createElement('div');
      c.className = 'chunk';
      return c;
    }

    appendNodes(nodes) {
      if (!nodes.length) return;
      let i = 0;
      const last = this.log.lastElementChild;
      if (last && last.classList.contains('chunk') && last.childElementCount < CHUNK) {
        const frag = document.createDocumentFragment();
        const room = CHUNK - last.childElementCount;
        for (; i < nodes.length && i < room; i++) frag.appendChild(nodes[i]);
        last.appendChild(frag);
      }
      const frag = document.createDocumentFragment();
      while (i < nodes.length) {
        const c = this.newChunk();
        for (let k = 0; k < CHUNK && i < nodes.length; k++, i++) c.appendChild(nodes[i]);
        frag.appendChild(c);
      }
      this.log.appendChild(frag);
      this.count += nodes.length;
      this.emptyEl.hidden = true;
    }

    prependNodes(nodes) {
      if (!nodes.length) return;
      const frag = document.createDocumentFragment();
      for (let i = 0; i < nodes.length;) {
        const c = this.newChunk();
        for (let k = 0; k < CHUNK && i < nodes.length; k++, i++) c.appendChild(nodes[i]);
        frag.appendChild(c);
      }
      this.emptyEl.after(frag);
      this.count += nodes.length;
      this.emptyEl.hidden = true;
    }

    removeFromTop(n) {
      while (n > 0) {
        const c = this.emptyEl.nextElementSibling;
        if (!c) break;
        const k = c.childElementCount;
        if (k <= n) { c.remove(); n -= k; this.count -= k; continue; }
        for (let j = 0; j < n; j++) c.firstElementChild.remove();
        this.count -= n;
        n = 0;
      }
    }

    removeFromBottom(n) {
      while (n > 0) {
        const c = this.log.lastElementChild;
        if (!c || c === this.emptyEl) break;
        const k = c.childElementCount;
        if (k <= n) { c.remove(); n -= k; this.count -= k; continue; }
        for (let j = 0; j < n; j++) c.lastElementChild.remove();
        this.count -= n;
        n = 0;
      }
    }

    firstSeqInDom() {
      const l = this.log.querySelector('.line[data-seq]');
      return l ? Number(l.dataset.seq) : null;
    }

    lastSeqInDom() {
      for (let c = this.log.lastElementChild; c && c !== this.emptyEl; c = c.previousElementSibling) {
        for (let l = c.lastElementChild; l; l = l.previousElementSibling) {
          if (l.dataset.seq) return Number(l.dataset.seq);
        }
      }
      return null;
    }

    clearLines() {
      while (this.emptyEl.nextSibling) this.emptyEl.nextSibling.remove();
      this.emptyEl.hidden = false;
      this.count = 0;
      this.firstSeq = null;
      if (search.current && !search.current.isConnected) search.current = null;
    }

    /** Renders pending lines (unless paused). Returns true when search highlights changed. */
    flush() {
      if (app.paused || !this.pending.length) { this.updateStats(); return false; }
      const items = this.pending;
      this.pending = [];
      if (this.resetOnFlush) {
        this.resetOnFlush = false;
        this.clearLines();
        this.atStart = false;
      }
      const nodes = [];
      let added = 0;
      let hits = false;
      for (const it of items) {
        const node = it.rec ? renderRecord(it.rec) : it.node;
        if (it.rec) {
          added++;
          const seq = seqOf(it.rec);
          if (seq !== null && this.firstSeq === null) this.firstSeq = seq;
          if (search.re && highlightLine(node)) hits = true;
        }
        nodes.push(node);
      }
      this.appendNodes(nodes);
      this.trimTop();
      if (this.follow) this.scrollToBottom();
      else { this.unseen += added; this.updateJump(); }
      this.updateEarlier();
      this.updateStats();
      return hits;
    }

    /** Keeps at most MAX_LINES elements by removing the oldest, holding the view steady. */
    trimTop() {
      const excess = this.count - MAX_LINES;
      if (excess <= 0) return;
      const before = this.follow ? 0 : this.log.scrollHeight;
      this.removeFromTop(excess);
      this.firstSeq = this.firstSeqInDom();
      this.atStart = false;
      if (!this.follow) this.log.scrollTop -= before - this.log.scrollHeight;
    }

    /** Keeps at most MAX_LINES elements by removing the newest: the pane detaches from live. */
    trimBottom() {
      const excess = this.count - MAX_LINES;
      if (excess <= 0) return;
      this.removeFromBottom(excess);
      this.domLastSeq = this.lastSeqInDom() ?? this.firstSeq;
      this.pending = [];
      this.resetOnFlush = false;
      this.detached = true;
      this.follow = false;
      this.unseen = Math.max(0, (this.lastSeq ?? 0) - (this.domLastSeq ?? 0));
      this.updateJump();
    }

    scrollToBottom() { this.log.scrollTop = this.log.scrollHeight; }

    atBottom() {
      const log = this.log;
      return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    }

    /**
     * Reaching the bottom (any way) resumes following; only the user (wheel, touch, pointer,
     * keys) stops it. Our own scrollToBottom followed by a reflow (lines rewrapping in a
     * narrower pane) must not look like "the user scrolled up".
     */
    onScroll() {
      if (this.detached) return;               // only the jump button re-attaches
      if (this.atBottom()) {
        if (!this.follow) { this.follow = true; this.unseen = 0; this.updateJump(); }
      } else if (this.follow && performance.now() - userScrollAt < 1500) {
        this.follow = false;
        this.updateJump();
      }
    }

    setFollow(on) {
      this.follow = on;
      if (on) { this.unseen = 0; this.scrollToBottom(); }
      this.updateJump();
    }

    updateJump() {
      const show = this.detached || (!this.follow && this.unseen > 0);
      this.jump.hidden = !show;
      if (!show) return;
      const n = this.unseen;
      this.jump.textContent = this.detached
        ? (n > 0 ? n.toLocaleString() + ' newer line' + (n === 1 ? '' : 's') + ' · ' : '') +
          'jump to latest ↓'
        : n.toLocaleString() + ' new line' + (n === 1 ? '' : 's') + ' ↓';
    }

    updateEarlier() {
      const show = this.firstSeq !== null && this.count > 0;
      this.earlier.hidden = !show;
      if (!show) return;
      this.earlier.classList.toggle('at-start', this.atStart);
      this.earlierBtn.hidden = this.atStart;
      if (this.atStart) {
        this.earlierInfo.textContent = 'start of job ' + this.jobId;
      } else {
        this.earlierBtn.disabled = this.loadingEarlier;
        this.earlierBtn.textContent = this.loadingEarlier ? 'Loading…'
          : '↑ Load ' + PAGE.toLocaleString() + ' earlier lines';
        this.earlierInfo.textContent = !app.level && this.firstSeq > 1
          ? (this.firstSeq - 1).toLocaleString() + ' before #' + this.firstSeq : '';
      }
    }

    updateStats() {
      this.countEl.textContent = this.received.toLocaleString();
      this.seqEl.textContent = this.lastSeq === null ? '–' : '#' + this.lastSeq;
      const buffered = app.paused ? this.pending.length : 0;
      this.pausedEl.hidden = !app.paused || !this.jobId;
      this.bufferedEl.textContent = buffered.toLocaleString();
    }

    // ---- history

    /** Prepends the page of lines before the first one shown (history API, before_seq). */
    async loadEarlier() {
      if (this.loadingEarlier || this.firstSeq === null || this.atStart) return;
      const gen = this.gen;
      const before = this.firstSeq;
      this.loadingEarlier = true;
      this.updateEarlier();
      try {
        const res = await getJson(historyUrl(this.jobId, { before_seq: before, limit: PAGE }));
        if (gen !== this.gen) return;
        const recs = (res.records || []).filter((r) => {
          const s = seqOf(r);
          return s !== null && s < before && passesLevel(levelOf(r));
        });
        if ((res.records || []).length < PAGE) this.atStart = true;
        if (!recs.length) return;
        const nodes = recs.map((r) => {
          const node = renderRecord(r);
          if (search.re) highlightLine(node);
          return node;
        });
        const log = this.log;
        const h = log.scrollHeight, top = log.scrollTop;
        this.prependNodes(nodes);
        this.firstSeq = seqOf(recs[0]);
        if (!this.atStart && !app.level && this.firstSeq === 1) this.atStart = true;
        log.scrollTop = top + (log.scrollHeight - h);   // keep the lines in view where they were
        if (this.count > MAX_LINES) this.trimBottom();
        else if (!this.atBottom()) this.setFollow(false);
        if (search.re) updateSearchCount();
      } catch (err) {
        if (gen === this.gen) this.earlierInfo.textContent = 'could not load: ' + err.message;
        console.error('load earlier failed', err);
        return;
      } finally {
        if (gen === this.gen) {
          this.loadingEarlier = false;
          this.updateEarlier();
        }
      }
    }

    /**
     * Comes back to the live tail after browsing history (or when the jump button is pressed
     * while detached): refills from the history API until it holds the last seq received,
     * then attaches to the live stream again, all without a gap or a duplicate.
     */
    async jumpToLatest() {
      if (!this.detached) { this.setFollow(true); return; }
      if (this.catching) return;
      const gen = this.gen;
      this.catching = true;
      this.jump.disabled = true;
      try {
        if (this.domLastSeq === null || (this.lastSeq ?? 0) - this.domLastSeq > MAX_LINES / 2) {
          // far behind: start over from the latest page
          const target = this.lastSeq ?? 0;
          const res = await getJson(historyUrl(this.jobId, { before_seq: target + 1, limit: TAIL }));
          if (gen !== this.gen) return;
          this.clearLines();
          this.domLastSeq = null;
          this.atStart = (res.records || []).length < TAIL;
          this.appendHistory(res.records || []);
          this.domLastSeq = Math.max(this.domLastSeq ?? 0, target);
        }
        for (;;) {
          const target = this.lastSeq ?? 0;
          if ((this.domLastSeq ?? 0) >= target) break;
          const after = this.domLastSeq ?? 0;
          const res = await getJson(historyUrl(this.jobId, { after_seq: after, limit: PAGE }));
          if (gen !== this.gen) return;
          const recs = res.records || [];
          this.appendHistory(recs);
          if (recs.length >= PAGE) continue;
          // a short page holds everything stored when it was read, i.e. up to `target` at least
          this.domLastSeq = Math.max(this.domLastSeq ?? 0, target);
        }
        // synchronously from the check above: nothing can arrive in between
        this.detached = false;
        this.unseen = 0;
        this.setFollow(true);
        this.updateEarlier();
      } catch (err) {
        console.error('jump to latest failed', err);
        if (gen === this.gen) this.jump.textContent = 'could not load (' + err.message + ') – retry ↓';
      } finally {
        if (gen === this.gen) {
          this.catching = false;
          this.jump.disabled = false;
        }
      }
    }

    appendHistory(records) {
      const nodes = [];
      for (const r of records) {
        const s = seqOf(r);
        if (s === null || (this.domLastSeq !== null && s <= this.domLastSeq)) continue;
        if (!passesLevel(levelOf(r))) continue;
        const node = renderRecord(r);
        if (search.re) highlightLine(node);
        nodes.push(node);
        this.domLastSeq = s;
        if (this.firstSeq === null) this.firstSeq = s;
      }
      if (!nodes.length) return;
      this.appendNodes(nodes);
      const follow = this.follow;
      this.follow = true;                       // trimming from the top: no need to hold the view
      this.trimTop();
      this.follow = follow;
      this.scrollToBottom();
      if (search.re) updateSearchCount();
    }

    // ---- download

    /** With a token the link cannot carry the Authorization header: fetch it and save a blob. */
    async onDownload(ev) {
      if (!auth.token || !this.jobId) return;     // plain link
      ev.preventDefault();
      try {
        const res = await fetch(this.download.href, { headers: auth.headers() });
        if (!res.ok) throw new Error(res.status + ' ' + res.statusText);
        const url = URL.createObjectURL(await res.blob());
        const a = document.createElement('a');
        a.href = url;
        a.download = 'job-' + this.jobId + '.log';
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (err) {
        console.error('download failed', err);
        this.enqueueNode(makeMarker('download failed: ' + err.message, 'error'));
      }
    }
  }

  function gapText(msg) {
    switch (msg.reason) {
      case 'redis_reconnect':
        return 'Redis reconnected: sequenced lines were re-read from the database' +
          (msg.healed_to_seq != null ? ' (up to #' + msg.healed_to_seq + ')' : '') +
          '; lines published without a seq meanwhile may be missing';
      case 'database_unavailable':
        return 'lines ' + (msg.from_seq != null ? '#' + msg.from_seq : '?') + '–' +
          (msg.to_seq != null ? '#' + msg.to_seq : '?') +
          ' could not be loaded (database unavailable)';
      case 'history_unavailable':
        return 'history unavailable (database unreachable): showing live lines only';
      default:
        return 'possible gap: ' + String(msg.reason ?? 'unknown');
    }
  }

  function parseFrame(data) {
    if (typeof data !== 'string') return null;
    let msg;
    try { msg = JSON.parse(data); } catch (_) {
      console.warn('ignoring non-JSON frame', data.slice(0, 200));
      return null;
    }
    return msg && typeof msg === 'object' && !Array.isArray(msg) ? msg : null;
  }

  /** 1008 (policy, e.g. unauthorized) and 4xxx (application) closes are final. */
  const isFinalClose = (code) => code === 1008 || (code >= 4000 && code < 5000);

  // ------------------------------------------------------ shared socket /ws

  const mux = {
    ws: null,
    open: false,
    everOpened: false,
    backoff: BACKOFF_MIN,
    attempt: 0,
    retryTimer: null,
    retryDue: 0,
    draining: new Map(),       // job id -> timer: unsubscribed, waiting for "unsubscribed"

    ensure() {
      if (app.stopped || app.mode !== 'mux' || this.ws || this.retryTimer) return;
      if (app.panes.some((p) => p.jobId && !p.failed)) this.connect();
    },

    connect() {
      this.close();
      this.attempt++;
      for (const p of app.panes) {
        if (p.jobId && !p.failed) {
          p.setConn('connecting', this.attempt > 1 ? 'attempt ' + this.attempt : null);
        }
      }
      let ws;
      try { ws = new WebSocket(wsUrl('/ws')); } catch (err) {
        console.error('WebSocket failed', err);
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      let gotFrame = false;
      ws.onopen = () => {
        if (ws !== this.ws) return;
        this.open = true;
        this.everOpened = true;
        for (const p of app.panes) if (p.jobId && !p.failed) this.subscribe(p);
      };
      ws.onmessage = (ev) => {
        if (ws !== this.ws) return;
        if (!gotFrame) { gotFrame = true; this.backoff = BACKOFF_MIN; this.attempt = 0; }
        const msg = parseFrame(ev.data);
        if (msg) this.route(msg);
      };
      ws.onclose = (ev) => {
        if (ws !== this.ws) return;
        const opened = this.open;
        this.ws = null;
        this.open = false;
        this.clearDraining();
        flushAll();
        if (isFinalClose(ev.code)) {
          for (const p of app.panes) {
            if (p.jobId && !p.failed) {
              p.fail(ev.reason || 'server closed the connection (code ' + ev.code + ')');
            }
          }
          return;
        }
        if (!opened) this.probe();
        this.scheduleReconnect();
      };
    },

    /** The handshake failed: find out whether /ws exists at all, or we are not allowed. */
    async probe() {
      let status = 0;
      try {
        const res = await fetch(wsUrl('/ws').replace(/^ws/, 'http'), {
          headers: auth.headers(), cache: 'no-store',
        });
        status = res.status;
      } catch (_) { return; }                        // gateway unreachable: keep retrying
      if (status === 404 && !this.everOpened && app.mode === 'mux') {
        console.info('this gateway has no /ws: one socket per job instead');
        this.close();
        app.mode = 'job';
        for (const p of app.panes) if (p.jobId && !p.failed) p.connect();
      } else if (status === 401 || status === 403) {
        this.close();
        for (const p of app.panes) {
          if (p.jobId && !p.failed) p.fail(status === 401 ? 'unauthorized: open the viewer with ?access_token=…' : 'forbidden');
        }
      }
    },

    close() {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.clearDraining();
      const ws = this.ws;
      this.ws = null;
      this.open = false;
      if (ws) try { ws.close(1000, 'viewer closed'); } catch (_) { /* ignore */ }
    },

    /** Starts over: every pane subscribes again on a new socket. */
    restart() {
      this.close();
      this.backoff = BACKOFF_MIN;
      this.attempt = 0;
      this.ensure();
    },

    scheduleReconnect() {
      if (app.stopped || app.mode !== 'mux') return;
      const delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
      this.retryDue = Date.now() + delay;
      for (const p of app.panes) if (p.jobId) p.onDisconnected();
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (app.mode === 'mux') this.ensure();
      }, delay);
      startTicker();
    },

    send(obj) {
      try { this.ws.send(JSON.stringify(obj)); } catch (err) { console.error('send failed', err); }
    },

    subscribe(pane) {
      if (!this.open) { this.ensure(); return; }
      if (this.draining.has(pane.jobId)) return;     // sent when "unsubscribed" arrives
      const frame = { op: 'subscribe', job_id: Number(pane.jobId) };
      Object.assign(frame, pane.startParams());
      if (app.level) frame.level = app.level;
      pane.onSubscribing();
      this.send(frame);
    },

    unsubscribe(jobId) {
      if (!this.open) return;
      this.send({ op: 'unsubscribe', job_id: Number(jobId) });
      clearTimeout(this.draining.get(jobId));
      this.draining.set(jobId, setTimeout(() => {
        // no "unsubscribed" came back: start over on a new socket rather than mix streams
        if (this.draining.has(jobId)) this.restart();
      }, DRAIN_TIMEOUT));
    },

    clearDraining() {
      for (const t of this.draining.values()) clearTimeout(t);
      this.draining.clear();
    },

    route(msg) {
      const job = msg.job_id != null ? String(msg.job_id) : null;
      if (job === null) {
        if (msg.control === 'error') showNotice(String(msg.message ?? 'error'));
        else console.debug('frame without job_id', msg);
        return;
      }
      if (this.draining.has(job)) {
        // frames of a subscription we have left; "unsubscribed" ends them
        if (msg.control === 'unsubscribed') {
          clearTimeout(this.draining.get(job));
          this.draining.delete(job);
          const p = paneByJob(job);
          if (p && !p.failed) this.subscribe(p);
        }
        return;
      }
      const p = paneByJob(job);
      if (p) p.onFrame(msg);
    },
  };

  // ----------------------------------------------------------- app status

  let ticker = null;
  function startTicker() {
    renderStatus();
    if (!ticker) ticker = setInterval(renderStatus, 100);
  }

  /** #status aggregates the panes: reconnecting > connecting > live; closed when all are. */
  function renderStatus() {
    const active = app.panes.filter((p) => p.jobId);
    let state, detail = null;
    if (!active.length) state = app.stopped && app.everWatched ? 'closed' : 'idle';
    else if (app.stopped) { state = 'closed'; detail = 'stopped'; }
    else {
      const states = active.map((p) => p.conn);
      if (states.includes('reconnecting')) {
        state = 'reconnecting';
        const due = app.mode === 'mux' ? mux.retryDue
          : Math.min(...active.filter((p) => p.conn === 'reconnecting').map((p) => p.retryDue || Infinity));
        const s = Math.max(0, due - Date.now()) / 1000;
        detail = Number.isFinite(s) ? 'retry in ' + s.toFixed(1) + 's' : null;
      } else if (states.includes('connecting')) {
        state = 'connecting';
        detail = active.find((p) => p.conn === 'connecting').connDetail;
      } else if (states.every((s) => s === 'closed')) {
        state = 'closed';
        detail = active[0].connDetail;
      } else {
        state = 'live';
        const closed = states.filter((s) => s === 'closed').length;
        if (closed) detail = closed + ' pane' + (closed === 1 ? '' : 's') + ' closed';
      }
    }
    if (state !== 'reconnecting' && ticker) { clearInterval(ticker); ticker = null; }
    if (ui.status.textContent !== state) ui.status.textContent = state;
    ui.status.dataset.state = state;
    if (detail) ui.status.dataset.detail = detail;
    else delete ui.status.dataset.detail;
    ui.status.title = detail ? state + ' – ' + detail : state;
    ui.stop.disabled = app.stopped || !active.length;
  }

  /** An error frame not tied to a job: shown in the panes still waiting for their history. */
  function showNotice(text) {
    console.warn('gateway:', text);
    const waiting = app.panes.filter((p) => p.jobId && !p.historyDone);
    for (const p of waiting.length ? waiting : app.panes.slice(0, 1)) {
      p.enqueueNode(makeMarker('gateway: ' + text, 'error'));
    }
  }

  // -------------------------------------------------------------- controls

  function normaliseJob(v) {
    v = String(v ?? '').trim();
    if (!/^[0-9]{1,19}$/.test(v)) return null;
    v = v.replace(/^0+(?=\d)/, '');
    return v === '0' ? null : v;
  }

  const paneByJob = (job) => app.panes.find((p) => p.jobId === job);

  function flash(el) {
    el.classList.remove('flash');
    void el.offsetWidth;                    // restart the animation
    el.classList.add('flash');
  }

  function startWatching(pane, jobId) {
    app.everWatched = true;
    const wasStopped = app.stopped;
    app.stopped = false;
    if (wasStopped) {
      // the other panes resume where they were (the shared socket subscribes every pane)
      for (const p of app.panes) if (p !== pane && p.jobId) p.failed = false;
    }
    pane.watch(jobId);
    if (wasStopped && app.mode === 'job') {
      for (const p of app.panes) if (p !== pane && p.jobId) p.connect();
    }
    updateUrl();
    renderStatus();
  }

  function addPane(jobId) {
    if (app.panes.length >= MAX_PANES) { flash(ui.add); return null; }
    const pane = new Pane(false);
    app.panes.push(pane);
    updateLayout();
    if (jobId) startWatching(pane, jobId);
    else pane.jobInput.focus();
    return pane;
  }

  function closePane(pane) {
    if (pane.primary) return;
    pane.destroy();
    app.panes.splice(app.panes.indexOf(pane), 1);
    updateLayout();
    updateUrl();
    updateSearchCount();
    renderStatus();
  }

  function updateLayout() {
    ui.panes.dataset.count = String(app.panes.length);
    ui.add.disabled = app.panes.length >= MAX_PANES;
  }

  function updateUrl() {
    const p = new URLSearchParams(location.search);
    p.delete('job');
    for (const pane of app.panes) if (pane.jobId) p.append('job', pane.jobId);
    if (app.level) p.set('level', app.level); else p.delete('level');
    const q = p.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
  }

  function updatePauseButton() {
    const buffered = app.panes.reduce((n, p) => n + p.pending.length, 0);
    ui.pause.setAttribute('aria-pressed', String(app.paused));
    ui.pause.textContent = app.paused
      ? 'Resume' + (buffered ? ' (' + buffered.toLocaleString() + ')' : '') : 'Pause';
    document.body.classList.toggle('paused', app.paused);
    for (const p of app.panes) p.updateStats();
  }

  function setPaused(on) {
    app.paused = on;
    if (!on) {
      flushScheduled = true;      // force a flush now
      flushAll();
    }
    updatePauseButton();
  }

  ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = normaliseJob(ui.input.value);
    if (!v) { ui.input.focus(); return; }
    const primary = app.panes[0];
    const other = app.panes.find((p) => p !== primary && p.jobId === v);
    if (other) closePane(other);        // one pane per job
    startWatching(primary, v);
  });

  // A new minimum level: every pane starts a fresh view with the filter.
  ui.level.addEventListener('change', () => {
    app.level = ui.level.value;
    updateUrl();
    if (app.stopped) return;
    // one new socket (mux) for all panes: no stale frame of the old filter can slip in
    if (app.mode === 'mux') mux.close();
    for (const p of app.panes) if (p.jobId) { p.failed = false; p.restart(); }
  });

  ui.stop.addEventListener('click', () => {
    app.stopped = true;
    mux.close();
    for (const p of app.panes) {
      p.stopSocket();
      if (p.jobId) p.setConn('closed', 'stopped');
    }
    flushAll();
    renderStatus();
  });

  ui.pause.addEventListener('click', () => setPaused(!app.paused));
  ui.add.addEventListener('click', () => addPane(null));

  ui.search.addEventListener('input', () => {
    clearTimeout(search.timer);
    search.timer = setTimeout(() => setSearch(ui.search.value), 120);
  });
  ui.search.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      clearTimeout(search.timer);
      if (search.query !== ui.search.value) setSearch(ui.search.value);
      gotoHit(ev.shiftKey ? -1 : 1);
    } else if (ev.key === 'Escape') {
      ui.search.value = '';
      setSearch('');
    }
  });
  ui.searchNext.addEventListener('click', () => gotoHit(1));
  ui.searchPrev.addEventListener('click', () => gotoHit(-1));
  ui.matchOnly.addEventListener('change', () => {
    for (const p of app.panes) p.el.classList.toggle('only-matches', !!search.re && ui.matchOnly.checked);
  });

  document.addEventListener('keydown', (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    if (ev.key === '/') { ev.preventDefault(); ui.search.focus(); ui.search.select(); }
    else if (ev.key === 'p') { ev.preventDefault(); setPaused(!app.paused); }
  });

  // ------------------------------------------------------------------ init

  (function init() {
    const p = new URLSearchParams(location.search);
    if (p.get('transport') === 'job') app.mode = 'job';
    const lvl = p.get('level');
    if (LEVELS.includes(lvl)) { app.level = lvl; ui.level.value = lvl; }
    app.panes.push(new Pane(true));
    updateLayout();
    renderStatus();
    updatePauseButton();

    const jobs = [];
    for (const raw of p.getAll('job')) {
      const j = normaliseJob(raw);
      if (j && !jobs.includes(j)) jobs.push(j);
    }
    if (!jobs.length) {
      const raw = p.get('job');
      if (raw) ui.input.value = raw;
      ui.input.focus();
      return;
    }
    ui.input.value = jobs[0];
    startWatching(app.panes[0], jobs[0]);
    for (const j of jobs.slice(1, MAX_PANES)) addPane(j);
  })();
})();
