/**
 * The dashboard's page: HTML, CSS and script as string constants, so that the compiled package
 * ships them with no build step and no file to find at run time. Plain DOM and SVG: no
 * framework, no chart library, nothing fetched from another host (the page works with no
 * internet). The script reads only the JSON API of ops/dashboard.ts and /cluster.
 */

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Troupe dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head>
<body>
<header>
  <h1>Troupe <span id="node-name">…</span></h1>
  <nav>
    <a href="#overview" data-view="overview">Overview</a>
    <a href="#consumers" data-view="consumers">Consumers</a>
    <a href="#dlq" data-view="dlq">Dead letters <span id="dlq-count" class="badge"></span></a>
    <a href="#actors" data-view="actors">Actors</a>
  </nav>
  <label class="token">Admin token <input id="admin-token" type="password" autocomplete="off" placeholder="read-only"></label>
</header>
<div id="error" hidden></div>
<main>
<section id="view-overview" class="view">
  <div class="cards">
    <div class="card"><div class="label">commands/s (10 s)</div><div class="value" id="stat-rate">–</div></div>
    <div class="card"><div class="label">p50 / p99 (10 s)</div><div class="value" id="stat-latency">–</div></div>
    <div class="card"><div class="label">resident actors</div><div class="value" id="stat-resident">–</div></div>
    <div class="card"><div class="label">passivations (10 s)</div><div class="value" id="stat-passivations">–</div></div>
    <div class="card"><div class="label">phase</div><div class="value" id="stat-phase">–</div></div>
  </div>
  <h2>Throughput <small>commands and events per second, last 5 minutes</small></h2>
  <svg id="chart-throughput" class="chart" viewBox="0 0 720 170" role="img" aria-label="throughput"></svg>
  <h2>Latency <small>command p50 and p99, ms</small></h2>
  <svg id="chart-latency" class="chart" viewBox="0 0 720 170" role="img" aria-label="latency"></svg>
  <h2>Resident actors <small>and passivations per second</small></h2>
  <svg id="chart-resident" class="chart" viewBox="0 0 720 170" role="img" aria-label="resident actors"></svg>
  <h2>Nodes</h2>
  <table><thead><tr><th>node</th><th>state</th><th>version</th><th>shards</th><th>heartbeat</th></tr></thead><tbody id="nodes-body"></tbody></table>
  <h2>Shards <small id="shards-summary"></small></h2>
  <div id="shards" class="shards"></div>
</section>
<section id="view-consumers" class="view" hidden>
  <h2>Consumers <small>of the log stream; lag = messages not yet acknowledged</small></h2>
  <table><thead><tr><th>name</th><th>kind</th><th>instances</th><th>lag</th><th>pending</th><th>ack pending</th><th>msgs/s</th><th>ack floor</th><th>dead letters</th></tr></thead><tbody id="consumers-body"></tbody></table>
</section>
<section id="view-dlq" class="view" hidden>
  <h2>Dead letters <small id="dlq-stats"></small></h2>
  <table><thead><tr><th>#</th><th>consumer</th><th>reason</th><th>actor</th><th>event</th><th>attempts</th><th>dead-lettered</th></tr></thead><tbody id="dlq-body"></tbody></table>
  <div id="dlq-detail" hidden>
    <h3>Dead letter <span id="dlq-seq"></span></h3>
    <p id="dlq-error" class="mono"></p>
    <div class="actions">
      <button id="dlq-replay" type="button">Replay</button>
      <button id="dlq-discard" type="button" class="danger">Discard</button>
      <span id="dlq-message"></span>
    </div>
    <pre id="dlq-event"></pre>
  </div>
</section>
<section id="view-actors" class="view" hidden>
  <h2>Actor lookup</h2>
  <form id="actor-form" class="row">
    <select id="actor-type"></select>
    <input id="actor-id" placeholder="actor id" autocomplete="off">
    <button id="actor-go" type="submit">Look up</button>
    <button id="actor-resident" type="button">Resident ids</button>
  </form>
  <div id="actor-ids" class="ids"></div>
  <div id="actor-result" hidden>
    <p>version <b id="actor-version"></b> · shard <span id="actor-shard"></span> · <span id="actor-count"></span> events</p>
    <h3>State</h3>
    <pre id="actor-state"></pre>
    <h3>Recent events</h3>
    <table><thead><tr><th>seq</th><th>event</th><th>v</th><th>time</th><th>payload</th></tr></thead><tbody id="actor-events"></tbody></table>
  </div>
</section>
</main>
</body>
</html>
`;

export const DASHBOARD_CSS = `:root { --bg: #f6f7f9; --fg: #1d232b; --muted: #687384; --line: #dde1e7; --card: #fff; --a: #2f6fde; --b: #e07a1f; --bad: #c0392b; --ok: #2e8b57; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; align-items: center; gap: 24px; padding: 10px 20px; background: #1d232b; color: #fff; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header h1 span { color: #9fb8e8; font-weight: 400; }
nav { display: flex; gap: 4px; }
nav a { color: #cfd6e0; text-decoration: none; padding: 6px 12px; border-radius: 4px; }
nav a.active { background: #3a4553; color: #fff; }
.token { margin-left: auto; color: #cfd6e0; font-size: 13px; }
.token input { margin-left: 6px; padding: 4px 6px; border-radius: 3px; border: 1px solid #56606e; background: #2a323d; color: #fff; width: 180px; }
.badge { background: var(--bad); color: #fff; border-radius: 9px; padding: 0 6px; font-size: 12px; }
.badge:empty { display: none; }
main { padding: 16px 20px 40px; max-width: 1180px; }
#error { background: #fdecea; color: var(--bad); padding: 8px 20px; border-bottom: 1px solid #f5c6c0; }
h2 { font-size: 15px; margin: 22px 0 8px; }
h2 small, h3 small { color: var(--muted); font-weight: 400; margin-left: 6px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 160px; }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 600; }
.chart { width: 100%; max-width: 720px; background: var(--card); border: 1px solid var(--line); border-radius: 6px; display: block; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart text { fill: var(--muted); font-size: 11px; }
.chart polyline { fill: none; stroke-width: 1.8; }
table { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); width: 100%; max-width: 1180px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 500; font-size: 12px; background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr.clickable { cursor: pointer; }
tbody tr.clickable:hover, tbody tr.selected { background: #eef3fc; }
.shards { display: grid; grid-template-columns: repeat(auto-fill, 22px); gap: 3px; max-width: 720px; }
.shard { width: 22px; height: 22px; border-radius: 3px; font-size: 9px; color: #fff; display: flex; align-items: center; justify-content: center; }
.shard.unowned { background: #b9c0ca; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
pre { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow: auto; max-height: 420px; font-size: 12px; }
.mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.actions { display: flex; gap: 8px; align-items: center; }
button { padding: 6px 14px; border-radius: 4px; border: 1px solid var(--a); background: var(--a); color: #fff; cursor: pointer; }
button.danger { border-color: var(--bad); background: var(--bad); }
button:disabled { opacity: .5; cursor: default; }
.row { display: flex; gap: 8px; }
.row input, .row select { padding: 6px 8px; border: 1px solid var(--line); border-radius: 4px; }
.ids { margin: 8px 0; display: flex; flex-wrap: wrap; gap: 6px; }
.ids a { background: #e8eef9; padding: 2px 8px; border-radius: 10px; color: var(--a); text-decoration: none; font-size: 12px; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .muted { color: var(--muted); }
`;

export const DASHBOARD_JS = `'use strict';
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var COLORS = ['#2f6fde', '#e07a1f', '#2e8b57', '#8e44ad', '#c0392b', '#16a085', '#d4a017', '#7f8c8d'];
  var WINDOW_MS = 5 * 60 * 1000;
  var samples = [];
  var lastT = 0;
  var view = 'overview';
  var selectedSeq = null;
  var tokenInput = $('admin-token');
  tokenInput.value = sessionStorage.getItem('troupe-admin-token') || '';
  tokenInput.addEventListener('change', function () { sessionStorage.setItem('troupe-admin-token', tokenInput.value); });

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === 'text') e.textContent = attrs[k];
      else if (k === 'background') e.style.background = attrs[k];
      else if (k === 'class') e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c); });
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function fmt(n, digits) {
    if (n === null || n === undefined) return '–';
    if (typeof n !== 'number') return String(n);
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return digits === undefined ? String(Math.round(n * 10) / 10) : n.toFixed(digits);
  }
  function ago(ms) {
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 120000) return Math.round(ms / 1000) + ' s';
    return Math.round(ms / 60000) + ' min';
  }
  function showError(text) {
    var e = $('error');
    e.textContent = text || '';
    e.hidden = !text;
  }

  function api(path, options) {
    options = options || {};
    var headers = {};
    if (options.admin && tokenInput.value) headers.authorization = 'Bearer ' + tokenInput.value;
    return fetch(path, { method: options.method || 'GET', headers: headers, cache: 'no-store' }).then(function (r) {
      return r.text().then(function (t) {
        var body = null;
        try { body = t ? JSON.parse(t) : null; } catch (e) { body = { error: t }; }
        if (!r.ok) { var err = new Error((body && body.error) || ('HTTP ' + r.status)); err.status = r.status; throw err; }
        return body;
      });
    });
  }

  // ── charts: plain SVG polylines over the last five minutes ──
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function chart(node, lines, unit) {
    var W = 720, H = 170, L = 52, R = 140, T = 10, B = 22;
    var now = Date.now();
    var max = 0;
    lines.forEach(function (l) { l.points.forEach(function (p) { if (p[1] !== null && p[1] > max) max = p[1]; }); });
    max = niceMax(max);
    while (node.firstChild) node.removeChild(node.firstChild);
    var x = function (t) { return L + (W - L - R) * (1 - (now - t) / WINDOW_MS); };
    var y = function (v) { return T + (H - T - B) * (1 - v / max); };
    [0, 0.5, 1].forEach(function (f) {
      node.appendChild(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
      var label = svg('text', { x: L - 6, y: y(max * f) + 4, 'text-anchor': 'end' });
      label.textContent = fmt(max * f) + (unit || '');
      node.appendChild(label);
    });
    ['-5 min', '-2.5 min', 'now'].forEach(function (s, i) {
      var t = svg('text', { x: L + (W - L - R) * i / 2, y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 1 ? 'middle' : 'end' });
      t.textContent = s;
      node.appendChild(t);
    });
    var total = 0;
    lines.forEach(function (l, i) {
      var pts = l.points.filter(function (p) { return p[1] !== null && now - p[0] <= WINDOW_MS; })
        .map(function (p) { total += p[1]; return x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1); });
      node.appendChild(svg('polyline', { points: pts.join(' '), stroke: l.color, 'data-series': l.name }));
      var last = l.points.length ? l.points[l.points.length - 1][1] : null;
      node.appendChild(svg('rect', { x: W - R + 10, y: T + 4 + i * 18, width: 10, height: 10, fill: l.color }));
      var t = svg('text', { x: W - R + 26, y: T + 13 + i * 18 });
      t.textContent = l.name + ' ' + fmt(last) + (unit || '');
      node.appendChild(t);
    });
    node.setAttribute('data-samples', String(lines[0] ? lines[0].points.length : 0));
    node.setAttribute('data-total', String(Math.round(total)));
  }
  function drawCharts() {
    var pick = function (k) { return samples.map(function (s) { return [s.t, s[k]]; }); };
    chart($('chart-throughput'), [{ name: 'commands/s', color: COLORS[0], points: pick('commands') }, { name: 'events/s', color: COLORS[1], points: pick('events') }]);
    chart($('chart-latency'), [{ name: 'p50', color: COLORS[2], points: pick('p50') }, { name: 'p99', color: COLORS[4], points: pick('p99') }], ' ms');
    chart($('chart-resident'), [{ name: 'resident', color: COLORS[3], points: pick('resident') }, { name: 'passivated/s', color: COLORS[1], points: pick('passivations') }]);
  }

  // ── overview ──
  function pollSeries() {
    return api('/api/series?since=' + lastT).then(function (r) {
      r.samples.forEach(function (s) { samples.push(s); lastT = s.t; });
      var cut = Date.now() - WINDOW_MS;
      while (samples.length && samples[0].t < cut) samples.shift();
      drawCharts();
    });
  }
  function pollNode() {
    return api('/api/node').then(function (n) {
      $('node-name').textContent = n.node + ' · ' + n.stream + ' · v' + n.version;
      document.title = 'Troupe · ' + n.node;
      var s = n.last10s;
      $('stat-rate').textContent = fmt(s.commandsPerSecond);
      $('stat-latency').textContent = fmt(s.p50Ms) + ' / ' + fmt(s.p99Ms) + ' ms';
      $('stat-resident').textContent = fmt(s.resident);
      $('stat-passivations').textContent = fmt(s.passivations);
      $('stat-phase').textContent = n.phase;
      tokenInput.disabled = !n.admin;
      tokenInput.placeholder = n.admin ? 'needed to replay' : 'read-only node';
      var types = $('actor-type');
      if (types.options.length === 0) n.actorTypes.forEach(function (t) { types.appendChild(el('option', { value: t, text: t })); });
      return n;
    });
  }
  function pollCluster(node) {
    return api('/cluster').then(function (c) {
      var nodes = c.nodes.length ? c.nodes : [{ node: c.self, state: node.phase, version: node.version, shardCount: node.ownedShards.length, heartbeatMsAgo: 0 }];
      var color = {};
      nodes.forEach(function (n, i) { color[n.node] = COLORS[i % COLORS.length]; });
      var body = $('nodes-body');
      body.textContent = '';
      nodes.forEach(function (n) {
        body.appendChild(el('tr', { 'data-node': n.node }, [
          el('td', {}, [el('span', { class: 'swatch', background: color[n.node] }), n.node + (n.node === c.self ? ' (this node)' : '')]),
          el('td', { text: n.state }), el('td', { text: n.version || '' }), el('td', { class: 'num', text: String(n.shardCount) }),
          el('td', { text: ago(n.heartbeatMsAgo || 0) + ' ago' })]));
      });
      var owner = {};
      if (c.leases.length) c.leases.forEach(function (l) { owner[l.shard] = l.node; });
      else node.ownedShards.forEach(function (s) { owner[s] = c.self; });
      var grid = $('shards');
      grid.textContent = '';
      for (var s = 0; s < c.shards; s++) {
        var o = owner[s];
        grid.appendChild(el('div', { class: 'shard' + (o ? '' : ' unowned'), title: 'shard ' + s + ': ' + (o || 'unowned'), 'data-owner': o || '', background: o ? color[o] : '', text: String(s) }));
      }
      $('shards-summary').textContent = c.shards + ' shards, ' + (c.unowned || []).length + ' unowned, ' + (c.moves || []).length + ' moving';
    });
  }
  function overview() {
    return Promise.all([pollSeries(), pollNode().then(pollCluster)]);
  }

  // ── consumers ──
  function consumers() {
    return api('/api/consumers').then(function (list) {
      var body = $('consumers-body');
      body.textContent = '';
      if (!list.length) body.appendChild(el('tr', {}, [el('td', { colspan: '9', class: 'muted', text: 'no durable consumer reads this stream' })]));
      list.forEach(function (c) {
        body.appendChild(el('tr', { 'data-consumer': c.name }, [
          el('td', { text: c.name }), el('td', { text: c.kind + (c.durables > 1 ? ' (' + c.durables + ')' : '') }),
          el('td', { text: c.instances === null ? '–' : c.instances.join(', ') || 'none' }),
          el('td', { class: 'num' + (c.lag > 0 ? ' bad' : ''), text: fmt(c.lag) }), el('td', { class: 'num', text: fmt(c.numPending) }),
          el('td', { class: 'num', text: fmt(c.numAckPending) }), el('td', { class: 'num', text: fmt(c.messagesPerSecond) }),
          el('td', { class: 'num', text: String(c.ackFloor) }), el('td', { class: 'num' + (c.dlqDepth > 0 ? ' bad' : ''), text: fmt(c.dlqDepth) })]));
      });
    });
  }

  // ── dead letters ──
  function dlqStats() {
    return api('/api/dlq/stats').then(function (s) {
      $('dlq-count').textContent = s.count > 0 ? String(s.count) : '';
      var parts = Object.keys(s.byReason).map(function (r) { return r + ': ' + s.byReason[r]; });
      $('dlq-stats').textContent = s.count + ' in the queue' + (s.count ? ', oldest ' + ago(s.oldestAgeMs) + ' old · ' + parts.join(', ') : '');
      return s;
    });
  }
  function dlq() {
    return Promise.all([dlqStats(), api('/api/dlq?limit=200')]).then(function (r) {
      var list = r[1];
      var body = $('dlq-body');
      body.textContent = '';
      if (!list.length) body.appendChild(el('tr', {}, [el('td', { colspan: '7', class: 'muted', text: 'no dead letters' })]));
      list.forEach(function (d) {
        var e = d.event;
        var tr = el('tr', { class: 'clickable' + (d.seq === selectedSeq ? ' selected' : ''), 'data-seq': String(d.seq) }, [
          el('td', { class: 'num', text: String(d.seq) }), el('td', { text: d.consumer }), el('td', { text: d.reason }),
          el('td', { text: e ? e.aggregateType + '/' + e.aggregateId : '(undecodable)' }), el('td', { text: e ? e.eventType + ' v' + e.version : '' }),
          el('td', { class: 'num', text: String(d.attempts) }), el('td', { text: d.deadLetteredAt })]);
        tr.addEventListener('click', function () { select(d.seq); });
        body.appendChild(tr);
      });
      if (selectedSeq !== null && !list.some(function (d) { return d.seq === selectedSeq; })) { selectedSeq = null; $('dlq-detail').hidden = true; }
    });
  }
  function select(seq) {
    selectedSeq = seq;
    $('dlq-message').textContent = '';
    return api('/api/dlq/' + seq).then(function (d) {
      $('dlq-detail').hidden = false;
      $('dlq-seq').textContent = '#' + d.seq + ' · ' + d.consumer + ' · ' + d.reason;
      $('dlq-error').textContent = d.error.name + ': ' + d.error.message + ' (attempts ' + d.attempts + ', first failure ' + d.firstFailureAt + ', log position ' + d.position + ')';
      $('dlq-event').textContent = JSON.stringify(d.event, null, 2);
      Array.prototype.forEach.call(document.querySelectorAll('#dlq-body tr'), function (tr) { tr.classList.toggle('selected', tr.getAttribute('data-seq') === String(seq)); });
    });
  }
  function act(verb) {
    if (selectedSeq === null) return;
    var seq = selectedSeq;
    var msg = $('dlq-message');
    msg.className = 'muted';
    msg.textContent = verb === 'replay' ? 'replaying…' : 'discarding…';
    api('/api/dlq/' + seq + '/' + verb, { method: 'POST', admin: true }).then(function () {
      msg.className = 'ok';
      msg.textContent = (verb === 'replay' ? 'replayed' : 'discarded') + ' dead letter ' + seq;
      selectedSeq = null;
      $('dlq-detail').hidden = true;
      return dlq();
    }, function (e) {
      msg.className = 'bad';
      msg.textContent = 'refused (' + (e.status || 'error') + '): ' + e.message;
    });
  }
  $('dlq-replay').addEventListener('click', function () { act('replay'); });
  $('dlq-discard').addEventListener('click', function () { act('discard'); });

  // ── actors ──
  function lookup(type, id) {
    return api('/api/actor?type=' + encodeURIComponent(type) + '&id=' + encodeURIComponent(id) + '&events=20').then(function (a) {
      $('actor-result').hidden = false;
      $('actor-version').textContent = String(a.version);
      $('actor-shard').textContent = String(a.shard);
      $('actor-count').textContent = String(a.eventCount);
      $('actor-state').textContent = JSON.stringify(a.state, null, 2);
      var body = $('actor-events');
      body.textContent = '';
      a.events.slice().reverse().forEach(function (e) {
        body.appendChild(el('tr', {}, [el('td', { class: 'num', text: String(e.sequence) }), el('td', { text: e.eventType }), el('td', { text: String(e.version) }),
          el('td', { text: e.timestamp }), el('td', { class: 'mono', text: JSON.stringify(e.payload) })]));
      });
      showError('');
    }, function (e) { $('actor-result').hidden = true; showError('actor lookup: ' + e.message); });
  }
  $('actor-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    lookup($('actor-type').value, $('actor-id').value.trim());
  });
  $('actor-resident').addEventListener('click', function () {
    api('/api/actors?resident=1&limit=200&type=' + encodeURIComponent($('actor-type').value)).then(function (r) {
      var box = $('actor-ids');
      box.textContent = '';
      if (!r.ids.length) box.appendChild(el('span', { class: 'muted', text: 'no resident ' + r.type + ' on this node' }));
      r.ids.forEach(function (id) {
        var a = el('a', { href: '#actors', text: id });
        a.addEventListener('click', function () { $('actor-id').value = id; lookup(r.type, id); });
        box.appendChild(a);
      });
    }, function (e) { showError(e.message); });
  });

  // ── views and polling ──
  function show(name) {
    view = ['overview', 'consumers', 'dlq', 'actors'].indexOf(name) >= 0 ? name : 'overview';
    Array.prototype.forEach.call(document.querySelectorAll('.view'), function (s) { s.hidden = s.id !== 'view-' + view; });
    Array.prototype.forEach.call(document.querySelectorAll('nav a'), function (a) { a.classList.toggle('active', a.getAttribute('data-view') === view); });
    refresh();
  }
  var busy = false;
  function refresh() {
    if (busy) return;
    busy = true;
    var work = view === 'consumers' ? consumers() : view === 'dlq' ? dlq() : view === 'actors' ? pollNode() : overview();
    Promise.all([work, view === 'dlq' ? null : dlqStats()]).then(function () { showError(''); }, function (e) { showError(e.message); })
      .then(function () { busy = false; });
  }
  window.addEventListener('hashchange', function () { show(location.hash.slice(1)); });
  setInterval(function () { if (view === 'overview') pollSeries().catch(function () {}); }, 1000);
  setInterval(refresh, 5000);
  show(location.hash.slice(1));
  window.troupeDashboard = { refresh: refresh, show: show };
})();
`;
