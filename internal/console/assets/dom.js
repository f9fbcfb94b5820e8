// Small DOM helpers: elements from plain values (text only, never HTML), JSON fetches, times.
export function el(tag, attrs, ...kids) {
  const svg = ["svg", "g", "path", "circle", "text", "rect", "title", "defs", "marker", "line"].includes(tag);
  const n = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === undefined || v === null) continue;
    if (k === "value" && !svg) n.value = v;
    else if (k === "style") { // the CSP refuses style attributes and cssText, not single CSSOM properties
      for (const decl of v.split(";")) { const [p, val] = decl.split(":"); if (p && val) n.style.setProperty(p.trim(), val.trim()); }
    }
    else n.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === "" || k === null || k === undefined) continue;
    n.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return n;
}

export async function fetchJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// postJSON sends a change as the signed-in user: csrf is the session's token from api/info.
export async function postJSON(url, csrf, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-Kith-CSRF": csrf },
    body: JSON.stringify(body),
  });
  const out = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
}

export function table(head, rows, id) {
  return el("table", id ? { id } : {},
    head.some((h) => h) ? el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))) : "",
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

function span(ms) {
  const s = Math.abs(ms) / 1000;
  if (s < 90) return Math.round(s) + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}

export function until(t) {
  const ms = Date.parse(t) - Date.now();
  return ms >= 0 ? "in " + span(ms) : span(ms) + " ago";
}

export function ago(t) {
  return span(Date.now() - Date.parse(t)) + " ago";
}

export function short(s) {
  return s && s.length > 16 && /^[0-9a-f:]+$/i.test(s.replace(/^dir:/, "")) ? s.slice(0, 12) : s;
}
