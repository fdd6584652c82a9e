// provender's web page: the cache (and its stats over time), the loaded models, collection search and a
// playground, from this server's own routes.
// Plain JavaScript, no build step, no network but this server. Text from the server is always set as
// text (textContent), never as HTML. The API key, when the server has one, stays in this tab's session
// storage and goes in the Authorization header only; the page's token goes with every change.
"use strict";
(() => {
  const $ = (selector) => document.querySelector(selector);
  const token = $('meta[name="provender-token"]').content;
  const KEY_STORE = "provender-api-key";
  const COLORS = ["#2f6fd6", "#d6762f", "#2fa36b", "#a33fd6", "#d63f6c", "#6b8e23", "#8a6d3b", "#3fb7d6"];
  let apiKey = sessionStorage.getItem(KEY_STORE) || "";
  let view = null; // the last /api/web/cache answer
  let plan = null; // the prune plan shown
  let chatAbort = null;
  const history = [];

  // -- plumbing --------------------------------------------------------------------------

  class HTTPError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function headers(extra) {
    const out = Object.assign({}, extra);
    if (apiKey) out.Authorization = "Bearer " + apiKey;
    return out;
  }

  async function api(method, path, body, changes) {
    const h = headers(body === undefined ? {} : { "Content-Type": "application/json" });
    if (changes) h["X-Provender-Token"] = token;
    const init = { method, headers: h, cache: "no-store", credentials: "omit" };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) $("#key-form").hidden = false;
    if (!response.ok) throw new HTTPError(response.status, data.error ? data.error.message : `${method} ${path}: ${response.status}`);
    return data;
  }

  function say(text, ok) {
    const box = $("#message");
    box.textContent = text;
    box.className = ok ? "ok" : "";
    box.hidden = !text;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed under the page's CSP
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  function esc(text) { // text for HTML, in element content and in quoted attributes alike
    return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  }

  function size(n) { // as provender prints sizes (decimal units)
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return i === 0 ? `${Math.trunc(n)} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function ago(epoch) { // seconds since 1970, or null
    if (!epoch) return "never";
    const s = Date.now() / 1000 - epoch;
    if (s < 60) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  }

  function duration(seconds) {
    if (seconds < 0) return "forever";
    if (seconds < 120) return `${Math.round(seconds)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    return `${Math.round(seconds / 3600)} h`;
  }

  async function guarded(work) {
    try { await work(); } catch (err) { say(err.message); }
  }

  // -- the cache -------------------------------------------------------------------------

  async function loadCache() {
    view = await api("GET", "/api/web/cache");
    drawCache();
    drawModels(loadedModels);
  }

  function drawCache() {
    const { entries, stats } = view;
    const limit = view.max_size;
    const total = entries.reduce((sum, e) => sum + e.size, 0);
    $("#cache-summary").textContent =
      `${entries.length} models, ${size(total)} of ${size(limit)} (${stats.pinned} pinned; hit rate ` +
      `${stats.hit_rate === null ? "-" : Math.round(stats.hit_rate * 100) + " %"}, ${stats.evictions} evictions)`;
    const byProvider = new Map();
    for (const e of entries) {
      const p = e.provider || "(no provider)";
      byProvider.set(p, (byProvider.get(p) || 0) + e.size);
    }
    const scale = Math.max(limit, total) || 1;
    const bar = $("#provider-bar");
    const legend = $("#provider-legend");
    bar.replaceChildren();
    legend.replaceChildren();
    [...byProvider.entries()].sort((a, b) => b[1] - a[1]).forEach(([provider, bytes], i) => {
      const color = COLORS[i % COLORS.length];
      bar.append(el("span", { style: { width: `${(100 * bytes) / scale}%`, background: color }, title: `${provider}: ${size(bytes)}` }));
      legend.append(el("li", { "data-provider": provider }, el("i", { style: { background: color } }), `${provider} ${size(bytes)}`));
    });
    legend.append(el("li", {}, `free ${size(Math.max(0, limit - total))}`));
    // one string for 1,000 rows is several times faster to draw than 10,000 nodes made one by one;
    // every value in it goes through esc(); a bar is an <i> of one of 51 width classes (2 % steps: no
    // inline styles under the page's CSP, and far cheaper to lay out and paint than 1,000 <progress>)
    const biggest = entries.reduce((m, e) => Math.max(m, e.size), 1);
    $("#models tbody").innerHTML = entries.map((e) =>
      `<tr data-key="${esc(e.key)}" data-name="${esc(e.name)}" data-size="${Number(e.size)}">` +
      `<td class="name"><button class="link">${esc(e.name)}</button></td><td>${esc(e.provider || "-")}</td>` +
      `<td class="num">${size(e.size)}</td><td class="sizebar"><i class="w${Math.round((50 * e.size) / biggest)}" title="${Number(e.size)} bytes"></i></td>` +
      `<td title="${e.last_used ? new Date(e.last_used * 1000).toISOString() : ""}">${ago(e.last_used)}</td>` +
      `<td class="pinned">${e.pinned ? "yes" : ""}</td>` +
      `<td><button class="pin">${e.pinned ? "Unpin" : "Pin"}</button> <button class="remove">Remove</button></td></tr>`).join("");
  }

  function onModelsClick(event) { // one listener for every row's buttons
    const button = event.target.closest("button");
    const row = button && button.closest("tr[data-key]");
    const entry = row && view.entries.find((e) => e.key === row.dataset.key);
    if (!entry) return;
    if (button.classList.contains("link")) guarded(() => showDetails(entry.key));
    else if (button.classList.contains("pin")) guarded(() => pin(entry, !entry.pinned));
    else if (button.classList.contains("remove")) guarded(() => remove(entry));
  }

  async function pin(entry, on) {
    await api("POST", on ? "/api/web/pin" : "/api/web/unpin", { name: entry.key }, true);
    say(`${on ? "pinned" : "unpinned"} ${entry.name}`, true);
    await loadCache();
  }

  async function remove(entry) {
    if (!confirm(`Remove ${entry.name} (${size(entry.size)}) from the cache?`)) return;
    const done = await api("POST", "/api/web/remove", { name: entry.key }, true);
    say(`removed ${done.removed} (${size(done.size)})`, true);
    await loadCache();
  }

  async function showPlan() {
    plan = await api("GET", "/api/web/prune");
    const box = $("#prune-plan");
    box.replaceChildren();
    if (!plan.evict.length) {
      box.append(el("p", {}, plan.fits
        ? `Nothing to prune: the cache holds ${size(plan.total)}, within its limit of ${size(plan.limit)}.`
        : `Nothing can be freed: the cache holds ${size(plan.total)}, over its limit of ${size(plan.limit)}.`));
    }
    const list = el("ul", {});
    for (const e of plan.evict) list.append(el("li", { class: "evict" }, `will evict ${e.name} (${size(e.size)})`));
    for (const e of plan.kept) list.append(el("li", { class: "kept" }, `kept ${e.name} (${size(e.size)}): ${e.reason}`));
    box.append(list);
    if (plan.evict.length) {
      box.append(el("p", {}, `will free ${size(plan.freed)}, leaving ${size(plan.after)} of ${size(plan.limit)} `,
        el("button", { id: "prune-confirm", onclick: () => guarded(prune) }, `Evict ${plan.evict.length}`), " ",
        el("button", { onclick: () => { box.hidden = true; } }, "Cancel")));
    }
    box.hidden = false;
  }

  async function prune() {
    const done = await api("POST", "/api/web/prune", { evict: plan.evict.map((e) => e.key) }, true);
    $("#prune-plan").hidden = true;
    say(`evicted ${done.evicted.length} entries, freed ${size(done.freed)}`, true);
    await loadCache();
  }

  async function showDetails(key) {
    const d = await api("GET", "/api/web/entry?name=" + encodeURIComponent(key));
    $("#details-name").textContent = d.name;
    const facts = [
      ["key", d.key], ["kind", d.kind], ["size", `${size(d.size)} (${d.size} bytes)`],
      ["providers", d.providers.join(", ") || "none claims it"], ["revision", d.revision || "-"],
      ["pinned", d.pinned ? "yes" : "no"], ["in use", d.in_use ? "yes (a process holds it)" : "no"],
      ["loaded here", d.loaded.join(", ") || "no"], ["last used", d.last_used || "never"], ["hits", d.hits],
      ["path", d.model_path], ["files", d.file_count],
    ];
    if (d.gguf_files.length) facts.push(["GGUF", d.gguf_files.join(", ")]);
    $("#details-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("#details-files tbody").replaceChildren(...d.files.map((f) =>
      el("tr", {}, el("td", { class: "name" }, f.path), el("td", { class: "num" }, f.size === null ? "?" : size(f.size)))));
    $("#details").hidden = false;
  }

  // -- the cache's stats over time (GET /api/web/history: the server samples them) -----------

  const SVG = "http://www.w3.org/2000/svg";
  let historyTimer = null;

  function svg(tag, attrs) { // presentation attributes only (no style attribute: the page's CSP)
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  function sparkline(name, label, points, top, format) { // points: [time, value or null]; one small inline SVG
    const W = 240, H = 48, P = 3;
    const times = points.map((p) => p[0]);
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const known = points.filter((p) => p[1] !== null);
    const high = Math.max(top || 0, ...known.map((p) => p[1])) || 1;
    const x = (t) => P + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - 2 * P) : (W - 2 * P) / 2);
    const y = (v) => H - P - (v / high) * (H - 2 * P);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", class: "spark" });
    chart.dataset.points = String(known.length);
    if (top) chart.append(svg("line", { x1: P, x2: W - P, y1: y(top), y2: y(top), stroke: "currentColor", "stroke-dasharray": "3 3", opacity: 0.4 }));
    let run = [];
    const flush = () => {
      if (run.length > 1) chart.append(svg("polyline", { points: run.join(" "), fill: "none", stroke: "currentColor", "stroke-width": 1.5 }));
      else if (run.length === 1) { const [cx, cy] = run[0].split(","); chart.append(svg("circle", { cx, cy, r: 2, fill: "currentColor" })); }
      run = [];
    };
    for (const [t, v] of points) { if (v === null) flush(); else run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`); }
    flush();
    const last = known.length ? known[known.length - 1][1] : null;
    chart.append(svg("title", {})); chart.lastChild.textContent = `${label}: ${last === null ? "-" : format(last)}`;
    return el("figure", { class: "history-chart", "data-chart": name }, chart,
      el("figcaption", {}, label, " ", el("b", { class: "latest" }, last === null ? "-" : format(last))));
  }

  async function loadHistory() {
    const h = await api("GET", "/api/web/history");
    const samples = h.samples;
    const charts = $("#history-charts");
    if (!samples.length) {
      charts.replaceChildren(el("p", {}, h.interval > 0 ? "No samples yet." : "The server keeps no history (server.stats_interval = 0)."));
      $("#history-span").textContent = "";
    } else {
      const max = samples[samples.length - 1].max_size;
      const per = (field) => samples.map((s, i) => [s.time, i ? Math.max(0, s[field] - samples[i - 1][field]) : null]);
      const percent = (v) => `${Math.round(v * 100)} %`;
      charts.replaceChildren(
        sparkline("size", "size", samples.map((s) => [s.time, s.size]), max, size),
        sparkline("hit_rate", "hit rate", samples.map((s) => [s.time, s.hit_rate]), 1, percent),
        sparkline("lookups", "lookups", samples.map((s) => [s.time, s.lookups]), 0, String),
        sparkline("evictions", "evictions", per("evictions"), 0, String));
      const span = samples[samples.length - 1].time - samples[0].time;
      $("#history-span").textContent = `(${samples.length} samples, every ${duration(h.interval)}, over ${duration(span)}; ` +
        "each point: since the one before)";
    }
    $("#history").dataset.samples = String(samples.length);
    if (historyTimer === null && h.interval > 0) {
      historyTimer = setInterval(() => { if (!document.hidden) guarded(loadHistory); }, Math.max(1000, h.interval * 1000));
    }
  }

  // -- collection search (POST /api/web/search: the server embeds the text with the collection's model)

  async function loadCollections() {
    const { collections } = await api("GET", "/api/web/collections");
    const select = $("#search-collection");
    const current = select.value;
    select.replaceChildren(...collections.map((c) =>
      el("option", { value: c.name }, `${c.name} (${c.count} items, ${c.model || "no model"})`)));
    if (current && collections.some((c) => c.name === current)) select.value = current;
    $("#search-empty").hidden = collections.length > 0;
    $("#search-send").disabled = collections.length === 0;
  }

  async function search(event) {
    event.preventDefault();
    const body = { collection: $("#search-collection").value, text: $("#search-text").value, n: Number($("#search-n").value) || 5 };
    const started = performance.now();
    const found = await api("POST", "/api/web/search", body, true);
    const ms = Math.round(performance.now() - started);
    $("#search-info").textContent = `${found.hits.length} hits in ${found.collection} (${found.model}), ${ms} ms`;
    $("#search-hits").replaceChildren(...found.hits.map((hit) =>
      el("li", { "data-id": hit.id },
        el("b", { class: "score" }, hit.score.toFixed(3)), " ", el("code", { class: "hit-id" }, hit.id), " ",
        el("span", { class: "content" }, hit.content ?? ""))));
    $("#search-hits").dataset.done = String(Date.now());
  }

  // -- the server's loaded models ----------------------------------------------------------

  let loadedModels = [];

  async function loadLoaded() {
    const { models } = await api("GET", "/api/ps");
    loadedModels = models;
    $("#loaded-empty").hidden = models.length > 0;
    $("#loaded tbody").replaceChildren(...models.map((m) =>
      el("tr", { "data-model": m.model },
        el("td", { class: "name" }, m.model), el("td", {}, m.provider), el("td", {}, m.kind),
        el("td", {}, new Date(m.since).toLocaleTimeString()), el("td", {}, duration(m.keep_alive)),
        el("td", {}, m.busy ? "busy" : (m.until ? new Date(m.until).toLocaleTimeString() : "forever")),
        el("td", {}, m.busy ? `busy, ${m.queued} queued` : "idle"),
        el("td", { class: "num prompt-cache" }, m.prompt_cache_bytes == null ? "\u2014" : size(m.prompt_cache_bytes)),
        el("td", {}, el("button", { class: "unload", onclick: () => guarded(() => unload(m.model)) }, "Unload")))));
  }

  async function unload(model) {
    await api("POST", "/api/web/unload", { model }, true);
    say(`unloaded ${model}`, true);
    await loadLoaded();
  }

  // -- the playground ----------------------------------------------------------------------

  function drawModels(loaded) { // what /v1/models lists: server.models, else the cached models a provider claims
    const names = new Map();
    if (view && view.allowed.length) for (const name of view.allowed) names.set(name, "");
    else if (view) for (const e of view.entries) if (e.provider) names.set(e.name, e.provider);
    for (const m of loaded || []) if (!names.has(m.model)) names.set(m.model, m.provider);
    const select = $("#chat-model");
    const current = select.value;
    select.replaceChildren(...[...names].sort().map(([name, provider]) =>
      el("option", { value: name }, provider ? `${name} (${provider})` : name)));
    if (current && names.has(current)) select.value = current;
  }

  async function chat(event) {
    event.preventDefault();
    const text = $("#chat-input").value;
    if (!text.trim()) return;
    const model = $("#chat-model").value;
    history.push({ role: "user", content: text });
    $("#chat-log").append(el("div", { class: "msg user" }, text));
    const out = el("div", { class: "msg assistant" });
    $("#chat-log").append(out);
    $("#chat-input").value = "";
    chatAbort = new AbortController();
    $("#chat-send").disabled = true;
    $("#chat-stop").disabled = false;
    const started = performance.now();
    let first = null;
    let usage = null;
    let chunks = 0;
    try {
      const body = { model, messages: history, stream: true, stream_options: { include_usage: true }, max_tokens: Number($("#chat-max").value) || 256 };
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body),
        signal: chatAbort.signal, cache: "no-store", credentials: "omit",
      });
      if (response.status === 401) $("#key-form").hidden = false;
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error(data.error ? data.error.message : `chat: ${response.status}`);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const payload = line.slice(5).trim();
            if (payload === "[DONE]") continue;
            const data = JSON.parse(payload);
            if (data.error) throw new Error(data.error.message);
            if (data.usage) usage = data.usage;
            const delta = data.choices && data.choices[0] && data.choices[0].delta;
            if (delta && delta.content) {
              if (first === null) first = performance.now();
              chunks++;
              out.textContent += delta.content;
            }
          }
        }
        showStats(started, first, usage, chunks);
      }
      history.push({ role: "assistant", content: out.textContent });
      showStats(started, first, usage, chunks, true);
    } catch (err) {
      history.pop();
      if (err.name !== "AbortError") say(err.message);
      out.classList.add("failed");
    } finally {
      chatAbort = null;
      $("#chat-send").disabled = false;
      $("#chat-stop").disabled = true;
      guarded(loadLoaded);
    }
  }

  function showStats(started, first, usage, chunks, done) {
    const now = performance.now();
    const tokens = usage ? usage.completion_tokens : chunks;
    const span = first === null ? 0 : (now - first) / 1000;
    const rate = span > 0 ? (tokens / span).toFixed(1) : "-";
    const ttft = first === null ? "-" : `${Math.round(first - started)} ms`;
    const stats = $("#chat-stats");
    stats.textContent = `${tokens} tokens, ${rate} tokens/s, first token after ${ttft}${done ? "" : " …"}`;
    stats.dataset.tokens = String(tokens);
    stats.dataset.chunks = String(chunks);
    if (done) stats.dataset.done = "1"; else delete stats.dataset.done;
  }

  // -- start -------------------------------------------------------------------------------

  async function refresh() {
    say("");
    // the small answers after the big one: asked together, they wait for its CPU time on the server
    // and it for theirs (benchmarks/web.py: the slowest request of a first load)
    // and once the browser has laid the table out (a frame later), which would otherwise hold their answers up
    const results = await Promise.allSettled([loadCache(), loadLoaded()]);
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    results.push(...await Promise.allSettled([loadHistory(), loadCollections()]));
    drawModels(loadedModels);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) say(failed.reason.message);
    if (!document.body.dataset.loaded) performance.mark("provender-loaded"); // the first load, complete (benchmarks/web.py)
    document.body.dataset.loaded = "1";
  }

  async function start() {
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      apiKey = $("#api-key").value;
      $("#api-key").value = "";
      sessionStorage.setItem(KEY_STORE, apiKey);
      $("#key-form").hidden = true;
      refresh();
    });
    $("#refresh").addEventListener("click", refresh);
    $("#models tbody").addEventListener("click", onModelsClick);
    $("#prune").addEventListener("click", () => guarded(showPlan));
    $("#details-close").addEventListener("click", () => { $("#details").hidden = true; });
    $("#chat-form").addEventListener("submit", chat);
    $("#search-form").addEventListener("submit", (event) => guarded(() => search(event)));
    $("#chat-stop").addEventListener("click", () => chatAbort && chatAbort.abort());
    $("#chat-clear").addEventListener("click", () => { history.length = 0; $("#chat-log").replaceChildren(); $("#chat-stats").textContent = ""; });
    fetch("/health").then((r) => r.json()).then((h) => { $("#server").textContent = `${location.host} · ${h.version}`; }).catch(() => {});
    await refresh();
    setInterval(() => { if (!document.hidden) guarded(loadLoaded); }, 5000);
  }

  start();
})();
