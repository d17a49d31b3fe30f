/* Basin dashboard, browser side: live points for the run page, streaming uploads.
 *
 * Live points: the run page's dcc.Interval calls basin.poll every ~500 ms; it fetches only
 * the points after the last cursor (their views: no per-example columns; one API call a
 * tick, which also brings the ETA and the workers), keeps them in the run-points dcc.Store
 * (browser-side only: no server callback takes it as an input or state, so it is never
 * uploaded back) and PATCHES the figures' data arrays (dash_clientside.Patch) instead of
 * rebuilding them. The Python side
 * rebuilds a figure (anchors, chord, barrier) only when the status or the refinement level
 * changes (an adaptive plane, whose figure interpolates between measured nodes: whenever
 * points arrive). window.basinArrivals[index] = Date.now() records when each point arrived.
 *
 * Uploads: a plain <input type=file> and XMLHttpRequest PUT of the File object (streamed by
 * the browser, never read into memory, never through Dash callbacks), with upload progress.
 */
(function () {
  "use strict";
  // The ended statuses, from basin.status (the page root's data-terminal): defined once.
  function terminal() {
    const root = document.getElementById("basin-root");
    const v = root && root.getAttribute("data-terminal");
    return v ? v.split(",") : [];
  }
  window.basinArrivals = window.basinArrivals || {};

  function token() {
    const el = document.getElementById("settings-token-input");
    return el && el.value ? el.value : null;
  }
  function apiBase() {
    const root = document.getElementById("basin-root");
    return (root && root.getAttribute("data-api-base")) || "";
  }
  function errorText(status, body) {
    if (body && typeof body === "object") {
      let t = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
      if (Array.isArray(body.mismatches) && body.mismatches.length) {
        t += " — mismatched tensors: " + body.mismatches.slice(0, 8)
          .map((m) => m.tensor + ": " + m.reason).join("; ");
      }
      return t;
    }
    return "HTTP " + status + (body ? ": " + String(body).slice(0, 300) : "");
  }

  // Regular grid axis from the coordinates seen so far (same rule as basin.figures._axis).
  function axis(known, n, fallback) {
    const keys = Object.keys(known).map(Number).sort((a, b) => a - b);
    if (keys.length >= 2) {
      const i0 = keys[0], i1 = keys[keys.length - 1];
      const step = (known[i1] - known[i0]) / (i1 - i0);
      return Array.from({length: n}, (_, i) => (i in known ? known[i] : known[i0] + (i - i0) * step));
    }
    if (fallback) {
      return Array.from({length: n}, (_, i) => (n > 1 ? fallback[0] + (fallback[1] - fallback[0]) * i / (n - 1) : fallback[0]));
    }
    return null;
  }

  function drawnCount(fig, is1d) {
    const t = fig && fig.data && fig.data[0];
    if (!t) return -1;
    if (is1d) return (t.x || []).length;
    let c = 0;
    for (const row of t.z || []) for (const v of row || []) if (v !== null && v !== undefined) c++;
    return c;
  }

  // The patch for one figure. 1D: reassign the curve's x/y (it must stay sorted by α, so an
  // arrival in the middle moves every later element). Planes: when the figure already holds
  // every earlier point, only the NEW cells are assigned (z[iy][ix]); else (first draw, or a
  // rebuild raced with this poll) the whole z is rebuilt from the points held.
  const axesSent = {};  // run|metric → "columns x rows" whose coordinates the figure has
  // One 1D series [α, value, index] sorted by α, from each point's `key` dict ("metrics", or
  // "ensemble": the output ensemble's values, same rule as basin.figures._series).
  function series1d(points, metric, key, scale) {
    return points.filter((p) => p[key] && p[key][metric] !== null && p[key][metric] !== undefined)
      .map((p) => [p.coords.alpha, p[key][metric] * scale, p.index])
      .sort((a, b) => a[0] - b[0] || a[2] - b[2]);
  }

  function patchFor(meta, points, metric, fresh, incremental, fig) {
    const scale = (meta.scales && meta.scales[metric]) || 1;
    const P = new window.dash_clientside.Patch();
    if (meta.is1d) {
      const s = series1d(points, metric, "metrics", scale);
      P.assign(["data", 0, "x"], s.map((t) => t[0]));
      P.assign(["data", 0, "y"], s.map((t) => t[1]));
      P.assign(["data", 0, "customdata"], s.map((t) => t[2]));
      // the output-ensemble trace (drawn from the first render when the run has one)
      const k = fig && fig.data ? fig.data.findIndex((t) => t.meta === "ensemble") : -1;
      if (k >= 0) {
        const e = series1d(points, metric, "ensemble", scale);
        P.assign(["data", k, "x"], e.map((t) => t[0]));
        P.assign(["data", k, "y"], e.map((t) => t[1]));
        P.assign(["data", k, "customdata"], e.map((t) => t[2]));
      }
      // the 95 % band (basin.figures._band_trace): one closed polygon, α forward along the
      // upper limits then back along the lower ones, from each point's intervals[metric]
      const b = fig && fig.data ? fig.data.findIndex((t) => t.meta === "band") : -1;
      if (b >= 0) {
        const iv = points.filter((p) => p.intervals && Array.isArray(p.intervals[metric])
                                       && p.intervals[metric].length === 2
                                       && typeof p.intervals[metric][0] === "number"
                                       && typeof p.intervals[metric][1] === "number")
          .map((p) => [p.coords.alpha, p.intervals[metric][0] * scale, p.intervals[metric][1] * scale])
          .sort((x, y) => x[0] - y[0] || x[1] - y[1] || x[2] - y[2]);
        const back = iv.slice().reverse();
        P.assign(["data", b, "x"], iv.map((t) => t[0]).concat(back.map((t) => t[0])));
        P.assign(["data", b, "y"], iv.map((t) => t[2]).concat(back.map((t) => t[1])));
      }
      return P.build();
    }
    const nx = meta.nx, ny = meta.ny;
    const kx = {}, ky = {};
    for (const p of points) {
      const ix = p.index % nx, iy = Math.floor(p.index / nx);
      if (p.coords) { if (!(ix in kx)) kx[ix] = p.coords.x; if (!(iy in ky)) ky[iy] = p.coords.y; }
    }
    if (incremental) {
      for (const p of fresh) {
        const v = p.metrics ? p.metrics[metric] : null;
        const ix = p.index % nx, iy = Math.floor(p.index / nx);
        if (iy < ny && v !== null && v !== undefined) P.assign(["data", 0, "z", iy, ix], v * scale);
      }
    } else {
      const z = Array.from({length: ny}, () => Array(nx).fill(null));
      for (const p of points) {
        const v = p.metrics ? p.metrics[metric] : null;
        const ix = p.index % nx, iy = Math.floor(p.index / nx);
        if (iy < ny && v !== null && v !== undefined) z[iy][ix] = v * scale;
      }
      P.assign(["data", 0, "z"], z);
    }
    // The axes only change while new columns / rows are still being discovered.
    const nkx = Object.keys(kx).length, nky = Object.keys(ky).length;
    const axesKey = nkx + "x" + nky, slot = meta.id + "|" + metric;
    if (!incremental || axesSent[slot] !== axesKey) {
      axesSent[slot] = axesKey;
      const xs = axis(kx, nx, meta.xrange), ys = axis(ky, ny, meta.yrange);
      if (xs && nkx >= 2) P.assign(["data", 0, "x"], xs);
      if (ys && nky >= 2) P.assign(["data", 0, "y"], ys);
    }
    return P.build();
  }

  // ---- update timing: poll → every patched figure redrawn (plotly_afterplot) -------------
  // window.basinUpdates: [{points, added, compute_ms, total_ms}] — what the browser test reads
  // to check that a big grid stays smooth; cheap enough to keep on in production.
  window.basinUpdates = window.basinUpdates || [];
  let pending = null;
  function onAfterPlot() {
    if (!pending) return;
    pending.left -= 1;
    if (pending.left <= 0) {
      const now = performance.now();
      window.basinUpdates.push({points: pending.points, added: pending.added,
                                compute_ms: pending.compute_ms, total_ms: now - pending.t0});
      if (window.basinUpdates.length > 5000) window.basinUpdates.splice(0, 1000);
      pending = null;
    }
  }
  function hookGraphs() {
    for (const gd of document.querySelectorAll(".run-graph .js-plotly-plot")) {
      if (gd.on && !gd.__basinHooked) {
        gd.on("plotly_afterplot", onAfterPlot);
        gd.__basinHooked = true;
      }
    }
  }

  async function poll(n, store, meta, figs) {
    const dc = window.dash_clientside;
    const nu = dc.no_update;
    // outputs: store, figures (ALL), count, progress value, progress label, status text, rebuild key,
    //          interval disabled, eta/workers text, progress animated, progress striped
    const none = [nu, figs.map(() => nu), nu, nu, nu, nu, nu, nu, nu, nu, nu];
    if (!meta || !store) return none;
    const base = apiBase() + "/api/runs/" + encodeURIComponent(meta.id);
    let body;
    try {
      const r = await fetch(base + "/points" + (store.cursor ? "?after=" + encodeURIComponent(store.cursor) : ""));
      body = await r.json().catch(() => null);
      if (!r.ok) {
        const out = none.slice();
        out[5] = "API error: " + errorText(r.status, body);
        return out;
      }
    } catch (e) {
      const out = none.slice();
      out[5] = "connection lost, retrying… (" + e + ")";
      return out;
    }
    const t0 = performance.now();
    const now = Date.now();
    const byIndex = new Map(store.points.map((p) => [p.index, p]));
    const fresh = [];
    for (const p of body.points || []) {
      if (!byIndex.has(p.index)) {
        byIndex.set(p.index, p);
        fresh.push(p);
        if (!(p.index in window.basinArrivals)) window.basinArrivals[p.index] = now;
      }
    }
    const added = fresh.length;
    const points = Array.from(byIndex.values());
    const status = body.status || store.status;
    const total = body.total || meta.total || 0;
    const newStore = added || status !== store.status || body.cursor !== store.cursor
      ? {points: points, cursor: body.cursor || store.cursor, status: status} : nu;
    let patched = 0;
    const figOut = figs.map((f, i) => {
      // an adaptive plane's figure interpolates between measured nodes: the Python rebuild
      // (keyed on the point count below) draws it, not a patch of z
      if (meta.adaptive && !meta.is1d) return nu;
      const metric = meta.metrics[i];
      const drawn = drawnCount(f, meta.is1d);
      if (!added && drawn === points.length) return nu;
      patched++;
      return patchFor(meta, points, metric, fresh, added > 0 && drawn === points.length - added, f);
    });
    if (patched) {
      hookGraphs();
      pending = {t0: t0, points: points.length, added: added, left: patched,
                 compute_ms: performance.now() - t0};
    }
    const holder = document.getElementById("run-graphs");
    if (holder) holder.setAttribute("data-points", String(points.length));
    // Rebuild (Python) when the status changes; for 1D paths also when the curve refines one
    // level (≈ doubles: chord and barrier move). A plane's rebuild only adds its anchors, so it
    // happens once points exist: redrawing two full heatmaps costs ~40-80 ms of main thread.
    const level = !points.length ? -1 : (meta.is1d ? Math.floor(Math.log2(points.length))
      : (meta.adaptive ? points.length : 0));
    const key = status + ":" + level;
    const finished = terminal().includes(status) && !added && !(body.points || []).length;
    // ETA, workers, warning and error come with the points: one API call a tick
    const parts = [];
    if (body.eta_s !== null && body.eta_s !== undefined && !terminal().includes(status)) {
      parts.push("ETA " + Math.max(0, Math.round(body.eta_s)) + " s");
    }
    if (Array.isArray(body.workers)) {
      parts.push(body.workers.length + " worker" + (body.workers.length === 1 ? "" : "s"));
    }
    if (body.warning) parts.push("⚠ " + body.warning);  // e.g. no worker is alive
    // the error once: the header shows it when the page opened on a failed run
    const said = document.getElementById("run-error-text");
    if (body.error && !(said && said.textContent.includes(body.error))) parts.push("error: " + body.error);
    const text = parts.join(" · ");
    const shown = document.getElementById("run-extra");  // unchanged: no update
    const extra = shown && shown.textContent === text ? nu : text;
    const done = Math.max(points.length, body.done || 0);
    const pct = status === "done" ? 100 : (total ? Math.round(100 * done / total) : 0);
    const moving = !terminal().includes(status);  // striped + animated only while it can still move
    return [newStore, figOut, points.length + (points.length === 1 ? " point" : " points"), pct, done + " / " + total,
            status, key, finished, extra, moving, moving];
  }

  async function cancel(nClicks, meta) {
    if (!nClicks || !meta) return window.dash_clientside.no_update;
    // Always the header: the API's CSRF guard refuses a body-less POST without it (any value
    // when the server has no token; the token itself when it has one).
    const headers = {"X-Basin-Token": token() || ""};
    try {
      const r = await fetch(apiBase() + "/api/runs/" + encodeURIComponent(meta.id) + "/cancel",
                            {method: "POST", headers: headers});
      const body = await r.json().catch(() => null);
      return r.ok ? "Cancel requested." : "Cancel failed: " + errorText(r.status, body);
    } catch (e) {
      return "Cancel failed: " + e;
    }
  }

  // ---- streaming uploads ------------------------------------------------------------------
  // Markup (see pages/checkpoints.py, pages/datasets.py): a container with
  //   data-upload-endpoint="/api/checkpoints", data-refresh="<store id>", holding
  //   input[type=file].basin-upload-file, input.basin-upload-name (optional),
  //   select.basin-upload-config (optional), button.basin-upload-button,
  //   .basin-upload-progress (a progress bar), .basin-upload-status
  function upload(box) {
    const fileInput = box.querySelector("input[type=file]");
    const statusEl = box.querySelector(".basin-upload-status");
    const bar = box.querySelector(".basin-upload-progress .progress-bar");
    const setStatus = (text, kind) => {
      statusEl.textContent = text;
      statusEl.className = "basin-upload-status small ms-2 text-" + kind;
      statusEl.setAttribute("data-state", kind);
    };
    const file = fileInput && fileInput.files && fileInput.files[0];
    if (!file) { setStatus("Choose a file first.", "danger"); return; }
    const nameEl = box.querySelector(".basin-upload-name");
    const name = (nameEl && nameEl.value.trim()) || file.name;
    const params = new URLSearchParams({name: name});
    const cfg = box.querySelector(".basin-upload-config");
    if (/\.safetensors$/i.test(file.name)) {
      if (!cfg || !cfg.value) { setStatus("A bare .safetensors file needs a config checkpoint: pick one.", "danger"); return; }
      params.set("config", cfg.value);
    }
    const base = box.querySelector(".basin-upload-base");
    if (base && base.value && !/\.safetensors$/i.test(file.name)) params.set("base", base.value);  // a PEFT adapter's base
    const ext = (file.name.match(/\.(tar\.gz|tgz|zip|safetensors|csv|tsv|jsonl)$/i) || [""])[0];
    if (box.getAttribute("data-keep-ext") === "1" && ext && !name.toLowerCase().endsWith(ext.toLowerCase())) {
      params.set("name", name + ext);
    }
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", apiBase() + box.getAttribute("data-upload-endpoint") + "?" + params.toString());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-Basin-Token", token() || "");  // see cancel()
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && bar) {
        const pct = Math.round(100 * e.loaded / e.total);
        bar.style.width = pct + "%";
        bar.textContent = pct + "%";
      }
    };
    const typed = nameEl && nameEl.value.trim();
    xhr.onload = async () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = xhr.responseText; }
      if (xhr.status >= 200 && xhr.status < 300) {
        if (bar) { bar.style.width = "100%"; bar.textContent = "100%"; }
        setStatus((xhr.status === 200 ? "Already stored: " : "Uploaded: ") + ((body && body.name) || name), "success");
        const wanted = params.get("name");
        if (xhr.status === 200 && typed && body && body.id && body.name !== wanted) {
          // the same files were stored before under another name: honour the name typed
          const old = body.name;
          try {
            const r = await fetch(apiBase() + box.getAttribute("data-upload-endpoint") + "/" + encodeURIComponent(body.id), {
              method: "PATCH", headers: {"Content-Type": "application/json", "X-Basin-Token": token() || ""},
              body: JSON.stringify({name: wanted})});
            const answer = await r.json().catch(() => null);
            if (r.ok) {
              body = answer || body;
              setStatus("Already stored (the same files, as " + old + "): renamed to " + wanted, "success");
            } else {
              setStatus("Already stored as " + old + " (the same files); not renamed to " + wanted + ": "
                        + errorText(r.status, answer), "warning");
            }
          } catch (e) {
            setStatus("Already stored as " + old + " (the same files); renaming failed: " + e, "warning");
          }
        }
        fileInput.value = "";
        const refresh = box.getAttribute("data-refresh");
        if (refresh && window.dash_clientside && window.dash_clientside.set_props) {
          window.dash_clientside.set_props(refresh, {data: Date.now()});
        }
        const select = box.getAttribute("data-select");
        if (select && body && body.id && window.dash_clientside && window.dash_clientside.set_props) {
          window.dash_clientside.set_props(select, {value: body.id});
        }
      } else {
        if (bar) { bar.style.width = "0%"; bar.textContent = ""; }
        setStatus("Upload failed: " + errorText(xhr.status, body), "danger");
      }
    };
    xhr.onerror = () => setStatus("Upload failed: the server could not be reached.", "danger");
    setStatus("Uploading " + file.name + " (" + (file.size / 1e6).toFixed(1) + " MB)…", "muted");
    if (bar) { bar.style.width = "0%"; bar.textContent = "0%"; }
    xhr.send(file);
  }

  // Dash renders no <input type=file>: fill each .basin-file-slot with a plain one.
  function fillSlots() {
    for (const slot of document.querySelectorAll(".basin-file-slot")) {
      if (slot.querySelector("input[type=file]")) continue;
      const input = document.createElement("input");
      input.type = "file";
      input.id = slot.getAttribute("data-input-id");
      input.accept = slot.getAttribute("data-accept") || "";
      input.className = "form-control basin-upload-file";
      slot.appendChild(input);
    }
  }
  new MutationObserver(fillSlots).observe(document.documentElement, {childList: true, subtree: true});

  document.addEventListener("click", (e) => {
    const btn = e.target.closest && e.target.closest(".basin-upload-button");
    if (!btn) return;
    e.preventDefault();
    const box = btn.closest("[data-upload-endpoint]");
    if (box) upload(box);
  });

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.basin = {poll: poll, cancel: cancel};
})();
