// swarmgate status page: renders the state the controller sends over server-sent events. Plain DOM, no
// framework: a few tables redrawn once a second do not need one, and the page stays a few kilobytes that a
// reviewer can read whole. Every value goes in through textContent, never as HTML.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  let latest = null;
  let lastProblemCount = null;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function row(cells) {
    const tr = document.createElement('tr');
    for (const cell of cells) tr.append(cell instanceof Node ? wrap(cell) : el('td', cell));
    return tr;
  }

  function wrap(node) {
    if (node.tagName === 'TD' || node.tagName === 'TH') return node;
    const td = document.createElement('td');
    td.append(node);
    return td;
  }

  function when(iso) {
    if (!iso) return '—';
    const date = new Date(iso);
    return date.toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
  }

  function ago(iso) {
    if (!iso) return '—';
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return seconds < 90 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
  }

  function daysLeft(iso) {
    if (!iso) return '';
    const days = Math.floor((Date.parse(iso) - Date.now()) / 86400000);
    return days < 0 ? ' (expired)' : ` (${days} days)`;
  }

  function percent(value) {
    return value === null || value === undefined ? '—' : `${(value * 100).toFixed(1)} %`;
  }

  function seconds(value) {
    return value === null || value === undefined ? '—' : value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
  }

  /** A small chart of requests/s; described in words for screen readers. */
  function sparkline(history, label) {
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 100 20');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    const values = history.map((point) => point.rps);
    const max = Math.max(1e-9, ...values);
    const title = document.createElementNS(SVG, 'title');
    title.textContent = values.length
      ? `${label}: requests per second over the last ${values.length} samples, highest ${max.toFixed(1)}`
      : `${label}: no samples yet`;
    svg.append(title);
    if (values.length > 1) {
      const line = document.createElementNS(SVG, 'polyline');
      const step = 100 / (values.length - 1);
      line.setAttribute(
        'points',
        values.map((value, index) => `${(index * step).toFixed(1)},${(19 - (value / max) * 18).toFixed(1)}`).join(' '),
      );
      svg.append(line);
    }
    return svg;
  }

  function renderProblems(problems) {
    const list = $('problems');
    list.replaceChildren();
    if (problems.length === 0) list.append(el('li', 'None.', 'ok'));
    for (const problem of problems) {
      const item = el('li', null, problem.severity === 'error' ? 'error' : 'warning');
      const strong = el('strong', `${problem.service} · ${problem.label}`);
      item.append(strong, document.createTextNode(` — ${problem.reason} (${problem.code}, ${problem.severity})`));
      list.append(item);
    }
    const errors = problems.filter((problem) => problem.severity === 'error').length;
    if (lastProblemCount !== null && errors !== lastProblemCount) {
      $('live').textContent = `${errors} problem${errors === 1 ? '' : 's'} now.`;
    }
    lastProblemCount = errors;
  }

  function renderRoutes(view) {
    const filter = $('filter').value.trim().toLowerCase();
    const traffic = new Map((view.traffic || []).map((entry) => [`${entry.host}\t${entry.service}`, entry]));
    const body = $('routes');
    body.replaceChildren();
    for (const route of view.routes) {
      const hosts = route.hosts.length ? route.hosts : ['—'];
      for (const host of hosts) {
        if (filter && !`${host} ${route.service}`.toLowerCase().includes(filter)) continue;
        const entry = traffic.get(`${host}\t${route.service}`);
        const tasks = el('td', `${route.routedTasks}${route.desiredReplicas === null ? '' : ` of ${route.desiredReplicas}`}`);
        tasks.dataset.service = route.service;
        tasks.className = 'tasks';
        const routed = el(
          'td',
          route.reason ? `${route.routed ? 'yes, but' : 'no'}: ${route.reason}` : 'yes',
          route.reason ? (route.routed ? 'warning' : 'error') : 'ok',
        );
        const head = el('th', `${host}${route.path === '/' ? '' : route.path}`);
        head.scope = 'row';
        body.append(
          row([
            head,
            route.service,
            tasks,
            route.tasksByNode.map((entry) => `${entry.node}: ${entry.tasks}`).join(', ') || '—',
            routed,
            entry ? entry.current.rps.toFixed(1) : '—',
            entry ? percent(entry.current.errorRate) : '—',
            entry ? seconds(entry.current.p95Seconds) : '—',
            entry ? sparkline(entry.history, `${host} ${route.service}`) : el('span', '—'),
          ]),
        );
      }
    }
    if (!body.children.length) body.append(row([el('td', filter ? 'No route matches the filter.' : 'No routes yet.')]));
    $('traffic-note').textContent =
      view.traffic === null
        ? 'Live traffic is off: set SWARMGATE_EDGE_METRICS_TARGETS on the controller, and leave SWARMGATE_TRAFFIC_METRICS on (docs/observability.md).'
        : 'Requests/s, 5xx share and p95 over the last scrape of every edge.';
  }

  function renderEdges(edges) {
    const body = $('edges');
    body.replaceChildren();
    for (const edge of edges) {
      const head = el('th', edge.edge);
      head.scope = 'row';
      body.append(
        row([
          head,
          edge.node || '—',
          edge.appliedVersion ?? 'none',
          el('td', edge.inSync ? 'yes' : edge.rejected ? `no: ${edge.rejected}` : 'no', edge.inSync ? 'ok' : 'bad'),
          el('td', `${ago(edge.lastContact)}${edge.stale ? ' (stale)' : ''}`, edge.stale ? 'bad' : ''),
        ]),
      );
    }
    if (!edges.length) body.append(row(['No edge has polled yet.']));
  }

  function renderCertificates(certificates) {
    const body = $('certificates');
    body.replaceChildren();
    for (const certificate of certificates) {
      const head = el('th', certificate.name);
      head.scope = 'row';
      const failing = certificate.lastError || ['failed', 'expired', 'budget-spent', 'damaged'].includes(certificate.state);
      body.append(
        row([
          head,
          certificate.domains.join(', '),
          el('td', `${certificate.state} (${certificate.source})`, failing ? 'bad' : 'ok'),
          el('td', `${when(certificate.notAfter)}${daysLeft(certificate.notAfter)}`, 'expiry'),
          when(certificate.renewAt),
          el('td', certificate.lastError || '—', certificate.lastError ? 'bad' : ''),
        ]),
      );
    }
    if (!certificates.length) body.append(row(['No certificates.']));
  }

  function render(view) {
    latest = view;
    const out = view.edges.filter((edge) => !edge.inSync).length;
    $('summary').textContent =
      `Config version ${view.configVersion ?? 'none'} · ${view.routes.length} routes · ${view.edges.length} edges` +
      `${out ? ` (${out} out of sync)` : ''} · ${view.problems.length} problems`;
    renderProblems(view.problems);
    renderRoutes(view);
    renderEdges(view.edges);
    renderCertificates(view.certificates);
    $('footer').textContent = `swarmgate ${view.version} · updated ${when(view.generatedAt)}`;
  }

  const FIRST_RETRY_MS = 1000;
  const LAST_RETRY_MS = 30000;
  let retryMs = FIRST_RETRY_MS;

  function connect() {
    const events = new EventSource('/status/events');
    events.addEventListener('open', () => {
      retryMs = FIRST_RETRY_MS;
    });
    events.addEventListener('status', (event) => render(JSON.parse(event.data)));
    events.addEventListener('signed-out', () => {
      events.close();
      window.location.assign('/status');
    });
    events.addEventListener('error', () => {
      $('summary').textContent = 'Connection lost; reconnecting…';
      // The browser reconnects a dropped stream by itself, but gives up for good on an answer that is not a
      // stream: a 401 once the session is gone (a restarted controller has forgotten it), a 502 or 503 from the
      // edge while the controller moves. The page then asks again itself, less often each time.
      if (events.readyState !== EventSource.CLOSED) return;
      events.close();
      window.setTimeout(reconnect, retryMs);
      retryMs = Math.min(retryMs * 2, LAST_RETRY_MS);
    });
  }

  // One look at the stream's answer (the body is not read): no session means the sign-in page, a stream means
  // connect again, anything else means wait longer.
  async function reconnect() {
    const probe = new window.AbortController();
    let status;
    try {
      status = (await window.fetch('/status/events', { signal: probe.signal, cache: 'no-store' })).status;
    } catch {
      status = 0;
    } finally {
      probe.abort();
    }
    if (status === 401) window.location.assign('/status');
    else if (status === 200) connect();
    else window.setTimeout(reconnect, retryMs);
    if (status !== 200 && status !== 401) retryMs = Math.min(retryMs * 2, LAST_RETRY_MS);
  }

  $('filter').addEventListener('input', () => latest && renderRoutes(latest));
  connect();
})();
