/*!
 * switchboard.js — the Switchboard browser client. No dependencies, no build step.
 *
 *   <script src="/switchboard.js"></script>             → window.Switchboard
 *   import '/switchboard.js'; const { Switchboard } = globalThis;   (ES modules)
 *   const Switchboard = require('./switchboard.js');     (CommonJS bundlers)
 *
 * Documentation: docs/client.md. Wire protocol: docs/protocol.md.
 */
(function (root, factory) {
  'use strict';
  var Switchboard = factory(root);
  if (typeof module === 'object' && module && typeof module.exports === 'object') {
    module.exports = Switchboard;
    module.exports.default = Switchboard;
  }
  if (root) root.Switchboard = Switchboard;
}(typeof globalThis !== 'undefined' ? globalThis : (typeof self !== 'undefined' ? self : this), function (global) {
  'use strict';

  var VERSION = '1.0.0';
  /** Every transport, in the default fallback order. */
  var TRANSPORTS = ['websocket', 'sse', 'long-poll', 'iframe', 'jsonp', 'short-poll'];
  var ROOM_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  var ID_RE = /^[0-9]+-[0-9]+$/;
  var MAX_ROOMS = 64;
  /** Global object holding JSONP / iframe callbacks: `__switchboardCb.<name>`. */
  var CB_NS = '__switchboardCb';

  var DEFAULTS = {
    url: null,               // base URL of a node or load balancer; default: where this script came from
    transports: null,        // 'auto' | 'sse' | ['sse', 'long-poll'] …
    rooms: [],               // rooms to join on connect
    token: null,             // a token from POST /api/login (instead of login())
    pingInterval: 20000,     // WebSocket: app-level ping period
    streamKeepAlive: 15000,  // SSE / iframe: the server's keep-alive period (≤ 15 s)
    watchdogSlack: 10000,    // silence tolerated beyond ping / keep-alive / poll wait
    pollWait: 25,            // long-poll and JSONP `wait` (s); request timeout = wait + slack
    shortPollInterval: 1500, // short poll: pause between polls (ms)
    connectTimeout: 15000,   // time for a new connection to deliver its `welcome`
    sendTimeout: 15000,      // time for an `ack` / `error` (also while waiting to be online)
    backoffBase: 500,        // reconnect delay = random(0, min(backoffMax, backoffBase · 2^attempt))
    backoffMax: 15000,
    autoReconnect: true,
  };

  // ---------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------

  function now() { return Date.now(); }

  function stripZeros(s) { return s.replace(/^0+(?=\d)/, ''); }
  function cmpDigits(a, b) {
    a = stripZeros(a); b = stripZeros(b);
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  /** Compares two ids `<ms>-<seq>` numerically (both parts can exceed 2^53): -1, 0 or 1. */
  function compareIds(a, b) {
    var pa = String(a).split('-'), pb = String(b).split('-');
    return cmpDigits(pa[0], pb[0]) || cmpDigits(pa[1] || '0', pb[1] || '0');
  }
  /** `r.lobby@1-0,u@2-0` → `{ 'r.lobby': '1-0', u: '2-0' }` (stream key → id). */
  function parseCursor(text) {
    var map = {};
    String(text || '').split(',').forEach(function (entry) {
      var at = entry.lastIndexOf('@');
      if (at <= 0) return;
      var key = entry.slice(0, at), id = entry.slice(at + 1);
      if ((key === 'u' || key.indexOf('r.') === 0) && ID_RE.test(id)) map[key] = id;
    });
    return map;
  }

  function query(params) {
    var parts = [];
    Object.keys(params).forEach(function (k) {
      var v = params[k];
      if (v === undefined || v === null) return;
      parts.push(encodeURIComponent(k) + '=' + (k === 'rooms' ? v.map(encodeURIComponent).join(',') : encodeURIComponent(String(v))));
    });
    return parts.join('&');
  }

  function defaultBase() {
    try {
      var s = global.document && global.document.currentScript;
      if (s && s.src) return new URL(s.src, global.location && global.location.href).origin;
    } catch (_) { /* ignore */ }
    try { if (global.location && /^https?:$/.test(global.location.protocol)) return global.location.origin; } catch (_) { /* ignore */ }
    return '';
  }
  var SCRIPT_BASE = defaultBase();

  function SwitchboardError(code, message, extra) {
    var e = new Error(message || code);
    e.name = 'SwitchboardError';
    e.code = code;
    if (extra) Object.keys(extra).forEach(function (k) { e[k] = extra[k]; });
    return e;
  }

  /** Runs `fn` once the page has loaded: a <script> or <iframe> added before the load event
   *  would hold the page's load (and its busy indicator) for as long as it streams. */
  function afterLoad(fn) {
    var doc = global.document;
    if (!doc || doc.readyState === 'complete' || !global.addEventListener) return fn();
    global.addEventListener('load', function onLoad() { global.removeEventListener('load', onLoad); setTimeout(fn, 0); });
  }

  function jsonOrNull(text) { try { return JSON.parse(text); } catch (_) { return null; } }

  // Callbacks for JSONP and iframe responses live on a global object, named so that they
  // match the server's `^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$`.
  var cbSeq = 0;
  function callbacks() { return global[CB_NS] || (global[CB_NS] = {}); }
  function registerCallback(prefix, fn) {
    var name = prefix + (++cbSeq).toString(36) + Math.random().toString(36).slice(2, 7);
    callbacks()[name] = fn;
    return { path: CB_NS + '.' + name, name: name };
  }
  function retireCallback(cb) {
    if (!cb) return;
    var table = callbacks();
    // A late response may still call it: keep a no-op for a while.
    table[cb.name] = function () {};
    setTimeout(function () { delete table[cb.name]; }, 120000);
  }

  function injectScript(src, onload, onerror) {
    var doc = global.document;
    var s = doc.createElement('script');
    s.async = true;
    s.src = src;
    s.onload = function () { cleanup(); onload(); };
    s.onerror = function () { cleanup(); onerror(); };
    function cleanup() { s.onload = s.onerror = null; if (s.parentNode) s.parentNode.removeChild(s); }
    (doc.head || doc.documentElement).appendChild(s);
    return { abort: function () { s.onload = s.onerror = null; if (s.parentNode) s.parentNode.removeChild(s); } };
  }

  /** GET a JSONP URL: resolves with the callback's argument; rejects {reason}. */
  function jsonp(url, prefix, timeoutMs) {
    var handle = { abort: function () {} };
    var promise = new Promise(function (resolve, reject) {
      var done = false, result, called = false;
      var cb = registerCallback(prefix, function (value) { called = true; result = value; });
      var timer = setTimeout(function () { finish(false, 'timeout'); }, timeoutMs);
      var script = injectScript(url + (url.indexOf('?') >= 0 ? '&' : '?') + 'callback=' + cb.path,
        function () { finish(called, called ? null : 'bad_response'); },
        function () { finish(false, 'network'); });
      function finish(ok, reason) {
        if (done) return;
        done = true;
        clearTimeout(timer);
        retireCallback(cb);
        if (ok) resolve(JSON.parse(JSON.stringify(result))); else reject({ reason: reason });
      }
      handle.abort = function () { script.abort(); finish(false, 'aborted'); };
    });
    promise.catch(function () {});
    handle.promise = promise;
    return handle;
  }

  /** fetch with a timeout; resolves {status, body} for any HTTP answer; rejects {reason}. */
  function fetchJSON(url, init, timeoutMs) {
    var ctrl = typeof AbortController === 'function' ? new AbortController() : null;
    var timedOut = false;
    var timer = timeoutMs ? setTimeout(function () { timedOut = true; if (ctrl) ctrl.abort(); }, timeoutMs) : null;
    var opts = Object.assign({ cache: 'no-store', credentials: 'same-origin' }, init || {});
    if (ctrl) opts.signal = ctrl.signal;
    var promise = global.fetch(url, opts).then(function (res) {
      return res.text().then(function (text) { return { status: res.status, ok: res.ok, body: jsonOrNull(text) }; });
    }).then(function (r) { clearTimeout(timer); return r; }, function () {
      clearTimeout(timer);
      throw { reason: timedOut ? 'timeout' : (ctrl && ctrl.signal.aborted ? 'aborted' : 'network') };
    });
    promise.abort = function () { if (ctrl) ctrl.abort(); };
    return promise;
  }

  function sameSet(a, b) {
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (b.indexOf(a[i]) < 0) return false;
    return true;
  }

  function normalizeTransports(list) {
    if (list == null || list === 'auto' || (Array.isArray(list) && list.length === 0)) return TRANSPORTS.slice();
    if (!Array.isArray(list)) list = String(list).split(',');
    var out = [];
    list.forEach(function (name) {
      name = String(name).trim();
      if (name === 'auto') { TRANSPORTS.forEach(function (t) { if (out.indexOf(t) < 0) out.push(t); }); return; }
      if (TRANSPORTS.indexOf(name) < 0) throw new TypeError('unknown transport "' + name + '"; use ' + TRANSPORTS.join(', '));
      if (out.indexOf(name) < 0) out.push(name);
    });
    return out.length ? out : TRANSPORTS.slice();
  }

  // ---------------------------------------------------------------------------
  // Connections: one object per attempt; the Switchboard object drives them.
  // A connection calls sb._connWelcome / _connEvent once open, sb._connFail once.
  // ---------------------------------------------------------------------------

  function Connection(sb, name) {
    this.sb = sb;
    this.name = name;
    this.rooms = sb._rooms.slice();
    this.opened = false;
    this.openedAt = 0;
    this.dead = false;
    this.lastTraffic = now();
    this._timers = [];
  }
  Connection.prototype.alive = function () { this.lastTraffic = now(); };
  Connection.prototype.later = function (fn, ms) {
    var self = this, t = setTimeout(function () { if (!self.dead) fn(); }, ms);
    this._timers.push(t);
    return t;
  };
  Connection.prototype.every = function (fn, ms) {
    var self = this, t = setInterval(function () { if (!self.dead) fn(); }, ms);
    this._timers.push(t);
    return t;
  };
  /** Fails the connection when no traffic arrived for `limit` ms. */
  Connection.prototype.watchdog = function (limit) {
    var self = this;
    this.alive();
    this.every(function () {
      if (self.check) self.check();
      if (now() - self.lastTraffic > limit) self.fail('watchdog');
    }, Math.max(250, Math.min(5000, limit / 4)));
  };
  Connection.prototype.connectTimeout = function () {
    var self = this;
    this.later(function () { if (!self.opened) self.fail('timeout'); }, this.sb.options.connectTimeout);
  };
  Connection.prototype.deliver = function (ev) {
    if (this.dead || !ev || typeof ev !== 'object' || typeof ev.type !== 'string') return;
    this.alive();
    if (ev.type === 'welcome' && !this.opened) {
      this.opened = true;
      this.openedAt = now();
      this.sb._connWelcome(this, ev);
    } else if (this.opened) {
      this.sb._connEvent(this, ev);
    }
  };
  Connection.prototype.fail = function (reason, info) {
    if (this.dead) return;
    this.close();
    this.sb._connFail(this, reason, info || {});
  };
  Connection.prototype.close = function () {
    if (this.dead) return;
    this.dead = true;
    this._timers.forEach(function (t) { clearTimeout(t); clearInterval(t); });
    this._timers = [];
    try { this.teardown(); } catch (_) { /* ignore */ }
  };
  Connection.prototype.teardown = function () {};
  Connection.prototype.params = function (extra) {
    var p = { token: this.sb.token };
    if (this.rooms.length) p.rooms = this.rooms;
    return Object.assign(p, extra || {});
  };
  Connection.prototype.streamCursor = function () {
    var c = this.sb.cursor;
    return c ? c : undefined;
  };
  Connection.prototype.nudge = function () {};

  // --- WebSocket --------------------------------------------------------------
  function WebSocketConnection(sb) { Connection.call(this, sb, 'websocket'); }
  WebSocketConnection.prototype = Object.create(Connection.prototype);
  WebSocketConnection.supported = function () { return typeof global.WebSocket === 'function'; };
  WebSocketConnection.prototype.open = function () {
    var self = this, o = this.sb.options;
    var url = this.sb.url.replace(/^http/, 'ws') + '/ws?' + query(this.params({ cursor: this.streamCursor() }));
    var ws;
    try { ws = this.ws = new global.WebSocket(url); } catch (e) { return this.fail('error'); }
    this.connectTimeout();
    ws.onopen = function () {
      if (self.dead) return;
      self.watchdog(o.pingInterval + o.watchdogSlack);
      self.every(function () { self.send({ type: 'ping' }); }, o.pingInterval);
    };
    ws.onmessage = function (e) {
      if (self.dead || typeof e.data !== 'string') return;
      self.alive();
      var ev = jsonOrNull(e.data);
      if (ev) self.deliver(ev);
    };
    ws.onerror = function () { /* a close event follows */ };
    ws.onclose = function (e) {
      if (e.code === 4409) self.fail('nickname_taken', { code: e.code });
      else self.fail(self.opened ? 'closed' : 'error', { code: e.code, wsReason: e.reason });
    };
  };
  WebSocketConnection.prototype.send = function (event) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(event));
    return true;
  };
  WebSocketConnection.prototype.teardown = function () {
    var ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000, 'bye'); } catch (_) { /* ignore */ }
  };

  // --- SSE (read with fetch streaming, so keep-alive comments and HTTP status are visible)
  function SSEConnection(sb) { Connection.call(this, sb, 'sse'); }
  SSEConnection.prototype = Object.create(Connection.prototype);
  SSEConnection.supported = function () {
    return typeof global.fetch === 'function' && typeof global.ReadableStream === 'function' &&
      typeof global.TextDecoder === 'function' && typeof global.AbortController === 'function';
  };
  SSEConnection.prototype.open = function () {
    var self = this, o = this.sb.options;
    this.ctrl = new global.AbortController();
    this.connectTimeout();
    var url = this.sb.url + '/sse?' + query(this.params({ cursor: this.streamCursor() }));
    global.fetch(url, { cache: 'no-store', credentials: 'same-origin', signal: this.ctrl.signal, headers: { Accept: 'text/event-stream' } })
      .then(function (res) {
        if (self.dead) return;
        if (!res.ok) {
          return res.text().then(function (t) { self.fail('http', { status: res.status, body: jsonOrNull(t) }); });
        }
        self.watchdog(o.streamKeepAlive + o.watchdogSlack);
        var reader = res.body.getReader(), decoder = new global.TextDecoder();
        var buffer = '', data = [];
        function line(text) {
          if (text === '') {
            if (data.length) { var ev = jsonOrNull(data.join('\n')); data = []; if (ev) self.deliver(ev); }
            return;
          }
          if (text.charAt(0) === ':') return; // comment: keep-alive
          var colon = text.indexOf(':');
          var field = colon < 0 ? text : text.slice(0, colon);
          var value = colon < 0 ? '' : text.slice(colon + 1).replace(/^ /, '');
          if (field === 'data') data.push(value);
          // `id:` is the server's cursor and `event:` the type (also inside the JSON):
          // the client keeps its own cursor.
        }
        function pump() {
          return reader.read().then(function (chunk) {
            if (self.dead) { try { reader.cancel(); } catch (_) { /* ignore */ } return; }
            if (chunk.done) { self.fail(self.opened ? 'closed' : 'error'); return; }
            self.alive();
            buffer += decoder.decode(chunk.value, { stream: true });
            var lines = buffer.split('\n');
            buffer = lines.pop();
            for (var i = 0; i < lines.length && !self.dead; i++) line(lines[i].replace(/\r$/, ''));
            return pump();
          });
        }
        return pump();
      })
      .catch(function () { self.fail(self.opened ? 'closed' : 'error'); });
  };
  SSEConnection.prototype.teardown = function () { if (this.ctrl) this.ctrl.abort(); };

  // --- iframe streaming ---------------------------------------------------------
  function IframeConnection(sb) { Connection.call(this, sb, 'iframe'); }
  IframeConnection.prototype = Object.create(Connection.prototype);
  IframeConnection.supported = function () { return !!(global.document && global.document.createElement); };
  IframeConnection.prototype.open = function () {
    var self = this;
    afterLoad(function () { if (!self.dead) self.start(); });
  };
  IframeConnection.prototype.start = function () {
    var self = this, o = this.sb.options, doc = global.document;
    this.cb = registerCallback('f', function (ev) {
      // The object comes from the iframe's realm: copy it into ours.
      var copy = jsonOrNull(JSON.stringify(ev));
      if (copy) self.deliver(copy);
    });
    var frame = this.frame = doc.createElement('iframe');
    frame.setAttribute('aria-hidden', 'true');
    frame.setAttribute('tabindex', '-1');
    frame.title = 'switchboard stream';
    frame.style.cssText = 'position:absolute;width:1px;height:1px;left:-1000px;top:-1000px;border:0;visibility:hidden';
    frame.onload = function () {
      // The document finished loading: the stream ended (or was an error page).
      try { if (frame.contentWindow.location.href === 'about:blank') return; } catch (_) { /* cross-origin */ }
      self.fail(self.opened ? 'closed' : 'error');
    };
    frame.src = this.sb.url + '/iframe?' + query(this.params({ cursor: this.streamCursor(), callback: this.cb.path }));
    (doc.body || doc.documentElement).appendChild(frame);
    this.connectTimeout();
    this.seenLast = null;
    // Keep-alives are HTML comments: watch the streamed document grow, and prune the
    // nodes already executed (never the last one, which the parser may still be filling).
    this.check = function () {
      try {
        var body = frame.contentDocument && frame.contentDocument.body;
        if (!body) return;
        var grew = body.lastChild !== self.seenLast;
        while (body.childNodes.length > 1) { body.removeChild(body.firstChild); grew = true; }
        self.seenLast = body.lastChild;
        if (grew) self.alive();
      } catch (_) { /* not readable: rely on events */ }
    };
    this.watchdog(o.streamKeepAlive + o.watchdogSlack);
  };
  IframeConnection.prototype.teardown = function () {
    retireCallback(this.cb);
    if (this.frame) {
      this.frame.onload = null;
      if (this.frame.parentNode) this.frame.parentNode.removeChild(this.frame);
    }
  };

  // --- Polling: long-poll, short poll (fetch) and JSONP (script tags) -------------
  // Each (re)connection starts with a handshake poll without cursor, which answers at
  // once with `welcome` (node, transport); then it polls with the client's own cursor.
  function PollConnection(sb, name) {
    Connection.call(this, sb, name);
    this.wait = name === 'short-poll' ? 0 : sb.options.pollWait;
    this.script = name === 'jsonp';
  }
  PollConnection.prototype = Object.create(Connection.prototype);
  PollConnection.prototype.open = function () {
    var self = this;
    if (!this.script) return this.poll(true);
    afterLoad(function () { self.poll(true); });
  };
  PollConnection.prototype.poll = function (handshake) {
    var self = this, o = this.sb.options;
    if (this.dead) return;
    var params = this.params({ wait: this.wait });
    if (!handshake) params.cursor = this.sb.cursor;
    var url = this.sb.url + '/poll?' + query(params);
    var timeout = this.wait * 1000 + o.watchdogSlack;
    this.pending = this.script ? jsonp(url, 'j', timeout) : fetchJSON(url, null, timeout);
    var promise = this.script ? this.pending.promise : this.pending;
    promise.then(function (r) {
      if (self.dead) return;
      self.pending = null;
      var body = self.script ? r : r.body;
      if (!self.script && !r.ok) return self.fail('http', { status: r.status, body: body });
      if (!body || !Array.isArray(body.events)) return self.fail('bad_response');
      self.alive();
      if (handshake) {
        var welcome = body.events.filter(function (e) { return e && e.type === 'welcome'; })[0];
        if (!welcome) return self.fail('bad_response');
        self.deliver(welcome);
      } else {
        for (var i = 0; i < body.events.length && !self.dead; i++) self.deliver(body.events[i]);
        if (!self.dead && typeof body.cursor === 'string') self.sb._mergeCursor(body.cursor);
      }
      if (self.dead) return;
      if (self.wait === 0) self.nextTimer = self.later(function () { self.nextTimer = null; self.poll(false); }, o.shortPollInterval);
      else self.later(function () { self.poll(false); }, 0);
    }, function (err) {
      self.pending = null;
      if (!self.dead) self.fail(err && err.reason === 'timeout' ? 'watchdog' : (self.opened ? 'closed' : 'error'));
    });
  };
  /** Short poll: poll now (after a send), instead of at the next interval. */
  PollConnection.prototype.nudge = function () {
    var self = this;
    if (this.dead || this.wait !== 0 || !this.nextTimer) return;
    clearTimeout(this.nextTimer);
    this.nextTimer = this.later(function () { self.nextTimer = null; self.poll(false); }, 150);
  };
  PollConnection.prototype.teardown = function () { if (this.pending) this.pending.abort(); };
  function makePoll(name, supported) {
    function P(sb) { PollConnection.call(this, sb, name); }
    P.prototype = PollConnection.prototype;
    P.supported = supported;
    return P;
  }

  var CONNECTIONS = {
    'websocket': WebSocketConnection,
    'sse': SSEConnection,
    'long-poll': makePoll('long-poll', function () { return typeof global.fetch === 'function'; }),
    'iframe': IframeConnection,
    'jsonp': makePoll('jsonp', function () { return !!(global.document && global.document.createElement); }),
    'short-poll': makePoll('short-poll', function () { return typeof global.fetch === 'function'; }),
  };
  var SCRIPT_ONLY = { 'jsonp': true, 'iframe': true };

  // ---------------------------------------------------------------------------
  // The client
  // ---------------------------------------------------------------------------

  function Switchboard(options) {
    if (!(this instanceof Switchboard)) return new Switchboard(options);
    options = options || {};
    this.options = Object.assign({}, DEFAULTS, options);
    this.url = String(options.url || SCRIPT_BASE || '').replace(/\/+$/, '');
    this.token = options.token || null;
    this.nickname = null;
    this.avatar = null;
    /** Node id of the current connection (from its `welcome`). */
    this.node = null;
    /** Transport of the current connection, once open. */
    this.transport = null;
    /** 'offline' | 'connecting' | 'online' | 'reconnecting' */
    this.state = 'offline';
    this._rooms = [];
    (options.rooms || []).forEach(function (r) { r = String(r); if (ROOM_RE.test(r) && this._rooms.indexOf(r) < 0) this._rooms.push(r); }, this);
    this._last = {};            // stream key ('r.<room>' | 'u') → last id seen
    this._handlers = {};
    this._pending = {};         // ref → request
    this._queue = [];           // requests waiting to be online
    this._roomWaiters = [];     // joins waiting for a (re)connection with the room
    this._ref = 0;
    this._order = normalizeTransports(options.transports);
    this._index = 0;
    this._conn = null;
    this._attempt = 0;
    this._strikes = {};
    this._worked = {};
    this._wasOnline = false;
    this._closed = true;
    this._timer = null;
    this._gen = 0;
    var self = this;
    this._onlineListener = function () {
      if (!self._closed && !self._suspended && !self._conn && self.token) { self._attempt = 0; clearTimeout(self._timer); self._open(); }
    };
    // A page kept in the back/forward cache must not hold a connection (the server would
    // count it online): disconnect on the way in, resume with the cursor on the way out.
    this._pageHide = function () {
      if (self._closed || self._suspended) return;
      self._suspended = true;
      clearTimeout(self._timer);
      if (self._conn) { self._conn.close(); self._conn = null; }
    };
    this._pageShow = function (e) {
      if (!self._suspended) return;
      self._suspended = false;
      if (!self._closed && self.token && (!e || e.persisted !== false)) { self._attempt = 0; self._open(); }
    };
    if (global.addEventListener) {
      global.addEventListener('online', this._onlineListener);
      global.addEventListener('pagehide', this._pageHide);
      global.addEventListener('pageshow', this._pageShow);
    }
  }

  Switchboard.VERSION = VERSION;
  Switchboard.TRANSPORTS = TRANSPORTS.slice();
  Switchboard.compareIds = compareIds;
  Switchboard.parseCursor = parseCursor;
  Switchboard.SwitchboardError = SwitchboardError;
  Switchboard.Switchboard = Switchboard;

  var proto = Switchboard.prototype;

  Object.defineProperty(proto, 'cursor', {
    /** The resume cursor: `r.<room>@<id>,…,u@<id>` for the joined rooms and the private stream. */
    get: function () {
      var last = this._last;
      var parts = this._rooms.filter(function (r) { return last['r.' + r]; }).sort()
        .map(function (r) { return 'r.' + r + '@' + last['r.' + r]; });
      if (last.u) parts.push('u@' + last.u);
      return parts.join(',');
    },
  });
  Object.defineProperty(proto, 'rooms', { get: function () { return this._rooms.slice(); } });
  Object.defineProperty(proto, 'transports', { get: function () { return this._order.slice(); } });

  // --- events ------------------------------------------------------------------

  /** Registers `fn` for an event type ('*' = every server event); returns an unsubscribe function. */
  proto.on = function (type, fn) {
    (this._handlers[type] || (this._handlers[type] = [])).push(fn);
    var self = this;
    return function () { self.off(type, fn); };
  };
  proto.off = function (type, fn) {
    var list = this._handlers[type];
    if (!list) return this;
    this._handlers[type] = fn ? list.filter(function (f) { return f !== fn; }) : [];
    return this;
  };
  proto.once = function (type, fn) {
    var off = this.on(type, function (ev) { off(); fn(ev); });
    return off;
  };
  proto._emit = function (type, payload) {
    var list = this._handlers[type];
    if (!list || !list.length) return;
    list.slice().forEach(function (fn) {
      try { fn(payload); } catch (e) { setTimeout(function () { throw e; }, 0); }
    });
  };
  proto._setState = function (state, extra) {
    var previous = this.state;
    this.state = state;
    if (previous === state && !extra) return;
    this._emit('state', Object.assign({ state: state, previous: previous, transport: this.transport, node: this.node }, extra || {}));
  };

  // --- login and connection ---------------------------------------------------------

  /**
   * `login(nickname, avatar)` → POST /api/login, then connects. Resolves with the login
   * answer `{token, nickname, avatar, node}`; rejects with an error whose `code` is
   * `invalid_nickname`, `nickname_taken`, `network_error`, …
   * `login({token})` connects with an existing token.
   */
  proto.login = function (nickname, avatar) {
    var self = this;
    if (nickname && typeof nickname === 'object') {
      if (nickname.token) { this.connect(nickname.token); return Promise.resolve({ token: nickname.token }); }
      avatar = nickname.avatar; nickname = nickname.nickname;
    }
    var body = { nickname: nickname };
    if (avatar != null) body.avatar = String(avatar);
    return fetchJSON(this.url + '/api/login', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    }, this.options.connectTimeout).then(function (r) {
      var b = r.body || {};
      if (!r.ok || !b.token) throw SwitchboardError(b.error || ('http_' + r.status), b.message || 'login failed', { status: r.status });
      if (!self._closed || self._conn) self.close();
      self.nickname = b.nickname;
      self.avatar = b.avatar;
      self._last = {};
      self.connect(b.token);
      return b;
    }, function (err) {
      throw SwitchboardError('network_error', 'cannot reach the server (' + (err && err.reason) + ')');
    });
  };

  /** Connects (or reconnects now) with `token` or the current one. */
  proto.connect = function (token) {
    if (token) this.token = token;
    if (!this.token) throw SwitchboardError('not_logged_in', 'log in first (login() or the token option)');
    if (this._conn) { this._conn.close(); this._conn = null; }
    clearTimeout(this._timer);
    this._closed = false;
    this._suspended = false;
    this._attempt = 0;
    this._index = 0;
    this._wasOnline = false;
    this._open();
    return this;
  };

  /** Forces a transport or an order ('auto', 'sse', ['sse', 'long-poll']); reconnects. */
  proto.setTransports = function (list) {
    this._order = normalizeTransports(list);
    this._index = 0;
    this._strikes = {};
    this._worked = {};
    if (!this._closed && this.token) {
      if (this._conn) { this._conn.close(); this._conn = null; }
      clearTimeout(this._timer);
      this._attempt = 0;
      this._open();
    }
    return this;
  };

  /** Ends the connection; `connect()` starts again. Pending sends are rejected. */
  proto.close = function () {
    this._closed = true;
    clearTimeout(this._timer);
    if (this._conn) { this._conn.close(); this._conn = null; }
    this._failAll('closed', 'the client was closed');
    this.transport = null;
    this.node = null;
    this._setState('offline', { reason: 'closed' });
    return this;
  };

  proto._open = function (quiet) {
    clearTimeout(this._timer);
    if (this._closed || this._suspended || !this.token) return;
    var name = this._order[this._index % this._order.length];
    var Impl = CONNECTIONS[name];
    if (!Impl.supported()) {
      // Not available in this environment: next one, at once.
      this._strikes[name] = 99;
      if (this._order.every(function (n) { return !CONNECTIONS[n].supported(); })) {
        this._closed = true;
        this._setState('offline', { reason: 'unsupported' });
        return;
      }
      this._index = (this._index + 1) % this._order.length;
      return this._open(quiet);
    }
    var conn = this._conn = new Impl(this);
    conn.gen = ++this._gen;
    if (!quiet) this._setState(this._wasOnline ? 'reconnecting' : 'connecting', { trying: name, attempt: this._attempt });
    conn.open();
  };

  proto._connWelcome = function (conn, ev) {
    if (conn !== this._conn) return;
    this.nickname = ev.nickname != null ? ev.nickname : this.nickname;
    this.avatar = ev.avatar != null ? ev.avatar : this.avatar;
    this.node = ev.node != null ? ev.node : null;
    // Keep our position for the streams we already follow; take the server's for new ones.
    var theirs = parseCursor(ev.cursor), last = this._last, rooms = conn.rooms;
    Object.keys(theirs).forEach(function (key) {
      if (last[key]) return;
      if (key === 'u' || rooms.indexOf(key.slice(2)) >= 0) last[key] = theirs[key];
    });
    this._attempt = 0;
    this._worked[conn.name] = true;
    this._wasOnline = true;
    var previous = this.transport;
    this.transport = conn.name;
    this._emit('welcome', ev);
    this._emit('*', ev);
    if (previous !== conn.name) this._emit('transport', { transport: conn.name, previous: previous });
    this._setState('online', { transport: conn.name, node: this.node });
    this._afterOpen(conn);
  };

  proto._afterOpen = function (conn) {
    var self = this;
    // Joins waiting for a connection with their room.
    this._roomWaiters = this._roomWaiters.filter(function (w) {
      if (conn.rooms.indexOf(w.room) < 0) return true;
      clearTimeout(w.timer);
      w.resolve({ type: 'ack', room: w.room, id: self._last['r.' + w.room] || null });
      return false;
    });
    if (conn.name === 'websocket') {
      // Rooms changed while this connection was being opened: tell the server.
      this._rooms.forEach(function (room) {
        if (conn.rooms.indexOf(room) >= 0) return;
        self._wsJoin(conn, room).then(function (ack) { self._settleWaiters(room, ack); }, function (err) {
          if (err && err.event) self._settleWaiters(room, null, err);
        });
      });
      conn.rooms.slice().forEach(function (room) {
        if (self._rooms.indexOf(room) < 0) { conn.rooms.splice(conn.rooms.indexOf(room), 1); conn.send({ type: 'leave', room: room }); }
      });
    } else if (!sameSet(conn.rooms, this._rooms)) {
      this._roomsChanged();
    }
    var queue = this._queue;
    this._queue = [];
    queue.forEach(function (req) { if (self._pending[req.ref]) self._dispatch(req); });
  };

  proto._settleWaiters = function (room, ack, error) {
    this._roomWaiters = this._roomWaiters.filter(function (w) {
      if (w.room !== room) return true;
      clearTimeout(w.timer);
      if (error) w.reject(error); else w.resolve(ack);
      return false;
    });
  };

  proto._connEvent = function (conn, ev) {
    if (conn !== this._conn) return;
    var type = ev.type, rooms = this._rooms;
    switch (type) {
      case 'welcome':
        return;
      case 'ack': case 'error':
        if (ev.ref != null && this._pending[ev.ref]) this._settle(ev.ref, ev);
        break;
      case 'message':
        if (rooms.indexOf(ev.room) < 0 || !this._advance('r.' + ev.room, ev.id)) return;
        break;
      case 'private':
        if (!this._advance('u', ev.id)) return;
        break;
      case 'members':
        // The answer to members() carries its ref; snapshots after a join or a change do not.
        if (ev.ref != null && this._pending[ev.ref]) { this._settle(ev.ref, ev); break; }
        if (ev.room != null && rooms.indexOf(ev.room) < 0) return;
        break;
      case 'presence': case 'joined': case 'left':
        if (ev.room != null && rooms.indexOf(ev.room) < 0) return;
        break;
      case 'pong': case 'reset':
        break;
      default:
        // Application events (POST /api/publish): stored in a room's or the user's stream.
        if (ev.id != null) {
          if (ev.room != null) {
            if (rooms.indexOf(ev.room) < 0 || !this._advance('r.' + ev.room, ev.id)) return;
          } else if (ev.to != null && !this._advance('u', ev.id)) {
            return;
          }
        }
    }
    this._emit(type, ev);
    this._emit('*', ev);
  };

  /** Moves a stream's cursor; false when `id` is not newer (a duplicate: drop it). */
  proto._advance = function (stream, id) {
    if (typeof id !== 'string' || !ID_RE.test(id)) return true;
    var last = this._last[stream];
    if (last && compareIds(id, last) <= 0) return false;
    this._last[stream] = id;
    return true;
  };

  /** A poll's answer cursor: move followed streams forward. */
  proto._mergeCursor = function (text) {
    var theirs = parseCursor(text), self = this;
    Object.keys(theirs).forEach(function (key) {
      if (key !== 'u' && self._rooms.indexOf(key.slice(2)) < 0) return;
      self._advance(key, theirs[key]);
    });
  };

  proto._connFail = function (conn, reason, info) {
    if (conn !== this._conn || this._closed) return;
    this._conn = null;
    var self = this, name = conn.name;
    // Requests sent on this WebSocket may or may not have been accepted.
    Object.keys(this._pending).forEach(function (ref) {
      var req = self._pending[ref];
      if (req && req.conn === conn) self._settle(ref, null, SwitchboardError('connection_lost', 'the connection closed before the server answered'));
    });
    var status = info.status;
    if (reason === 'nickname_taken' || status === 409) return this._fatal('nickname_taken', 'the nickname is held by another session');
    if (status === 401) return this._fatal('unauthorized', 'the token was refused; log in again');
    var badCursor = status === 400 && info.body && info.body.error === 'invalid_cursor';
    if (badCursor) this._resetCursor();
    if (!this.options.autoReconnect) { this.transport = null; return this._setState('offline', { reason: reason }); }

    if (conn.opened) {
      // It worked and dropped (node gone, network, drain): reconnect, same transport,
      // unless its heartbeat keeps failing.
      if (now() - conn.openedAt > 60000) this._strikes[name] = 0;
      if (reason === 'watchdog') this._strikes[name] = (this._strikes[name] || 0) + 1;
      if (this._strikes[name] >= 2) this._hop();
      return this._schedule(reason);
    }
    // Never opened.
    if (status >= 500 || status === 429 || badCursor) return this._schedule(reason); // the server (or LB) is in trouble
    if (status) { this._strike(name); return this._schedule(reason); }
    var gen = this._gen;
    this._setState(this._wasOnline ? 'reconnecting' : 'connecting', { trying: name, probing: true });
    this._probe().then(function (probe) {
      if (self._closed || self._gen !== gen || self._conn) return;
      if (probe.fatal) return self._fatal(probe.fatal, probe.message);
      if (probe.reachable !== false) self._strike(name); // the server answers: blame the transport
      self._schedule(reason);
    });
  };

  proto._strike = function (name) {
    this._strikes[name] = (this._strikes[name] || 0) + 1;
    if (this._strikes[name] >= (this._worked[name] ? 2 : 1)) this._hop();
  };
  proto._hop = function () {
    if (this._order.length < 2) return;
    var name = this._order[this._index % this._order.length];
    this._strikes[name] = 0;
    this._index = (this._index + 1) % this._order.length;
  };
  proto._schedule = function (reason) {
    var o = this.options;
    var cap = Math.min(o.backoffMax, o.backoffBase * Math.pow(2, this._attempt));
    var delay = Math.floor(Math.random() * cap); // full jitter: no reconnect storm
    this._attempt = Math.min(this._attempt + 1, 30);
    var self = this;
    clearTimeout(this._timer);
    this._timer = setTimeout(function () { self._open(); }, delay);
    this._setState(this._wasOnline ? 'reconnecting' : 'connecting',
      { delay: delay, retryAt: now() + delay, reason: reason, trying: this._order[this._index % this._order.length] });
  };

  /** Is the server there, and does it accept our token? (after a connection failed to open) */
  proto._probe = function () {
    if (typeof global.fetch !== 'function') return Promise.resolve({ reachable: null });
    return fetchJSON(this.url + '/poll?' + query({ token: this.token, wait: 0, cursor: '' }), null, 8000).then(function (r) {
      if (r.status === 401) return { fatal: 'unauthorized', message: 'the token was refused; log in again' };
      if (r.status === 409) return { fatal: 'nickname_taken', message: 'the nickname is held by another session' };
      return { reachable: r.ok };
    }, function () { return { reachable: false }; });
  };

  proto._fatal = function (code, message) {
    this._closed = true;
    clearTimeout(this._timer);
    if (this._conn) { this._conn.close(); this._conn = null; }
    this._failAll(code, message);
    this.transport = null;
    this._setState('offline', { reason: code, message: message });
  };

  proto._resetCursor = function () {
    var self = this;
    Object.keys(this._last).forEach(function (key) {
      delete self._last[key];
      var ev = { type: 'reset', room: key === 'u' ? null : key.slice(2), cursor: '' };
      self._emit('reset', ev);
      self._emit('*', ev);
    });
  };

  proto._failAll = function (code, message) {
    var self = this;
    Object.keys(this._pending).forEach(function (ref) { self._settle(ref, null, SwitchboardError(code, message)); });
    this._queue = [];
    var waiters = this._roomWaiters;
    this._roomWaiters = [];
    waiters.forEach(function (w) { clearTimeout(w.timer); w.reject(SwitchboardError(code, message)); });
  };

  // --- rooms --------------------------------------------------------------------

  /** Joins a room. Resolves with `{type:'ack', id}` (`id`: the room's cursor position). */
  proto.join = function (room) {
    var self = this;
    room = String(room);
    if (!ROOM_RE.test(room)) return Promise.reject(SwitchboardError('invalid_room', 'a room is 1–64 of letters, digits, _ - . :'));
    if (this._rooms.indexOf(room) < 0) {
      if (this._rooms.length >= MAX_ROOMS) return Promise.reject(SwitchboardError('too_many_rooms', 'at most ' + MAX_ROOMS + ' rooms'));
      this._rooms.push(room);
    }
    var conn = this._conn;
    if (conn && conn.opened && conn.rooms.indexOf(room) >= 0) {
      return Promise.resolve({ type: 'ack', room: room, id: this._last['r.' + room] || null });
    }
    if (conn && conn.opened && conn.name === 'websocket') return this._wsJoin(conn, room);
    return new Promise(function (resolve, reject) {
      var w = { room: room, resolve: resolve, reject: reject };
      w.timer = setTimeout(function () {
        self._roomWaiters = self._roomWaiters.filter(function (x) { return x !== w; });
        reject(SwitchboardError('timeout', 'not connected yet; the room stays in the list and is joined on connect'));
      }, self.options.sendTimeout);
      self._roomWaiters.push(w);
      self._roomsChanged();
    });
  };

  proto._wsJoin = function (conn, room) {
    var self = this;
    if (conn.rooms.indexOf(room) < 0) conn.rooms.push(room);
    return this._request({ type: 'join', room: room }).then(function (ack) {
      if (ack && ack.id && !self._last['r.' + room] && self._rooms.indexOf(room) >= 0) self._last['r.' + room] = ack.id;
      return { type: 'ack', ref: ack.ref, room: room, id: self._last['r.' + room] || ack.id || null };
    }, function (err) {
      if (err && err.event) { // refused by the server: not a member
        self._rooms = self._rooms.filter(function (r) { return r !== room; });
        if (conn.rooms.indexOf(room) >= 0) conn.rooms.splice(conn.rooms.indexOf(room), 1);
      }
      throw err;
    });
  };

  /** Leaves a room (its events stop at once; its cursor is forgotten). */
  proto.leave = function (room) {
    room = String(room);
    var i = this._rooms.indexOf(room);
    if (i < 0) return Promise.resolve({ type: 'ack', room: room });
    this._rooms.splice(i, 1);
    delete this._last['r.' + room];
    var conn = this._conn;
    if (conn && conn.name === 'websocket') {
      var j = conn.rooms.indexOf(room);
      if (conn.opened && j >= 0) {
        conn.rooms.splice(j, 1);
        return this._request({ type: 'leave', room: room }).catch(function (err) {
          if (err && err.code === 'not_joined') return { type: 'ack', room: room };
          throw err;
        });
      }
    } else {
      this._roomsChanged();
    }
    return Promise.resolve({ type: 'ack', room: room });
  };

  /** Non-WebSocket transports join and leave by reopening with the new `rooms=` (cursor kept). */
  proto._roomsChanged = function () {
    var self = this;
    if (this._restartQueued) return;
    this._restartQueued = true;
    setTimeout(function () {
      self._restartQueued = false;
      var conn = self._conn;
      if (self._closed || !conn || conn.name === 'websocket' || sameSet(conn.rooms, self._rooms)) return;
      var wasOpen = conn.opened;
      conn.close();
      self._conn = null;
      self._open(wasOpen);
    }, 0);
  };

  // --- sending ------------------------------------------------------------------

  /** Broadcasts `text` to `room` (join it first). `{echo: false}` keeps it from your own connections. */
  proto.say = function (room, text, opts) {
    var echo = !(opts && opts.echo === false);
    return this._request({ type: 'say', room: String(room), text: String(text), echo: echo });
  };
  /** A private message to a nickname, anywhere in the cluster. */
  proto.whisper = function (to, text) {
    return this._request({ type: 'whisper', to: String(to), text: String(text) });
  };
  /** Round trip to the server: resolves with the ack. */
  proto.ping = function () { return this._request({ type: 'ping' }); };

  /**
   * A page of a room's member list, cluster-wide. Resolves with the `members` event:
   * `{room, count, members: [{nickname, avatar}], next}`; pass `next` as `options.after`
   * for the following page. `options.limit`: members per page (server default 100).
   */
  proto.members = function (room, options) {
    var event = { type: 'members', room: String(room) };
    if (options && options.after != null) event.after = String(options.after);
    if (options && options.limit != null) event.limit = options.limit;
    return this._request(event);
  };
  /** Sends any client event; resolves with its `ack`, rejects with its `error`. */
  proto.send = function (event) { return this._request(Object.assign({}, event)); };

  proto._request = function (event) {
    var self = this;
    if (!this.token) return Promise.reject(SwitchboardError('not_logged_in', 'log in first'));
    var ref = ++this._ref;
    event.ref = ref;
    return new Promise(function (resolve, reject) {
      var req = { ref: ref, event: event, resolve: resolve, reject: reject };
      req.timer = setTimeout(function () {
        self._settle(ref, null, SwitchboardError('timeout', 'no answer from the server in time'));
      }, self.options.sendTimeout);
      self._pending[ref] = req;
      if (self._conn && self._conn.opened) self._dispatch(req);
      else self._queue.push(req);
    });
  };

  proto._dispatch = function (req) {
    var self = this, conn = this._conn, event = req.event;
    if (!conn || !conn.opened) { this._queue.push(req); return; }
    if (conn.name === 'websocket') {
      req.conn = conn;
      if (!conn.send(event)) { req.conn = null; this._queue.push(req); }
      return;
    }
    var url = this.url + '/api/send?' + query({ token: this.token });
    var answer;
    if (SCRIPT_ONLY[conn.name]) {
      // Script-only clients: GET /api/send?event=…&callback=… through a <script>.
      answer = jsonp(url + '&' + query({ event: JSON.stringify(event) }), 's', this.options.sendTimeout).promise;
    } else {
      answer = fetchJSON(url, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(event),
      }, this.options.sendTimeout).then(function (r) {
        if (r.body && typeof r.body.type === 'string') return r.body;
        var b = r.body || {};
        return { type: 'error', ref: event.ref, code: b.error || ('http_' + r.status), message: b.message || '', status: r.status };
      });
    }
    answer.then(function (reply) {
      if (!reply || typeof reply !== 'object') reply = { type: 'error', ref: event.ref, code: 'bad_response', message: '' };
      if (reply.ref == null) reply.ref = event.ref;
      if (reply.type === 'error' && reply.code === 'unauthorized') self._fatal('unauthorized', 'the token was refused; log in again');
      if (!self._pending[event.ref]) return;
      self._settle(event.ref, reply);
      self._emit(reply.type, reply);
      self._emit('*', reply);
      if (self._conn) self._conn.nudge();
    }, function (err) {
      self._settle(event.ref, null, SwitchboardError('network_error', 'the event could not be sent (' + (err && err.reason) + ')'));
    });
  };

  proto._settle = function (ref, reply, error) {
    var req = this._pending[ref];
    if (!req) return;
    delete this._pending[ref];
    clearTimeout(req.timer);
    var qi = this._queue.indexOf(req);
    if (qi >= 0) this._queue.splice(qi, 1);
    if (error) return req.reject(error);
    if (reply.type === 'error') return req.reject(SwitchboardError(reply.code || 'error', reply.message || reply.code, { event: reply }));
    req.resolve(reply);
  };

  return Switchboard;
}));
