// The Kith console: a hash router over pages that read /ui/api/* and redraw on each store change the
// server sends on /ui/api/events.
import { renderGraph } from "./graph.js";
import { el, fetchJSON, postJSON, ago, until, table, short } from "./dom.js";

const main = document.getElementById("main");
const pages = {
  graph: graphPage,
  identity: identityPage,
  explain: explainPage,
  agents: agentsPage,
  ca: caPage,
  policy: policyPage,
  audit: auditPage,
};

// state survives redraws: filters, expanded groups, the selected edge, the explain form's values.
const state = { graph: { q: "", label: "", source: "", expanded: new Set(), selected: "" }, explain: {}, me: null, results: {} };

function route() {
  const h = location.hash.replace(/^#\/?/, "") || "graph";
  const [name, query] = h.split("?");
  return { name: pages[name] ? name : "graph", params: new URLSearchParams(query || "") };
}

let drawing = null;
let again = false;
async function draw(focus) {
  if (drawing) { again = true; return drawing; }
  const r = route();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === r.name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  drawing = (async () => {
    try {
      await pages[r.name](r.params);
    } catch (e) {
      main.replaceChildren(el("h1", {}, "Error"), el("p", { class: "error", role: "alert" }, String(e.message || e)));
    }
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
    if (focus) main.focus();
  })();
  await drawing;
  drawing = null;
  if (again) { again = false; return draw(false); }
}

window.addEventListener("hashchange", () => draw(true));

// Live updates: every committed store revision arrives as a "change" event; the page redraws in place.
function live() {
  const badge = document.getElementById("live");
  const es = new EventSource("api/events");
  es.addEventListener("open", () => { badge.textContent = "live"; badge.classList.add("on"); });
  es.addEventListener("error", () => { badge.textContent = "reconnecting…"; badge.classList.remove("on"); });
  es.addEventListener("change", (ev) => {
    const rev = JSON.parse(ev.data).revision;
    document.body.dataset.revision = String(rev);
    badge.textContent = "live · revision " + rev;
    if (route().name !== "explain") draw(false);
  });
}

async function header() {
  const info = await fetchJSON("api/info");
  const srv = info.server || {};
  document.getElementById("td").textContent = "trust domain " + srv.trust_domain + (srv.version ? " · " + srv.version : "");
  const me = document.getElementById("me");
  if (info.user) {
    state.me = { user: info.user, csrf: info.csrf };
    const out = el("button", { type: "button", id: "sign-out" }, "Sign out");
    out.addEventListener("click", async () => {
      await postJSON("api/logout", state.me.csrf, {}).catch(() => {});
      location.reload();
    });
    me.replaceChildren("signed in as ", el("span", { class: "mono", id: "user" }, info.user), " ", out);
    document.getElementById("footer").textContent = "Changes made here are decided by the kith.admin policy as " + info.user + " and audited under that ID.";
  } else {
    me.textContent = "read-only";
  }
}

// changeForm is a form that posts a change as the signed-in user and says what came of it. The answer is
// kept in state.results, so that the redraw the change itself causes shows it again.
function changeForm(id, label, fields, submit, send) {
  const out = el("p", { id: id + "-result", role: "status", "aria-live": "polite" });
  const show = (r) => out.replaceChildren(el("span", r.ok ? { class: "allowed" } : { class: "denied", role: "alert" }, r.text));
  if (state.results[id]) show(state.results[id]);
  const form = el("form", { class: "bar", id, "aria-label": label }, ...fields, el("button", { type: "submit" }, submit));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let r;
    try {
      r = { ok: true, text: await send(form.elements) };
    } catch (err) {
      r = { ok: false, text: String(err.message) };
    }
    state.results[id] = r;
    show(r);
  });
  return [form, out];
}

const list = (v) => v.split(",").map((x) => x.trim()).filter((x) => x);

// ---- pages ----

async function graphPage() {
  const data = await fetchJSON("api/graph");
  for (const e of data.edges) { e.caller = data.nodes[e.c].id; e.target = data.nodes[e.t].id; }
  const s = state.graph;
  const sources = ["cli", "git", "k8s", "smi", "istio", "other"];
  const q = el("input", { type: "text", id: "f-id", value: s.q, placeholder: "part of a SPIFFE ID" });
  const lab = el("input", { type: "text", id: "f-label", value: s.label, placeholder: "key=value" });
  const src = el("select", { id: "f-source" }, el("option", { value: "" }, "any source"), ...sources.map((x) => el("option", { value: x }, x)));
  src.value = s.source;
  const expandAll = el("button", { type: "button", id: "expand-all" }, "Expand all groups");
  const collapseAll = el("button", { type: "button", id: "collapse-all" }, "Collapse");
  const svgBox = el("div", { id: "graph", role: "region", "aria-label": "Access graph" });
  const details = el("aside", { id: "details", "aria-label": "Details", "aria-live": "polite" });
  const counts = el("p", { class: "muted", id: "graph-counts" });
  const legend = el("div", { class: "legend", "aria-label": "Legend" },
    ...sources.map((x) => el("span", { class: "src-" + x }, x)),
    el("span", { class: "dash" }, "time-bound (dashed)"),
    el("span", { class: "warn" }, "◉ audit-mode target"),
    el("span", { class: "muted" }, "groups: trust domain / namespace; click a group to expand it"));
  const redraw = () => {
    const shown = renderGraph(svgBox, data, s, { onEdge: (ids) => showEdge(details, ids, data), onGroup: () => redraw() });
    counts.textContent = `${data.nodes.length} identities, ${data.edges.length} grants; showing ${shown.nodes} nodes, ${shown.groups} collapsed groups, ${shown.edges} edges`;
  };
  const filter = () => { s.q = q.value.trim(); s.label = lab.value.trim(); s.source = src.value; redraw(); };
  q.addEventListener("input", filter);
  lab.addEventListener("input", filter);
  src.addEventListener("change", filter);
  expandAll.addEventListener("click", () => { for (const n of data.nodes) s.expanded.add(n.domain + " " + n.group); redraw(); });
  collapseAll.addEventListener("click", () => { s.expanded.clear(); redraw(); });
  main.replaceChildren(
    el("h1", {}, "Access graph"),
    el("form", { class: "toolbar", role: "search", "aria-label": "Filter the graph" },
      el("label", {}, "Identity", q), el("label", {}, "Label", lab), el("label", {}, "Source", src), expandAll, collapseAll),
    legend, counts, el("div", { class: "graphwrap" }, svgBox, details));
  main.querySelector("form").addEventListener("submit", (e) => e.preventDefault());
  redraw();
  if (!performance.getEntriesByName("kith-graph-drawn").length) performance.mark("kith-graph-drawn");
  if (s.selected) {
    const ids = s.selected.split(",").filter((id) => data.edges.some((e) => e.id === id));
    if (ids.length) showEdge(details, ids, data); else s.selected = "";
  }
}

async function showEdge(details, ids, data) {
  state.graph.selected = ids.join(",");
  const edges = data.edges.filter((e) => ids.includes(e.id));
  if (edges.length > 1) {
    details.replaceChildren(el("h2", {}, `${edges.length} grants`), table(["caller", "target", "source"],
      edges.slice(0, 200).map((e) => [idLink(e.caller), idLink(e.target), e.source])));
    return;
  }
  const d = await fetchJSON("api/grant?id=" + encodeURIComponent(ids[0]));
  const g = d.grant;
  const rows = [["ID", g.id], ["Caller", idLink(g.caller)], ["Target", idLink(g.target)], ["Source", g.source || "cli"],
    ["Methods", (g.methods || []).join(", ") || "any"], ["Paths", (g.paths || []).join(", ") || "any"],
    ["Expires", g.expires_at ? `${g.expires_at} (${until(g.expires_at)})` : "never"], ["Reason", g.reason || ""],
    ["Created", `${g.created_at || ""} by ${g.created_by || ""}`]];
  if (d.mode) rows.push(["Target mode", el("span", { class: "warn" }, d.mode + " (denials are logged, not enforced)")]);
  const kids = [el("h2", {}, "Grant " + g.id), table(["", ""], rows, "grant-detail")];
  if (!g.caller.endsWith("*") && !g.target.endsWith("*")) {
    try {
      const c = await fetchJSON(`api/can?caller=${encodeURIComponent(g.caller)}&target=${encodeURIComponent(g.target)}&method=${encodeURIComponent((g.methods || ["GET"])[0])}&path=/`);
      kids.push(el("p", {}, "Now, ", (g.methods || ["GET"])[0], " / is ",
        el("span", { class: c.allowed ? "allowed" : "denied" }, c.allowed ? "allowed" : "denied"),
        c.allowed ? "" : " — " + (c.reasons || []).join("; ")));
    } catch (e) { kids.push(el("p", { class: "error" }, String(e.message))); }
  }
  if (state.me) {
    kids.push(...changeForm("revoke", "Revoke this grant", [], "Revoke grant " + g.id, async () => {
      const r = await postJSON("api/revoke", state.me.csrf, { id: g.id });
      return `Revoked ${(r.grants || []).length} grant(s); in force from store revision ${r.revision}.`;
    }));
  }
  kids.push(el("h2", {}, "Audit rows"), auditTable(d.audit || []));
  details.replaceChildren(...kids);
}

function idLink(id) {
  return el("a", { href: "#/identity?id=" + encodeURIComponent(id), class: "mono" }, id);
}

function auditTable(events) {
  if (!events.length) return el("p", { class: "muted" }, "none in the newest 5,000 audit rows");
  return table(["seq", "time", "actor", "action", "target"], events.map((e) => [e.seq, e.time, e.actor, e.action, el("span", { class: "mono" }, e.target)]), "audit-rows");
}

async function identityPage(params) {
  const id = params.get("id") || "";
  const form = el("form", { class: "bar", role: "search" },
    el("label", {}, "SPIFFE ID", el("input", { type: "text", name: "id", id: "identity-id", value: id, required: "" })),
    el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (e) => { e.preventDefault(); location.hash = "#/identity?id=" + encodeURIComponent(form.elements.id.value.trim()); });
  if (!id) { main.replaceChildren(el("h1", {}, "Identity"), form); return; }
  const d = await fetchJSON("api/identity?id=" + encodeURIComponent(id));
  const act = d.activity || {};
  const grantRows = (gs, other) => gs.map((g) => [idLink(g[other]), g.source || "cli", (g.methods || []).join(",") || "any", (g.paths || []).join(",") || "any", g.expires_at ? until(g.expires_at) : "never"]);
  main.replaceChildren(
    el("h1", {}, "Identity ", el("span", { class: "mono" }, id)), form,
    d.mode ? el("p", { class: "warn" }, "Target in " + d.mode + " mode: denials are logged, not enforced.") : "",
    el("h2", {}, `Entries (${d.entries.length})`),
    d.entries.length ? table(["entry", "parent", "selectors", "served by", "X.509 TTL", "labels"], d.entries.map((e) => [
      e.id, e.parent_id || "(node selectors) " + (e.node_selectors || []).join(", "), (e.selectors || []).join(", "),
      (d.served_by[e.id] || []).join(", ") || "no agent", e.x509_ttl_seconds ? e.x509_ttl_seconds + " s" : "default",
      Object.entries(e.labels || {}).map(([k, v]) => k + "=" + v).join(", ")]), "entries") : el("p", { class: "muted" }, "No entry names this ID."),
    el("h2", {}, `SVIDs held (${(act.svids || []).length})`),
    (act.svids || []).length ? table(["agent", "entry", "serial", "expires"], act.svids.map((h) => [
      el("span", { class: "mono" }, h.agent_id), h.entry_id, el("span", { class: "mono" }, h.serial_number || ""),
      h.expires_at ? `${h.expires_at} (${until(h.expires_at)})` : ""]), "svids")
      : el("p", { class: "muted", id: "svids" }, "No agent connected to this server has reported holding one."),
    el("h2", {}, `Who may call it (${d.callers.length})`),
    table(["caller", "source", "methods", "paths", "expires"], grantRows(d.callers, "caller"), "callers"),
    state.me && !id.endsWith("/*") ? el("section", { "aria-label": "Grant a caller" }, changeForm("grant", "Grant a caller to " + id, [
      el("label", {}, "Caller", el("input", { type: "text", name: "caller", id: "grant-caller", required: "", placeholder: "spiffe://…/frontend" })),
      el("label", {}, "Methods", el("input", { type: "text", name: "methods", id: "grant-methods", placeholder: "GET, POST (any)" })),
      el("label", {}, "Paths", el("input", { type: "text", name: "paths", id: "grant-paths", placeholder: "/api/* (any)" })),
      el("label", {}, "For", el("input", { type: "text", name: "for", id: "grant-for", placeholder: "8h (no expiry)" })),
      el("label", {}, "Reason", el("input", { type: "text", name: "reason", id: "grant-reason" })),
    ], "Grant", async (f) => {
      const r = await postJSON("api/grants", state.me.csrf, { caller: f.caller.value.trim(), target: id,
        methods: list(f.methods.value), paths: list(f.paths.value), for: f.for.value.trim(), reason: f.reason.value });
      return `Granted: ${r.grant.id}, in force from store revision ${r.revision}.`;
    })) : "",
    el("h2", {}, `Whom it may call (${d.targets.length})`),
    table(["target", "source", "methods", "paths", "expires"], grantRows(d.targets, "target"), "targets"),
    el("h2", {}, "Recent decisions about it"),
    (act.callers || []).length ? table(["caller", "allowed", "denied"], act.callers.map((c) => [
      c.caller ? (c.caller === "other" ? "other callers" : idLink(c.caller)) : "(no caller identity)",
      el("span", { class: "allowed" }, String(c.allowed || 0)), el("span", { class: (c.denied || 0) > 0 ? "denied" : "" }, String(c.denied || 0))]), "decisions")
      : el("p", { class: "muted", id: "decisions" }, "No decision about it reported yet."),
    el("p", { class: "muted" }, act.agents_reporting
      ? `Counted by ${act.agents_reporting} agent(s) since each started, as last reported ${ago(act.oldest_report)} at the oldest (agents report every few seconds when something changed).`
      : "Agents count their ext_authz decisions and report them every few seconds."),
    el("h2", {}, "Audit rows about it"), auditTable(d.audit || []));
}

async function explainPage(params) {
  const s = state.explain;
  for (const k of ["caller", "target", "method", "path"]) if (params.get(k)) s[k] = params.get(k);
  const input = (name, label, ph) => el("label", {}, label, el("input", { type: "text", name, id: "explain-" + name, value: s[name] || "", placeholder: ph }));
  const out = el("section", { id: "explain-result", "aria-live": "polite" });
  const form = el("form", { class: "bar", "aria-label": "Explain a decision" },
    input("caller", "Caller", "spiffe://…/frontend"), input("target", "Target", "spiffe://…/payments"),
    input("method", "Method", "GET"), input("path", "Path", "/"), el("button", { type: "submit", id: "explain-submit" }, "Explain"));
  const ask = async () => {
    for (const k of ["caller", "target", "method", "path"]) s[k] = form.elements[k].value.trim();
    if (!s.caller || !s.target) return;
    const q = new URLSearchParams({ caller: s.caller, target: s.target, method: s.method || "GET", path: s.path || "/" });
    try {
      const d = await fetchJSON("api/can?" + q);
      out.replaceChildren(
        el("p", { id: "decision" }, el("span", { class: d.allowed ? "allowed" : "denied" }, d.allowed ? "ALLOWED" : "DENIED"),
          d.mode === "audit" ? el("span", { class: "warn" }, " (audit mode: would be " + (d.policy_allowed ? "allowed" : "denied") + ", not enforced)") : ""),
        el("h2", {}, "Reasons"), el("ul", { id: "reasons" }, ...(d.reasons || []).map((r) => el("li", {}, r))),
        table(["", ""], [["Grant", d.grant || "none"], ["Policy revision", d.policy_revision || "built-in"], ["Mode", d.mode || "enforce"]]));
    } catch (e) {
      out.replaceChildren(el("p", { class: "error", role: "alert" }, String(e.message)));
    }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); ask(); });
  main.replaceChildren(el("h1", {}, "Explain"), el("p", { class: "muted" }, "The same answer as kith can CALLER TARGET --method M --path P, from the engine the agents run."), form, out);
  if (s.caller && s.target) await ask();
}

async function agentsPage() {
  const d = await fetchJSON("api/agents");
  const reports = Object.fromEntries((d.policy.agents || []).map((a) => [a.agent_id, a]));
  const current = d.policy.active_revision || "";
  const rows = d.agents.map((a) => {
    const r = reports[a.id] || {};
    const health = a.banned ? el("span", { class: "denied" }, "banned") : a.evicted ? el("span", { class: "warn" }, "evicted")
      : a.connected ? el("span", { class: "allowed" }, "connected") : el("span", { class: "warn" }, "offline");
    const rollout = !current ? "no custom policy" : r.revision === current ? el("span", { class: "allowed" }, "current") : el("span", { class: "warn" }, r.revision ? "behind" : "not reported");
    return [el("span", { class: "mono" }, a.id), a.attestation_type, health, r.since ? ago(r.since) : "—",
      short(r.revision || "—"), rollout, d.entries[a.id] || 0, a.expires_at ? until(a.expires_at) : ""];
  });
  main.replaceChildren(el("h1", {}, "Agents"),
    el("p", {}, "Policy in force: ", el("span", { class: "mono" }, current || "built-in only"), d.policy.pinned_revision ? " (pinned by a rollback)" : ""),
    table(["agent", "attestation", "health", "last report", "policy enforced", "rollout", "SVIDs (entries served)", "agent SVID expires"], rows, "agents"));
}

async function caPage() {
  const d = await fetchJSON("api/ca");
  const as = d.authorities || [];
  const now = Date.parse(d.now);
  const t = (x) => (x ? Date.parse(x) : NaN);
  let lo = now, hi = now;
  for (const a of as) { lo = Math.min(lo, t(a.not_before)); hi = Math.max(hi, t(a.not_after)); }
  const pct = (x) => ((x - lo) / Math.max(1, hi - lo)) * 100;
  const rows = as.map((a) => el("div", { class: "tl-row" },
    el("span", { class: "tl-label mono", title: a.id }, `${a.kind} ${a.state} ${short(a.id)}`),
    el("div", { class: "tl-track", role: "img", "aria-label": `${a.kind} ${a.id} valid ${a.not_before} to ${a.not_after}` },
      el("div", { class: "tl-bar" + (a.state === "active" ? " active" : ""), style: `left:${pct(t(a.not_before))}%;width:${pct(t(a.not_after)) - pct(t(a.not_before))}%` }),
      el("div", { class: "tl-now", style: `left:${pct(now)}%` }))));
  const active = as.filter((a) => a.state === "active" && a.kind === "x509-intermediate");
  const next = active.length ? active[0] : null;
  main.replaceChildren(el("h1", {}, "Certificate authority"),
    el("p", {}, next ? ["Active intermediate expires ", until(next.not_after), "; the CA prepares the next one ahead of that and activates it on schedule (kith ca rotate does it now)."] : "No active intermediate."),
    el("h2", {}, "Expiry timeline (red line: now)"), el("div", { class: "timeline" }, ...rows),
    table(["kind", "state", "id", "not before", "not after", "in bundle"], as.map((a) => [a.kind, a.state, el("span", { class: "mono" }, a.id), a.not_before, a.not_after + " (" + until(a.not_after) + ")", a.published ? "yes" : "no"]), "authorities"),
    el("p", { class: "muted" }, "Upstream: roots published from an upstream authority appear as root authorities without keys."));
}

async function policyPage() {
  const d = await fetchJSON("api/policy");
  const st = d.status;
  main.replaceChildren(el("h1", {}, "Policy"),
    table(["", ""], [["Source", st.source || "none (grants only)"], ["Revision in force", st.active_revision || "built-in"], ["Pinned", st.pinned_revision || "no"]], "policy-status"),
    el("h2", {}, "Revisions and rejections"),
    d.history.length ? table(["revision", "time", "status", "why rejected"], d.history.map((h) => [el("span", { class: "mono" }, short(h.revision)), h.created_at,
      el("span", { class: h.status === "ok" ? "allowed" : "denied" }, h.status), el("span", { class: "mono" }, h.error || "")]), "policy-history") : el("p", { class: "muted" }, "No policy attempts yet."));
}

async function auditPage() {
  const d = await fetchJSON("api/audit?limit=200");
  const v = d.verification;
  main.replaceChildren(el("h1", {}, "Audit log"),
    el("p", { id: "chain" }, "Chain: ", v.ok ? el("span", { class: "allowed" }, `verified, ${v.count} rows intact`) : el("span", { class: "denied" }, `BROKEN at row ${v.broken_at}: ${v.problem}`)),
    el("p", { class: "muted" }, "Newest first, the last 200 rows."),
    table(["seq", "time", "actor", "action", "target", "revision"], d.events.map((e) => [e.seq, e.time, e.actor, e.action, el("span", { class: "mono" }, e.target), e.revision || ""]), "audit"));
}

live();
// The page needs to know who is signed in before it draws its forms.
header().catch(() => {}).finally(() => draw(false));
