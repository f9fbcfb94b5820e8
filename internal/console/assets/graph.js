// The access graph: a hand-written layout in SVG. Identities are grouped by trust domain and namespace (or
// first path segment). Progressive disclosure keeps large graphs readable: when more than AUTO_EXPAND
// identities are visible, each group is drawn as one cluster node, grants between clusters as one edge per
// pair of clusters with their count, and a click on a cluster expands it into its identities. Filters
// (identity, label, source) narrow the graph to the matching identities and their neighbours.
import { el, until } from "./dom.js";

const AUTO_EXPAND = 60;
const CELL_W = 200, CELL_H = 38, PAD = 14, HEAD = 26, CLUSTER = 130, GAP = 36, MAX_W = 1500;
const SOURCES = ["cli", "git", "k8s", "smi", "istio", "other"];
const COLORS = { cli: "#0550ae", git: "#8250df", k8s: "#116329", smi: "#bf3989", istio: "#953800", other: "#57606a" };

function groupKey(n) { return n.domain + " " + n.group; }

function labelOf(id) {
  const p = id.replace(/^spiffe:\/\/[^/]+/, "");
  return p.length > 28 ? "…" + p.slice(-27) : p || "/";
}

function matchLabel(n, f) {
  const [k, v] = f.split("=");
  if (!n.labels || !(k in n.labels)) return false;
  return v === undefined || n.labels[k] === v;
}

function activate(node, f) {
  node.addEventListener("click", f);
  node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); f(e); } });
}

export function renderGraph(box, data, s, on) {
  const edgesAll = s.source ? data.edges.filter((e) => e.source === s.source) : data.edges;
  let nodes = data.nodes;
  let edges = edgesAll;
  if (s.q || s.label) {
    const hit = new Set(data.nodes.filter((n) => (!s.q || n.id.includes(s.q)) && (!s.label || matchLabel(n, s.label))).map((n) => n.id));
    edges = edgesAll.filter((e) => hit.has(e.caller) || hit.has(e.target));
    const keep = new Set(hit);
    for (const e of edges) { keep.add(e.caller); keep.add(e.target); }
    nodes = data.nodes.filter((n) => keep.has(n.id));
  } else if (s.source) {
    const keep = new Set();
    for (const e of edges) { keep.add(e.caller); keep.add(e.target); }
    nodes = data.nodes.filter((n) => keep.has(n.id));
  }
  const auto = nodes.length <= AUTO_EXPAND;
  const groups = new Map();
  for (const n of nodes) {
    const k = groupKey(n);
    if (!groups.has(k)) groups.set(k, { key: k, domain: n.domain, group: n.group, nodes: [] });
    groups.get(k).nodes.push(n);
  }
  // Shelf packing of the groups: expanded ones as boxes of identities, collapsed ones as cluster circles.
  const pos = new Map(); // node id or "g:"+group key -> {x, y, r}
  const unitOf = new Map(); // node id -> unit key
  let x = GAP, y = GAP, rowH = 0, width = 0;
  const shapes = [];
  for (const g of groups.values()) {
    const open = auto || s.expanded.has(g.key);
    let w, h;
    if (open) {
      const cols = Math.max(1, Math.min(6, Math.ceil(Math.sqrt(g.nodes.length / 2))));
      const rows = Math.ceil(g.nodes.length / cols);
      w = cols * CELL_W + 2 * PAD; h = rows * CELL_H + HEAD + PAD;
      if (x + w > MAX_W && x > GAP) { x = GAP; y += rowH + GAP; rowH = 0; }
      shapes.push({ kind: "box", g, x, y, w, h, cols });
      g.nodes.forEach((n, i) => {
        const p = { x: x + PAD + (i % cols) * CELL_W + 8, y: y + HEAD + Math.floor(i / cols) * CELL_H + CELL_H / 2, r: 7 };
        pos.set(n.id, p); unitOf.set(n.id, n.id);
      });
    } else {
      w = CLUSTER; h = CLUSTER;
      if (x + w > MAX_W && x > GAP) { x = GAP; y += rowH + GAP; rowH = 0; }
      const p = { x: x + w / 2, y: y + h / 2, r: 40 };
      pos.set("g:" + g.key, p);
      for (const n of g.nodes) unitOf.set(n.id, "g:" + g.key);
      shapes.push({ kind: "cluster", g, x, y, w, h, p });
    }
    x += w + GAP; rowH = Math.max(rowH, h); width = Math.max(width, x);
  }
  const height = y + rowH + GAP;
  // Edges between units; edges between two collapsed units (or inside one) are merged.
  const merged = new Map();
  const internal = new Map();
  for (const e of edges) {
    const a = unitOf.get(e.caller), b = unitOf.get(e.target);
    if (!a || !b) continue;
    if (a === b && a.startsWith("g:")) { internal.set(a, (internal.get(a) || 0) + 1); continue; }
    const k = a + "\u0000" + b;
    if (!merged.has(k)) merged.set(k, { a, b, list: [] });
    merged.get(k).list.push(e);
  }
  const svg = el("svg", { width, height: Math.max(height, 120), viewBox: `0 0 ${width} ${Math.max(height, 120)}`, role: "img", "aria-label": `Access graph: ${nodes.length} identities, ${edges.length} grants`, id: "graph-svg" });
  svg.append(el("defs", {}, ...SOURCES.map((src) => el("marker", { id: "arrow-" + src, viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: COLORS[src] })))));
  const layerBoxes = el("g", {}), layerEdges = el("g", { class: "edges" }), layerNodes = el("g", {});
  svg.append(layerBoxes, layerEdges, layerNodes);
  let shownNodes = 0, shownGroups = 0;
  for (const sh of shapes) {
    if (sh.kind === "box") {
      const title = el("text", { x: sh.x + PAD, y: sh.y + 17, class: "group-title" }, `${sh.g.domain} / ${sh.g.group} (${sh.g.nodes.length})`);
      const b = el("g", { class: "group", "data-group": sh.g.key }, el("rect", { class: "group-box", x: sh.x, y: sh.y, width: sh.w, height: sh.h, rx: 6 }), title);
      if (!auto) {
        b.setAttribute("tabindex", "0"); b.setAttribute("role", "button"); b.setAttribute("aria-expanded", "true");
        b.setAttribute("aria-label", `Collapse group ${sh.g.domain} / ${sh.g.group}`);
        activate(b, (ev) => { if (ev.target.closest(".node")) return; s.expanded.delete(sh.g.key); on.onGroup(); });
      }
      layerBoxes.append(b);
      for (const n of sh.g.nodes) {
        const p = pos.get(n.id);
        const cls = "node" + (n.pattern ? " pattern" : "") + (n.mode === "audit" ? " audit" : "");
        const lab = `${n.id}${n.mode === "audit" ? " (audit mode)" : ""}${n.labels ? " " + Object.entries(n.labels).map(([k, v]) => k + "=" + v).join(" ") : ""}`;
        const g = el("g", { class: cls, "data-id": n.id, tabindex: "0", role: "link", "aria-label": "Identity " + lab },
          el("title", {}, lab), el("circle", { cx: p.x, cy: p.y, r: p.r }),
          el("text", { x: p.x + 11, y: p.y + 4 }, labelOf(n.id)),
          n.mode === "audit" ? el("text", { x: p.x - 4, y: p.y - 9, class: "tag" }, "audit") : "");
        activate(g, () => { location.hash = "#/identity?id=" + encodeURIComponent(n.id); });
        layerNodes.append(g);
        shownNodes++;
      }
    } else {
      const n = internal.get("g:" + sh.g.key) || 0;
      const c = el("g", { class: "cluster", "data-group": sh.g.key, tabindex: "0", role: "button", "aria-expanded": "false", "aria-label": `Expand group ${sh.g.domain} / ${sh.g.group}: ${sh.g.nodes.length} identities` },
        el("title", {}, `${sh.g.domain} / ${sh.g.group}: ${sh.g.nodes.length} identities, ${n} grants inside`),
        el("circle", { cx: sh.p.x, cy: sh.p.y, r: sh.p.r }),
        el("text", { x: sh.p.x, y: sh.p.y - 4, "text-anchor": "middle", class: "group-title" }, sh.g.group.length > 16 ? sh.g.group.slice(0, 15) + "…" : sh.g.group),
        el("text", { x: sh.p.x, y: sh.p.y + 12, "text-anchor": "middle" }, `${sh.g.nodes.length} ids`),
        el("text", { x: sh.p.x, y: sh.p.y + sh.p.r + 14, "text-anchor": "middle", class: "muted" }, sh.g.domain));
      activate(c, () => { s.expanded.add(sh.g.key); on.onGroup(); });
      layerNodes.append(c);
      shownGroups++;
    }
  }
  const now = Date.now();
  for (const m of merged.values()) {
    const pa = pos.get(m.a), pb = pos.get(m.b);
    const one = m.list.length === 1 ? m.list[0] : null;
    const srcs = new Set(m.list.map((e) => e.source));
    const src = srcs.size === 1 ? [...srcs][0] : "other";
    const timed = m.list.every((e) => e.expires_at);
    const expired = m.list.every((e) => e.expired || (e.expires_at && Date.parse(e.expires_at) <= now));
    let d;
    if (m.a === m.b) {
      d = `M${pa.x - 4},${pa.y - pa.r} C${pa.x - 24},${pa.y - 40} ${pa.x + 24},${pa.y - 40} ${pa.x + 4},${pa.y - pa.r}`;
    } else {
      const dx = pb.x - pa.x, dy = pb.y - pa.y, len = Math.hypot(dx, dy) || 1;
      const ux = dx / len, uy = dy / len;
      const sx = pa.x + ux * pa.r, sy = pa.y + uy * pa.r, ex = pb.x - ux * (pb.r + 2), ey = pb.y - uy * (pb.r + 2);
      const bend = Math.min(60, len * 0.12);
      const cx = (sx + ex) / 2 - uy * bend, cy = (sy + ey) / 2 + ux * bend;
      d = `M${sx.toFixed(1)},${sy.toFixed(1)} Q${cx.toFixed(1)},${cy.toFixed(1)} ${ex.toFixed(1)},${ey.toFixed(1)}`;
    }
    const text = one
      ? `${one.caller} → ${one.target}, ${one.source}${one.expires_at ? ", expires " + until(one.expires_at) : ""}${(one.methods || []).length ? ", " + one.methods.join(",") : ""}`
      : `${m.list.length} grants, ${m.a.replace(/^g:/, "")} → ${m.b.replace(/^g:/, "")}`;
    const path = el("path", {
      d, class: `edge src-${src}${timed ? " timed" : ""}${expired ? " expired" : ""}`, "marker-end": `url(#arrow-${src})`,
      "stroke-width": one ? undefined : String(Math.min(8, 1.5 + Math.log2(m.list.length))),
      "data-grants": m.list.map((e) => e.id).join(","), "data-caller": one ? one.caller : undefined, "data-target": one ? one.target : undefined,
      tabindex: "0", role: "button", "aria-label": "Grant " + text,
    }, el("title", {}, text));
    activate(path, () => {
      for (const p of svg.querySelectorAll(".edge.selected")) p.classList.remove("selected");
      path.classList.add("selected");
      on.onEdge(m.list.map((e) => e.id));
    });
    if (s.selected && s.selected === m.list.map((e) => e.id).join(",")) path.classList.add("selected");
    layerEdges.append(path);
    if (one && one.expires_at && !expired && m.a !== m.b) {
      const mid = path.getAttribute("d").match(/Q([\d.-]+),([\d.-]+)/);
      if (mid && merged.size <= 300) layerEdges.append(el("text", { x: mid[1], y: mid[2], class: "src-" + src, "text-anchor": "middle", fill: COLORS[src] }, until(one.expires_at)));
    }
  }
  box.replaceChildren(svg);
  return { nodes: shownNodes, groups: shownGroups, edges: merged.size };
}
