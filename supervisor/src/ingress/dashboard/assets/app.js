// The health dashboard. It asks only this daemon (the Content-Security-Policy allows
// nothing else), sends the token as a bearer header, keeps it in this tab's
// sessionStorage, and builds every element with DOM calls: text from the daemon is
// always a text node, never HTML.
"use strict";

const TOKEN_KEY = "betalogs.dashboard.token";
const REFRESH_MS = 5000;
const STATES = ["action_required", "failing", "degraded", "disabled", "starting", "paused", "healthy"];

const $ = (id) => document.getElementById(id);
let timer = null;
let paused = false;
let lastUpdate = 0;
let generation = 0;

// ---- elements ---------------------------------------------------------------

/** An element: `attrs` are properties or attributes; children are nodes or text. */
function h(tag, attrs, ...children) {
  const svg = tag === "svg" || tag === "path" || tag === "title";
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") el.textContent = String(value);
    else if (name === "class") el.setAttribute("class", value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A link inside the dashboard, followed without reloading the page. */
function internal(path, ...children) {
  return h("a", { href: path, onclick: (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    e.preventDefault();
    navigate(path);
  } }, ...children);
}

/** A link to evidence elsewhere (a commit, a pull request), only for http(s) URLs. */
function external(url, label) {
  if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return null;
  return h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, label);
}

function badge(state) {
  return h("span", { class: `badge s-${state}` }, state.replace("_", " "));
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

function sinceText(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return ago(seconds);
}

function until(iso) {
  if (!iso) return "";
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  if (seconds <= 0) return "expired";
  if (seconds < 3600) return `in ${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `in ${Math.floor(seconds / 3600)}h`;
  return `in ${Math.floor(seconds / 86400)}d`;
}

function percent(rate) {
  if (rate === null || rate === undefined) return "–";
  return `${(rate * 100).toFixed(rate > 0 && rate < 0.1 ? 1 : 0)}%`;
}

/** Events per minute over the hour, as a line with its area. */
function sparkline(counts) {
  const width = 120, height = 24;
  const max = Math.max(1, ...counts);
  const step = width / Math.max(1, counts.length - 1);
  const points = counts.map((n, i) => `${(i * step).toFixed(1)},${(height - 1 - (n / max) * (height - 3)).toFixed(1)}`);
  const total = counts.reduce((a, b) => a + b, 0);
  const last = counts.length ? counts[counts.length - 1] : 0;
  const label = `${total} events in the last hour, ${last} this minute, at most ${max} a minute`;
  return h("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label },
    h("title", { text: label }),
    h("path", { class: "area", d: `M0,${height} L${points.join(" L")} L${width},${height} Z` }),
    h("path", { class: "line", d: `M${points.join(" L")}` }));
}

function table(columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { class: "rows" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell, i) =>
        cell instanceof HTMLTableCellElement ? (cell.setAttribute("data-label", columns[i]), cell)
          : h("td", { "data-label": columns[i] }, cell)))))));
}

function cell(attrs, ...children) { return h("td", attrs, ...children); }

// ---- the daemon -------------------------------------------------------------

class SignedOut extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new SignedOut("Sign in to continue.");
  let response;
  try {
    response = await fetch(path, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store", credentials: "omit", redirect: "error", referrerPolicy: "no-referrer",
    });
  } catch (err) {
    throw new Error(`the daemon cannot be reached (${err.message})`);
  }
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status === 401) {
    throw new SignedOut(`The daemon refused the token: ${body && body.message ? body.message : "401"}.`);
  }
  if (!response.ok) {
    const why = body && body.message ? body.message : `HTTP ${response.status}`;
    const error = new Error(why);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ---- views ------------------------------------------------------------------

const filters = { tenant: "", state: "", plugin: "", text: "" };

function readFilters() {
  const query = new URLSearchParams(location.search);
  for (const key of Object.keys(filters)) filters[key] = query.get(key) || "";
}

function writeFilters() {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
  const search = query.toString();
  history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}`);
}

function select(name, label, options) {
  const id = `filter-${name}`;
  return h("label", { for: id }, label,
    h("select", { id, "data-key": id, onchange: (e) => { filters[name] = e.target.value; writeFilters(); rerender(); } },
      h("option", { value: "" }, "all"),
      options.map((o) => h("option", { value: o, selected: filters[name] === o }, o.replace("_", " ")))));
}

let overviewData = null;

const overview = {
  title: "Overview",
  async load() { overviewData = await api("/v1/health"); return overviewData; },
  render(data) {
    const all = data.integrations;
    const tenants = [...new Set(all.map((i) => i.tenant))].sort();
    const plugins = [...new Set(all.map((i) => i.plugin))].sort();
    const needle = filters.text.toLowerCase();
    const shown = all.filter((i) => (!filters.tenant || i.tenant === filters.tenant)
      && (!filters.state || i.state === filters.state)
      && (!filters.plugin || i.plugin === filters.plugin)
      && (!needle || `${i.tenant} ${i.integration} ${i.plugin} ${i.reason}`.toLowerCase().includes(needle)));
    const alerts = data.alerts.filter((a) => !filters.tenant || a.tenant === filters.tenant);
    return [
      h("h1", {}, "Overview"),
      h("section", { "aria-labelledby": "alerts-title" },
        h("h2", { id: "alerts-title" }, `Firing alerts (${alerts.length})`),
        alerts.length ? h("ul", { class: "alerts", id: "firing" }, alerts.map(alertItem))
          : h("p", { class: "empty", id: "firing" }, "No alert is firing.")),
      h("ul", { class: "summary", "aria-label": "Integrations by state" },
        STATES.filter((s) => data.summary[s]).map((s) => h("li", {}, badge(s), ` ${data.summary[s]}`))),
      h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
        tenants.length > 1 ? select("tenant", "Tenant", tenants) : null,
        select("state", "State", STATES),
        select("plugin", "Plugin", plugins),
        h("label", { for: "filter-text" }, "Search",
          h("input", { id: "filter-text", "data-key": "filter-text", type: "search", value: filters.text,
            placeholder: "name or error", oninput: (e) => { filters.text = e.target.value; writeFilters(); rerender(); } })),
        h("span", { class: "muted", role: "status" }, `${shown.length} of ${all.length} integrations`)),
      h("section", { "aria-labelledby": "integrations-title" },
        h("h2", { id: "integrations-title" }, "Integrations, worst first"),
        integrationsTable(shown)),
    ];
  },
};

function alertItem(alert) {
  const where = [alert.tenant, alert.integration].filter(Boolean).join(" / ") || "integrationd";
  const target = alert.tenant && alert.integration
    ? internal(integrationPath(alert.tenant, alert.integration), where) : where;
  return h("li", { class: `sev-${alert.severity}` },
    h("div", {}, h("span", { class: "what" }, alert.summary)),
    h("div", { class: "muted" }, `${alert.severity} · ${alert.rule} · `, target,
      alert.started_at ? ` · firing since ${sinceText(alert.started_at)}` : ""));
}

function integrationPath(tenant, integration) {
  return `/ui/integrations/${encodeURIComponent(tenant)}/${encodeURIComponent(integration)}`;
}

function soonestExpiry(credentials) {
  const dated = credentials.filter((c) => c.expires_at).sort((a, b) => Date.parse(a.expires_at) - Date.parse(b.expires_at));
  return dated.length ? dated[0] : null;
}

function integrationsTable(rows) {
  const columns = ["State", "Tenant", "Integration", "Plugin", "Last success", "Freshness",
    "Events/min, 1 h", "Error rate", "Open breakers", "Credential expiry", "Dead letters 24 h", "Restarts"];
  return table(columns, rows.map((i) => {
    const expiry = soonestExpiry(i.credentials);
    const open = i.breakers.filter((b) => b.state === "open");
    return [
      cell({}, badge(i.state)),
      i.tenant,
      cell({}, internal(integrationPath(i.tenant, i.integration), i.integration),
        i.reason ? h("div", { class: "reason" }, i.reason) : null),
      i.plugin,
      i.last_success ? h("time", { datetime: i.last_success.at, title: i.last_success.at }, ago(i.last_success.age_seconds)) : "never",
      cell({}, h("span", { class: `badge f-${i.freshness}` }, i.freshness.replace("_", " "))),
      cell({}, sparkline(i.events_per_minute)),
      cell({ class: "num" }, percent(i.error_rate_1h)),
      cell({ class: "num", title: open.map((b) => b.name).join(", ") }, String(open.length)),
      expiry ? h("time", { datetime: expiry.expires_at, title: `${expiry.name}: ${expiry.expires_at}` }, until(expiry.expires_at)) : "–",
      cell({ class: "num" }, String(i.dead_letters_24h)),
      cell({ class: "num" }, String(i.process.restarts)),
    ];
  }), "No integration matches.");
}

function integrationView(tenant, name) {
  return {
    title: `${tenant} / ${name}`,
    load: () => api(`/v1/integrations/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`),
    render(page) {
      const i = page.health;
      const facts = [
        ["State", [badge(i.state), i.reason ? ` ${i.reason}` : ""]],
        ["Plugin", i.plugin],
        ["Process", `${i.process.state}${i.process.pid ? `, pid ${i.process.pid}` : ""}, ${i.process.restarts} restarts${i.process.uptime_seconds != null ? `, up ${ago(i.process.uptime_seconds).replace(" ago", "")}` : ""}`],
        ["Last success", i.last_success ? `${i.last_success.at} (${ago(i.last_success.age_seconds)})` : "never"],
        ["Last event", i.last_event ? `${i.last_event.at} (${ago(i.last_event.age_seconds)})` : "none"],
        ["Freshness", `${i.freshness.replace("_", " ")}, polls every ${i.poll_interval_seconds}s${i.lag_seconds != null ? `, lag ${i.lag_seconds.toFixed(1)}s` : ""}`],
        ["Events, last hour", [sparkline(i.events_per_minute), ` ${i.events_1h}`]],
        ["Errors", `${i.errors_5m} in 5 min, ${i.errors_1h} in 1 h (${percent(i.error_rate_1h)} of attempts); ${i.consecutive_failures} in a row`],
        ["Breakers", i.breakers.length ? i.breakers.map((b) => `${b.name}: ${b.state}`).join("; ") : "none reported"],
        ["Credentials", i.credentials.length ? i.credentials.map((c) => `${c.name} (${c.kind})${c.expires_at ? `, expires ${until(c.expires_at)}` : ""}`).join("; ") : "none"],
        ["Dead letters", `${i.dead_letters_15m} in 15 min, ${i.dead_letters_24h} in 24 h; ${page.dead_letters_total} held`],
        ["Webhooks, 5 min", `${i.webhooks_5m.accepted} accepted, ${i.webhooks_5m.refused} refused`],
        ["Last check", i.last_check ? `${i.last_check.ok ? "passed" : "failed"} ${sinceText(i.last_check.at)}` : "none"],
      ];
      return [
        h("p", {}, internal("/ui/", "← Overview")),
        h("h1", {}, `${i.tenant} / ${i.integration}`),
        h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        h("h2", {}, "Recent errors"),
        table(["When", "Class", "Where", "Message"], page.recent_errors.map((e) => [
          h("time", { datetime: e.at }, sinceText(e.at)), h("span", { class: "badge s-failing" }, e.class), e.source,
          cell({ class: "reason" }, e.message)]), "No error recorded since the daemon started."),
        h("h2", {}, "Alerts"),
        table(["State", "Severity", "Rule", "Summary", "Started", "Resolved"], page.alerts.map((a) => [
          a.state, a.severity, a.rule, a.summary, a.started_at ? sinceText(a.started_at) : "pending",
          a.resolved_at ? sinceText(a.resolved_at) : "–"]), "No alert."),
        h("h2", {}, `Dead letters (${page.dead_letters_total})`),
        table(["When", "Stage", "Reason", "Id"], page.dead_letters.map((d) => [
          h("time", { datetime: d.at }, sinceText(d.at)), d.stage, cell({ class: "reason" }, d.reason),
          cell({ class: "mono" }, d.id)]), "No dead letter."),
        h("h2", {}, "Configuration history"),
        table(["Version", "When", "Who", "Change"], page.history.map((v) => [
          `v${v.version}`, h("time", { datetime: v.at, title: v.at }, sinceText(v.at)), v.author,
          cell({}, v.change, v.diff ? h("pre", { class: "diff" }, v.diff) : null)]),
          "No stored history (an instance of the daemon's configuration file)."),
      ];
    },
  };
}

/** `commit 1a2b3c4`, `pull request #12`, `alarm`: what a link points at. */
function evidenceLabel(link) {
  const tail = String(link.url).split(/[?#]/)[0].split("/").filter(Boolean).pop() || "";
  if (link.rel === "commit" && /^[0-9a-f]{7,40}$/i.test(tail)) return `commit ${tail.slice(0, 7)}`;
  if (link.rel === "pull_request" && /^\d+$/.test(tail)) return `pull request #${tail}`;
  return link.rel.replace("_", " ");
}

const deployments = {
  title: "Deployments",
  load: () => api("/v1/deployments"),
  render(page) {
    const multi = new Set(page.services.map((s) => s.tenant)).size > 1;
    return [
      h("h1", {}, "Deployments and the failures after them"),
      h("section", { "aria-labelledby": "cfr-title" },
        h("h2", { id: "cfr-title" }, "Change-failure rate by service"),
        page.services.length ? h("div", { class: "cards" }, page.services.map((s) => h("div", { class: "card" },
          h("div", {}, multi ? `${s.tenant} / ${s.service}` : s.service),
          h("div", { class: "rate" }, percent(s.change_failure_rate)),
          h("div", { class: "muted" }, `${s.failed} of ${s.deployments} deployments followed by failures`))))
          : h("p", { class: "empty" }, "No deployment seen yet.")),
      h("h2", {}, "Deployments, newest first"),
      table(["When", "Tenant", "Service", "Environment", "Revision", "Failures after it"], page.deployments.map((d) => [
        h("time", { datetime: d.at, title: d.at }, sinceText(d.at)),
        d.tenant, d.service, d.environment,
        cell({ class: "links" }, external(d.commit_url, (d.revision || "").slice(0, 12)) || (d.revision || "").slice(0, 12),
          external(d.url, "deployment")),
        cell({}, d.evidence.length ? h("ul", { class: "plain" }, d.evidence.map((f) => h("li", {},
          `${f.type}${f.subject ? ` (${f.subject})` : ""}, ${sinceText(f.time)} `,
          h("span", { class: "links" }, f.links.map((l) => external(l.url, evidenceLabel(l)))))))
          : h("span", { class: "muted" }, "none")),
      ]), "No deployment seen yet."),
    ];
  },
};

// ---- routing and refresh ----------------------------------------------------

function route() {
  const path = location.pathname;
  const match = path.match(/^\/ui\/integrations\/([^/]+)\/([^/]+)\/?$/);
  if (match) {
    try { return integrationView(decodeURIComponent(match[1]), decodeURIComponent(match[2])); } catch { return overview; }
  }
  if (/^\/ui\/deployments\/?$/.test(path)) return deployments;
  return overview;
}

let current = null;
let currentData = null;

function navigate(path) {
  history.pushState(null, "", path);
  show(true, true);
}

function markNav() {
  const views = { overview, deployments };
  for (const link of document.querySelectorAll("#nav a")) {
    if (views[link.dataset.view] === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Puts the view's elements in place, keeping the focused control focused. */
function paint(nodes) {
  const focused = document.activeElement && document.activeElement.getAttribute("data-key");
  const caret = focused && document.activeElement.selectionStart;
  $("view").replaceChildren(...nodes.flat());
  if (focused) {
    const again = document.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) { again.focus(); if (caret != null && again.setSelectionRange) again.setSelectionRange(caret, caret); }
  }
}

function rerender() { if (current && currentData) paint(current.render(currentData)); }

function problem(text) {
  const box = $("problem");
  box.hidden = !text;
  box.textContent = text || "";
}

/** Loads and draws the view: `moved` to another view (which, `focus`, takes the
    keyboard focus, as a new page would); otherwise a refresh of the same one. */
async function show(moved, focus) {
  clearTimeout(timer);
  if (moved) { readFilters(); current = route(); currentData = null; document.title = `${current.title} · Betalogs integrations`; markNav(); }
  const mine = ++generation;
  // For tests and curious operators: which request the view on screen came from.
  document.body.dataset.requested = String(mine);
  try {
    const data = await current.load();
    if (mine !== generation) return;
    currentData = data;
    paint(current.render(data));
    // The tab's title counts firing alerts, for an operator looking at another tab.
    const firing = current === overview ? data.alerts.length : 0;
    document.title = `${firing ? `(${firing} firing) ` : ""}${current.title} · Betalogs integrations`;
    if (!performance.getEntriesByName("dashboard-first-render").length) performance.mark("dashboard-first-render");
    lastUpdate = Date.now();
    problem("");
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
    document.body.dataset.shown = String(mine);
    if (focus) $("main").focus({ preventScroll: true });
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof SignedOut) { signOut(err.message); return; }
    if (err.status === 404 || err.status === 403) { paint([h("p", { class: "error" }, err.message), h("p", {}, internal("/ui/", "← Overview"))]); }
    problem(`Cannot refresh: ${err.message}. Retrying every ${REFRESH_MS / 1000}s; what is shown is from ${lastUpdate ? new Date(lastUpdate).toLocaleTimeString() : "nothing yet"}.`);
  }
  tick();
  schedule();
}

function schedule() {
  clearTimeout(timer);
  if (!paused && !document.hidden && sessionStorage.getItem(TOKEN_KEY)) timer = setTimeout(() => show(false), REFRESH_MS);
}

function tick() {
  const live = $("live");
  if (!lastUpdate) { live.textContent = ""; return; }
  const age = Math.round((Date.now() - lastUpdate) / 1000);
  live.textContent = paused ? `Paused · updated ${ago(age)}` : `Live · updated ${ago(age)}`;
  live.classList.toggle("stale", age * 1000 > REFRESH_MS * 3);
}

// ---- session ----------------------------------------------------------------

function signedIn(yes) {
  $("signin").hidden = yes;
  $("nav").hidden = !yes;
  $("session").hidden = !yes;
  if (!yes) { $("view").replaceChildren(); problem(""); }
}

function signOut(message) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  lastUpdate = 0;
  signedIn(false);
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

function start() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("signin-error").hidden = true;
    signedIn(true);
    show(true);
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").setAttribute("aria-pressed", String(paused));
    $("pause").textContent = paused ? "Resume" : "Pause";
    if (paused) { clearTimeout(timer); tick(); } else show(false);
  });
  for (const link of document.querySelectorAll("#nav a, a.brand")) {
    link.addEventListener("click", (e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
      e.preventDefault();
      navigate(link.getAttribute("href"));
    });
  }
  window.addEventListener("popstate", () => show(true, true));
  document.addEventListener("visibilitychange", () => { if (!document.hidden) show(false); else clearTimeout(timer); });
  setInterval(tick, 1000);
  if (sessionStorage.getItem(TOKEN_KEY)) { signedIn(true); show(true); } else signOut("");
}

start();
