// orderpipe operations dashboard: plain JS, no libraries, nothing loaded from outside this origin.
// Every value from the API reaches the page through textContent or SVG attributes, never as markup.
"use strict";

(() => {
  const TOKEN_KEY = "orderpipe.admin-token";
  const AUTO_REFRESH_MS = 10000;
  const JOB_STATUSES = ["pending", "running", "retryable", "dead", "completed", "cancelled"];
  const RETRYABLE = new Set(["dead", "retryable"]);

  const state = {
    jobs: { status: "", kind: "", limit: 50, offset: 0 },
    openJobId: null,
    vendorId: null,
    timer: null,
    busy: false,
    again: null,
    jobsTicket: 0,
    orderTicket: 0,
  };

  // --- small DOM helpers ----------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "onClick") node.addEventListener("click", value);
      else node.setAttribute(key, String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replace(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // --- formatting -----------------------------------------------------------------------------

  const numberFormat = new Intl.NumberFormat("en");
  const moneyFormat = new Intl.NumberFormat("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  const count = (n) => numberFormat.format(Number(n) || 0);
  const money = (minor) => moneyFormat.format((Number(minor) || 0) / 100);
  const amount = (minor, currency) => `${money(minor)} ${currency || ""}`.trim();

  function compact(n) {
    const abs = Math.abs(n);
    if (abs >= 1e9) return `${+(n / 1e9).toFixed(1)}B`;
    if (abs >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
    if (abs >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
    return `${+n.toFixed(n < 10 && n % 1 ? 1 : 0)}`;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(Number(seconds) || 0));
    if (s < 90) return `${s} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
  }

  function when(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function ago(iso) {
    if (!iso) return "—";
    const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    if (Number.isNaN(seconds)) return String(iso);
    return seconds >= 0 ? `${duration(seconds)} ago` : `in ${duration(-seconds)}`;
  }

  function timeCell(iso) {
    return el("td", { title: iso || "", text: iso ? ago(iso) : "—" });
  }

  function plainValue(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // --- the API --------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const error = (body && body.error) || {};
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.code = error.code || "http_error";
      this.details = error.details || {};
    }
  }

  class SignedOut extends Error {}

  async function api(path, { method = "GET", body } = {}) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      showLogin();
      throw new SignedOut();
    }
    const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("That token was refused. Paste the current admin token.");
      throw new SignedOut();
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (_) {
      payload = null;
    }
    if (!response.ok) throw new ApiError(response.status, payload);
    return payload;
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== "" && value !== null && value !== undefined) search.set(key, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  // --- session --------------------------------------------------------------------------------

  function showLogin(message) {
    stopTimer();
    $("dashboard").hidden = true;
    $("session-actions").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token-input").value = "";
    $("token-input").focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("session-actions").hidden = false;
  }

  function banner(message, kind = "") {
    const node = $("banner");
    node.className = `banner ${kind}`.trim();
    $("banner-text").textContent = message;
    node.hidden = false;
  }

  function reportError(error, what) {
    if (error instanceof SignedOut) return;
    const detail = error instanceof ApiError ? `${error.message} (${error.code})` : "the server did not answer";
    banner(`Could not ${what}: ${detail}`, "bad");
  }

  // --- queue figures --------------------------------------------------------------------------

  async function loadQueue() {
    const stats = await api("api/queue-stats");
    const by = stats.by_status || {};
    const figures = [
      { label: "Pending", value: by.pending, status: "pending" },
      { label: "Running", value: by.running, status: "running" },
      { label: "Retryable", value: by.retryable, status: "retryable", warn: (by.retryable || 0) > 0 },
      { label: "Dead", value: stats.dead, status: "dead", bad: stats.dead > 0 },
      { label: "Stuck (lease expired)", value: stats.stuck, bad: stats.stuck > 0 },
      { label: "Failed in the last hour", value: stats.failed_last_hour, warn: stats.failed_last_hour > 0 },
      { label: "Oldest due job waiting", text: duration(stats.oldest_due_age_s), warn: stats.oldest_due_age_s > 60 },
      { label: "Completed", value: by.completed, status: "completed" },
      { label: "Cancelled", value: by.cancelled, status: "cancelled" },
    ];
    replace($("queue-figures"), figures.map((f) => {
      const tag = f.status ? "button" : "div";
      const node = el(tag, {
        className: `figure${f.bad ? " bad" : ""}${f.warn ? " warn" : ""}`,
        type: f.status ? "button" : undefined,
        title: f.status ? `Show ${f.status} jobs` : undefined,
        "data-figure": f.label,
      },
      el("span", { className: "label", text: f.label }),
      el("span", { className: "value", text: f.text !== undefined ? f.text : count(f.value) }));
      if (f.status) node.addEventListener("click", () => filterJobs(f.status));
      return node;
    }));
  }

  async function rescueStale() {
    const button = $("rescue-stale");
    button.disabled = true;
    try {
      const counts = await api("api/jobs/rescue-stale", { method: "POST" });
      $("rescue-result").textContent =
        `Rescued ${count(counts.rescued)} (dead ${count(counts.dead)}, superseded ${count(counts.superseded)}) ` +
        `at ${when(new Date().toISOString())}`;
      await Promise.all([loadQueue(), loadJobs()]);
    } catch (error) {
      reportError(error, "rescue stale jobs");
    } finally {
      button.disabled = false;
    }
  }

  // --- health ---------------------------------------------------------------------------------

  async function loadHealth() {
    const report = await api("api/health-report");
    const breached = report.checks.filter((c) => !c.ok);
    const summary = $("health-summary");
    summary.className = `pill ${breached.length ? "bad" : "ok"}`;
    summary.textContent = breached.length
      ? `${breached.length} of ${report.checks.length} invariants breached`
      : `All ${report.checks.length} invariants hold`;
    renderIntents($("needs-refund"), $("needs-refund-count"), report.needs_refund, report.counts.needs_refund);
    renderIntents($("needs-review"), $("needs-review-count"), report.needs_review, report.counts.needs_review);
    // Breaches first: they are what the operator came for.
    const ordered = [...breached, ...report.checks.filter((c) => c.ok)];
    replace($("checks"), ordered.map(renderCheck));
  }

  function renderCheck(check) {
    const item = el("li", { "data-check": check.name },
      el("span", { className: `pill ${check.ok ? "ok" : "bad"}`, text: check.ok ? "ok" : "breach" }),
      el("div", {}, el("span", { className: "name", text: check.name }),
        el("span", { className: "desc", text: check.description })));
    if (!check.ok) {
      const sample = check.sample || [];
      const details = el("details", {},
        el("summary", { text: `${check.breaches} breaching row(s); sample` }),
        sampleTable(sample));
      item.appendChild(details);
    }
    return item;
  }

  function sampleTable(rows) {
    if (!rows.length) return el("p", { className: "muted", text: "no sample" });
    const columns = Object.keys(rows[0]);
    return el("div", { className: "table-wrap" }, el("table", { className: "table compact" },
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c })))),
      el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) => el("td", { className: "mono", text: plainValue(row[c]) })))))));
  }

  function renderIntents(container, counter, intents, total) {
    counter.textContent = `(${count(total)})`;
    if (!intents.length) {
      replace(container, el("p", { className: "muted", text: "Nothing waiting." }));
      return;
    }
    const table = el("table", { className: "table compact" },
      el("thead", {}, el("tr", {}, ["Intent", "Provider", "Amount", "Reason", "Waiting", "Order"].map(
        (c) => el("th", { scope: "col", text: c })))),
      el("tbody", {}, intents.map((intent) => el("tr", { "data-intent": intent.payment_intent_id },
        el("td", { className: "mono", text: intent.payment_intent_id }),
        el("td", { text: intent.provider }),
        el("td", { className: "num", text: amount(intent.amount_minor, intent.currency) }),
        el("td", { className: "reason", text: intent.status_reason || "—" }),
        el("td", { title: intent.updated_at, text: duration(intent.age_s) }),
        el("td", {}, intent.order_id
          ? el("button", { type: "button", className: "link", text: intent.order_number || intent.order_id,
            onClick: () => lookUpOrder(intent.order_id) })
          : "—")))));
    const parts = [el("div", { className: "table-wrap" }, table)];
    if (total > intents.length) parts.push(el("p", { className: "muted", text: `showing the oldest ${intents.length} of ${count(total)}` }));
    replace(container, parts);
  }

  // --- jobs -----------------------------------------------------------------------------------

  function filterJobs(status) {
    $("filter-status").value = status;
    state.jobs.status = status;
    state.jobs.offset = 0;
    loadJobs().catch((error) => reportError(error, "load the jobs"));
    $("jobs-title").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  async function loadJobs() {
    const { status, kind, limit, offset } = state.jobs;
    const ticket = ++state.jobsTicket;
    let page;
    try {
      page = await api(`api/jobs${query({ status, kind, limit, offset })}`);
    } catch (error) {
      if (ticket !== state.jobsTicket) return;
      if (error instanceof ApiError && error.status === 422) {
        replace($("jobs-body"), el("tr", {}, el("td", { colspan: 8, className: "empty",
          text: "Those filters are not valid (a kind is lower-case letters, digits and _)." })));
        $("jobs-range").textContent = "";
        return;
      }
      throw error;
    }
    // A slower answer to an older request (other filters, other page) must not overwrite a newer one.
    if (ticket !== state.jobsTicket) return;
    if (!page.jobs.length && page.offset > 0 && page.total > 0) {
      // The page emptied under us (jobs purged): go back to the last page that has rows.
      state.jobs.offset = Math.max(0, Math.floor((page.total - 1) / limit) * limit);
      return loadJobs();
    }
    const body = $("jobs-body");
    if (!page.jobs.length) {
      replace(body, el("tr", {}, el("td", { colspan: 8, className: "empty", text: "No jobs match." })));
    } else {
      replace(body, page.jobs.map(jobRow));
    }
    const first = page.jobs.length ? page.offset + 1 : 0;
    $("jobs-range").textContent = `${count(first)}–${count(page.offset + page.jobs.length)} of ${count(page.total)}`;
    $("jobs-prev").disabled = page.offset === 0;
    $("jobs-next").disabled = !page.has_more;
  }

  function jobRow(job) {
    const row = el("tr", { "data-job-id": job.job_id, className: job.job_id === state.openJobId ? "selected" : "" },
      el("td", {}, el("button", { type: "button", className: "link mono", text: job.job_id,
        title: "Show this job", onClick: () => showJob(job.job_id) })),
      el("td", { className: "mono", text: job.kind }),
      el("td", {}, el("span", { className: `pill ${job.status}`, text: job.status })),
      el("td", { className: "num", text: `${job.attempts}/${job.max_attempts}` }),
      timeCell(job.run_at),
      timeCell(job.updated_at),
      // A finished job's last error is history (it failed before and then succeeded): shown, but quiet.
      el("td", { className: `err${job.status === "completed" ? " past" : ""}`, title: job.last_error || "",
        text: job.last_error || "" }),
      el("td", {}, RETRYABLE.has(job.status)
        ? el("button", { type: "button", className: "retry", text: "Retry", onClick: (event) => retryJob(job, event.currentTarget) })
        : null));
    return row;
  }

  async function retryJob(job, button) {
    button.disabled = true;
    try {
      const updated = await api(`api/jobs/${encodeURIComponent(job.job_id)}/retry`, { method: "POST" });
      banner(`Job ${updated.job_id} (${updated.kind}) is ${updated.status} again; it has been handed to the queue.`, "ok");
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        banner(`Job ${job.job_id} was not retried: it is ${error.details.status || "no longer dead"} now.`, "bad");
      } else {
        reportError(error, `retry job ${job.job_id}`);
      }
    }
    await refreshJobs();
    // The queue usually runs the job within a second or two: show the outcome without a click.
    window.setTimeout(() => refreshJobs(), 1500);
  }

  async function refreshJobs() {
    try {
      await Promise.all([loadJobs(), loadQueue()]);
      if (state.openJobId !== null) await showJob(state.openJobId, { quiet: true });
    } catch (error) {
      reportError(error, "refresh the jobs");
    }
  }

  async function showJob(jobId, { quiet = false } = {}) {
    try {
      const job = await api(`api/jobs/${encodeURIComponent(jobId)}`);
      state.openJobId = job.job_id;
      $("job-detail-title").textContent = `Job ${job.job_id} · ${job.kind} · ${job.status}`;
      $("job-detail-body").textContent = JSON.stringify(job, null, 2);
      $("job-detail").hidden = false;
      for (const row of $("jobs-body").querySelectorAll("tr[data-job-id]")) {
        row.classList.toggle("selected", row.dataset.jobId === String(job.job_id));
      }
    } catch (error) {
      if (!quiet) reportError(error, `load job ${jobId}`);
    }
  }

  function closeJob() {
    state.openJobId = null;
    $("job-detail").hidden = true;
    for (const row of $("jobs-body").querySelectorAll("tr.selected")) row.classList.remove("selected");
  }

  // --- charts ---------------------------------------------------------------------------------

  // The grid step: 1, 2, 2.5 or 5 times a power of ten (whole numbers for counts), so ticks read cleanly.
  function niceStep(max, ticks, whole, floor) {
    const raw = Math.max(max, floor) / ticks;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      const step = factor * magnitude;
      if (whole && !Number.isInteger(step)) continue;
      if (step >= raw) return step;
    }
    return 10 * magnitude;
  }

  // A bar per day, y axis from zero with four grid lines, a date label about once a week.
  function barChart(container, rows, { value, format, tick, alt, whole = false, floor = 4 }) {
    const width = 640;
    const height = 220;
    const pad = { left: 52, right: 10, top: 12, bottom: 26 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const values = rows.map((r) => Number(value(r)) || 0);
    const top = 4 * niceStep(Math.max(0, ...values), 4, whole, floor);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    chart.appendChild(svg("title", {}, `${rows.length} days`));
    for (let i = 0; i <= 4; i += 1) {
      const y = pad.top + plotH - (plotH * i) / 4;
      chart.appendChild(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: i ? "grid-line" : "axis" }));
      chart.appendChild(svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, tick((top * i) / 4)));
    }
    const slot = plotW / Math.max(1, rows.length);
    const barW = Math.max(1, slot * 0.72);
    const labelEvery = Math.max(1, Math.ceil(rows.length / 6));
    rows.forEach((row, i) => {
      const h = (plotH * values[i]) / top;
      const x = pad.left + i * slot + (slot - barW) / 2;
      const bar = svg("rect", { x: x.toFixed(2), y: (pad.top + plotH - h).toFixed(2), width: barW.toFixed(2),
        height: Math.max(0, h).toFixed(2), class: alt ? "bar alt" : "bar", "data-day": row.day });
      bar.appendChild(svg("title", {}, `${row.day}: ${format(values[i])}`));
      chart.appendChild(bar);
      if (i % labelEvery === 0 || i === rows.length - 1) {
        chart.appendChild(svg("text", { x: (pad.left + i * slot + slot / 2).toFixed(2), y: height - 8,
          "text-anchor": "middle", class: "tick" }, String(row.day).slice(5)));
      }
    });
    if (!values.some((v) => v > 0)) {
      chart.appendChild(svg("text", { x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle",
        class: "note" }, "nothing in this period"));
    }
    replace(container, chart);
  }

  function chartMessage(container, message) {
    replace(container, el("p", { className: "chart-message", text: message }));
  }

  function drawSeries(prefix, rows) {
    const gmv = rows.reduce((sum, r) => sum + (Number(r.gmv_minor) || 0), 0);
    const orders = rows.reduce((sum, r) => sum + (Number(r.orders) || 0), 0);
    $(`${prefix}-gmv-total`).textContent = `· total ${money(gmv)}`;
    $(`${prefix}-orders-total`).textContent = `· total ${count(orders)}`;
    barChart($(`${prefix}-gmv-chart`), rows, { value: (r) => r.gmv_minor, format: money, tick: (v) => compact(v / 100),
      floor: 40000 });
    barChart($(`${prefix}-orders-chart`), rows, { value: (r) => r.orders, format: count, tick: compact, alt: true,
      whole: true });
  }

  function seriesUnavailable(prefix, error) {
    if (error instanceof SignedOut) throw error;
    const message = error instanceof ApiError && error.status === 501
      ? "Metrics are not available on this deployment yet."
      : `Could not load: ${error.message}`;
    chartMessage($(`${prefix}-gmv-chart`), message);
    chartMessage($(`${prefix}-orders-chart`), message);
    $(`${prefix}-gmv-total`).textContent = "";
    $(`${prefix}-orders-total`).textContent = "";
  }

  async function loadPlatform() {
    try {
      drawSeries("platform", await api("api/platform/daily?days=30"));
    } catch (error) {
      seriesUnavailable("platform", error);
    }
  }

  async function loadVendors() {
    const picker = $("vendor-picker");
    const page = await api("api/vendors?limit=500");
    if (!page.vendors.length) {
      replace(picker, el("option", { value: "", text: "no vendors yet" }));
      state.vendorId = null;
      replace($("vendor-figures"));
      chartMessage($("vendor-gmv-chart"), "No vendors yet.");
      chartMessage($("vendor-orders-chart"), "No vendors yet.");
      return;
    }
    const ids = page.vendors.map((v) => String(v.vendor_id));
    if (!ids.includes(state.vendorId)) state.vendorId = ids[0];
    replace(picker, page.vendors.map((v) => el("option", { value: v.vendor_id, text: `${v.business_name} (${v.products} products)` })));
    picker.value = state.vendorId;
    await loadVendor();
  }

  async function loadVendor() {
    const vendorId = state.vendorId;
    if (!vendorId) return;
    const id = encodeURIComponent(vendorId);
    try {
      const days = await api(`api/vendors/${id}/daily?days=30`);
      if (vendorId !== state.vendorId) return;
      drawSeries("vendor", days);
    } catch (error) {
      if (vendorId !== state.vendorId) return;
      seriesUnavailable("vendor", error);
    }
    try {
      const board = await api(`api/vendors/${id}/dashboard`);
      if (vendorId !== state.vendorId) return;
      const t = board.today || {};
      const m = board.last_30_days || {};
      replace($("vendor-figures"),
        el("div", { className: "figure-group", text: "Today" }),
        figure("Orders", count(t.orders)), figure("GMV", money(t.gmv_minor)),
        figure("Refunds", money(t.refunds_minor)), figure("Platform fees", money(t.platform_fees_minor)),
        el("div", { className: "figure-group", text: "Last 30 days" }),
        figure("Orders", count(m.orders)), figure("GMV", money(m.gmv_minor)),
        figure("Refunds", money(m.refunds_minor)), figure("Platform fees", money(m.platform_fees_minor)),
        figure("Paid out", money(m.payouts_minor)), figure("Pending payout", money(m.pending_payout_minor)));
    } catch (error) {
      if (error instanceof SignedOut) return;
      replace($("vendor-figures"), el("p", { className: "muted", text: error instanceof ApiError && error.status === 501
        ? "Vendor figures are not available on this deployment yet." : `Could not load the vendor's figures: ${error.message}` }));
    }
  }

  function figure(label, text) {
    return el("div", { className: "figure" }, el("span", { className: "label", text: label }),
      el("span", { className: "value", text }));
  }

  // --- one order ------------------------------------------------------------------------------

  function lookUpOrder(orderId) {
    $("order-input").value = orderId;
    loadOrder(orderId);
    $("order-title").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function facts(pairs) {
    return el("dl", { className: "facts" }, pairs.map(([label, value]) => [el("dt", { text: label }), el("dd", { text: plainValue(value) })]));
  }

  async function loadOrder(orderId) {
    const out = $("order-result");
    replace(out, el("p", { className: "muted", text: "Looking up…" }));
    const ticket = ++state.orderTicket;
    let order;
    try {
      order = await api(`api/orders/${encodeURIComponent(orderId.trim())}`);
    } catch (error) {
      if (error instanceof SignedOut || ticket !== state.orderTicket) return;
      const message = error instanceof ApiError && error.status === 404 ? "No order with that id."
        : error instanceof ApiError && error.status === 422 ? "That is not an order id (a UUID)."
          : `Could not look it up: ${error.message}`;
      replace(out, el("p", { className: "error", text: message }));
      return;
    }
    if (ticket !== state.orderTicket) return;
    const intent = order.payment_intent || {};
    const verification = order.verification;
    const session = order.verification_session;
    replace(out,
      el("h3", { text: `Order ${order.order_number} · ${order.status} · ${amount(order.total_minor, order.currency)}` }),
      facts([["Order id", order.order_id], ["Customer", order.customer_id], ["Created", when(order.created_at)],
        ["Cancelled", order.cancelled_at ? `${when(order.cancelled_at)} (${order.cancel_reason || "no reason"})` : "no"]]),
      el("h3", { text: "Items" }),
      el("div", { className: "table-wrap" }, el("table", { className: "table compact" },
        el("thead", {}, el("tr", {}, ["#", "Product", "Vendor", "Qty", "Unit price", "Line total", "Fee (bps)", "Fulfilment"].map(
          (c) => el("th", { scope: "col", text: c })))),
        el("tbody", {}, order.items.map((item) => el("tr", {},
          el("td", { text: item.line_no }), el("td", { text: item.product_name }),
          el("td", { className: "mono", text: item.vendor_id }), el("td", { className: "num", text: item.quantity }),
          el("td", { className: "num", text: money(item.unit_price_minor) }),
          el("td", { className: "num", text: money(item.line_total_minor) }),
          el("td", { className: "num", text: item.platform_fee_bps }), el("td", { text: item.fulfillment_status })))))),
      el("div", { className: "grid two" },
        el("div", {}, el("h3", { text: "Payment intent" }), facts([
          ["Id", intent.payment_intent_id], ["Provider", intent.provider], ["Status", intent.status],
          ["Amount", amount(intent.amount_minor, intent.currency)], ["Reason", intent.status_reason],
          ["Created", when(intent.created_at)], ["Paid", when(intent.paid_at)], ["Updated", when(intent.updated_at)]])),
        el("div", {}, el("h3", { text: "Verification" }), verification ? facts([
          ["Provider", verification.provider], ["Gateway transaction", verification.external_transaction_id],
          ["Amount", amount(verification.amount_minor, verification.currency)], ["Source", verification.source],
          ["Verified", when(verification.verified_at)]]) : el("p", { className: "muted", text: "none" }),
        el("h3", { text: "Identity check" }), session ? facts([
          ["Status", session.status], ["Deadline", when(session.deadline_at)], ["Decided", when(session.decided_at)]])
          : el("p", { className: "muted", text: "not required" }))),
      order.refunds && order.refunds.length ? [el("h3", { text: "Refunds" }), facts(order.refunds.map(
        (r) => [when(r.refunded_at), `${amount(r.amount_minor, r.currency)} via ${r.provider} (${r.external_refund_id})`]))] : null);
  }

  // --- refresh --------------------------------------------------------------------------------

  // One refresh at a time; a request made meanwhile runs once the current one ends, so a click
  // never shows data fetched before it.
  async function refreshAll({ charts = true } = {}) {
    if (state.busy) {
      state.again = state.again || { charts: false };
      state.again.charts = state.again.charts || charts;
      return;
    }
    state.busy = true;
    try {
      const work = [loadQueue(), loadHealth(), loadJobs()];
      if (charts) work.push(loadPlatform(), loadVendors());
      const results = await Promise.allSettled(work);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) {
        reportError(failed.reason, "refresh everything");
      } else {
        $("last-refresh").textContent = `updated ${when(new Date().toISOString())}`;
      }
    } finally {
      state.busy = false;
    }
    if (state.again) {
      const next = state.again;
      state.again = null;
      await refreshAll(next);
    }
  }

  function startTimer() {
    stopTimer();
    if (!$("auto-refresh").checked) return;
    state.timer = window.setInterval(() => {
      if (!document.hidden && !$("dashboard").hidden) refreshAll({ charts: false });
    }, AUTO_REFRESH_MS);
  }

  function stopTimer() {
    if (state.timer !== null) window.clearInterval(state.timer);
    state.timer = null;
  }

  async function signIn(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("api/queue-stats");
    } catch (error) {
      if (!(error instanceof SignedOut)) $("login-error").textContent = `The server did not answer: ${error.message}`;
      return;
    }
    showDashboard();
    await refreshAll();
    startTimer();
  }

  // --- wiring ---------------------------------------------------------------------------------

  function wire() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (token) signIn(token);
    });
    $("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("Signed out.");
    });
    $("refresh-all").addEventListener("click", () => refreshAll());
    $("auto-refresh").addEventListener("change", startTimer);
    $("banner-close").addEventListener("click", () => { $("banner").hidden = true; });
    $("rescue-stale").addEventListener("click", rescueStale);
    $("job-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      state.jobs.status = JOB_STATUSES.includes($("filter-status").value) ? $("filter-status").value : "";
      state.jobs.kind = $("filter-kind").value.trim();
      state.jobs.limit = Number($("filter-limit").value) || 50;
      state.jobs.offset = 0;
      loadJobs().catch((error) => reportError(error, "load the jobs"));
    });
    $("jobs-prev").addEventListener("click", () => {
      state.jobs.offset = Math.max(0, state.jobs.offset - state.jobs.limit);
      loadJobs().catch((error) => reportError(error, "load the jobs"));
    });
    $("jobs-next").addEventListener("click", () => {
      state.jobs.offset += state.jobs.limit;
      loadJobs().catch((error) => reportError(error, "load the jobs"));
    });
    $("job-detail-close").addEventListener("click", closeJob);
    $("vendor-picker").addEventListener("change", (event) => {
      state.vendorId = event.target.value;
      loadVendor();
    });
    $("order-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("order-input").value.trim();
      if (id) loadOrder(id);
    });
  }

  function start() {
    wire();
    if (sessionStorage.getItem(TOKEN_KEY)) {
      showDashboard();
      refreshAll().then(startTimer);
    } else {
      showLogin();
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
