// clinibox live page (templates/live.html): the newest frame with its boxes, freeze, step, measure.
// The pure functions at the top (no DOM) are tested in Node by tests/unit/test_live_js.py.
"use strict";

(function (root) {
  const Measure = root.CliniboxMeasure ||
    (typeof require !== "undefined" ? require("./measure.js") : null);

  /** A box [x0, y0, x1, y1] in frame pixels as {x, y, w, h} on a canvas scale times larger. */
  function scaleBox(box, scale) {
    return { x: box[0] * scale, y: box[1] * scale,
             w: (box[2] - box[0]) * scale, h: (box[3] - box[1]) * scale };
  }

  /** The canvas's backing size for a frame shown displayWidth CSS pixels wide. */
  function backingSize(frameWidth, frameHeight, displayWidth, pixelRatio) {
    const width = Math.max(1, Math.round(Math.min(frameWidth, displayWidth * (pixelRatio || 1))));
    return { width, height: Math.max(1, Math.round(frameHeight * width / frameWidth)),
             scale: width / frameWidth };
  }

  /** A lesion's size as its label shows it, written as the study page and the report write
   *  it (firmware_app/words/wording.axes_mm): "12.4 × 8.1 mm", one decimal, the locale's digits; "" without. */
  function sizeLabel(longAxisMm, shortAxisMm, locale) {
    const ok = (v) => v !== null && v !== undefined && Number(v) >= 0;
    if (!ok(longAxisMm)) return "";
    const format = new Intl.NumberFormat(locale || "en",
                                         { minimumFractionDigits: 1, maximumFractionDigits: 1 });
    const short = ok(shortAxisMm) ? " × " + format.format(Number(shortAxisMm)) : "";
    return format.format(Number(longAxisMm)) + short + " mm";
  }

  /** The boxes to draw for a frame: none when its hint says no finding may be shown. */
  function boxesToDraw(entry) {
    if (!entry || entry.hint === "outside_validated_range" || entry.hint === "not_assessable") {
      return [];
    }
    return (entry.lesions || []).filter((lesion) => Array.isArray(lesion.box) &&
                                        lesion.box.length === 4);
  }

  /** The frames held for stepping back: those within ringSeconds of the newest (by arrival). */
  function pruneRing(entries, ringSeconds) {
    if (!entries.length) return [];
    const newest = entries[entries.length - 1].arrived;
    return entries.filter((entry) => newest - entry.arrived <= ringSeconds);
  }

  /** The seqs one may step through: both lists, sorted, each once. */
  function mergeSeqs(held, listed) {
    return Array.from(new Set([...(held || []), ...(listed || [])])).sort((a, b) => a - b);
  }

  /** The seq one step from current (direction -1 back, +1 forward); current at either end. */
  function stepSeq(seqs, current, direction) {
    const place = seqs.indexOf(current);
    if (place < 0) {
      const later = seqs.filter((seq) => direction < 0 ? seq < current : seq > current);
      if (!later.length) return current;
      return direction < 0 ? later[later.length - 1] : later[0];
    }
    const next = place + direction;
    return next >= 0 && next < seqs.length ? seqs[next] : current;
  }

  /** A client point on the displayed canvas (its bounding rect) in frame pixels. */
  function framePoint(clientX, clientY, rect, frameWidth, frameHeight) {
    return { x: (clientX - rect.left) / rect.width * frameWidth,
             y: (clientY - rect.top) / rect.height * frameHeight };
  }

  /** The length between two frame points: mm when the frame has a scale, else pixels. */
  function lineLength(p0, p1, mmPerPixel) {
    const spacing = mmPerPixel > 0 ? { rowMm: mmPerPixel, columnMm: mmPerPixel } : null;
    return Measure.measureLength(p0, p1, spacing);
  }

  /** "15 frames analysed a second" from its words with {fps} in them. */
  function fpsText(words, fps, locale) {
    if (fps === null || fps === undefined) return "";
    return words.replace("{fps}", new Intl.NumberFormat(locale || "en",
      { maximumFractionDigits: 0 }).format(Number(fps)));
  }

  /** "picture delay 40 ms" from its words with {ms} in them: the middle of the delays
   *  measured (arrival at the box to drawn here), to the nearest 10 ms; "" without any. */
  function delayText(words, delays, locale) {
    const known = (delays || []).filter((ms) => ms !== null && ms !== undefined &&
                                         Number.isFinite(Number(ms)) && Number(ms) >= 0)
      .map(Number).sort((a, b) => a - b);
    if (!known.length) return "";
    const middle = known[Math.floor(known.length / 2)];
    return words.replace("{ms}", new Intl.NumberFormat(locale || "en",
      { maximumFractionDigits: 0 }).format(Math.round(middle / 10) * 10));
  }

  /** The states in which the live process sends new pictures (the others: no live picture,
   *  a frame still on the page is the last one received). */
  const PICTURE_STATES = ["running", "no_contact", "no_signal", "frozen", "no_model"];

  /** Whether the source's state means the picture on the page is live. */
  function pictureLive(state) {
    return PICTURE_STATES.includes(state);
  }

  /** The hint to show while the source is in ``state``: a frame's hint only while the model
   *  reads the picture (else the state line says what is wrong, and an old hint would lie). */
  function hintShown(state, hint) {
    return state === "running" && hint ? hint : "none";
  }

  const api = { scaleBox, backingSize, sizeLabel, boxesToDraw, pruneRing, mergeSeqs, stepSeq,
                framePoint, lineLength, fpsText, delayText, pictureLive, hintShown };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  root.CliniboxLive = api;
})(typeof globalThis !== "undefined" ? globalThis : this);

// ---- the page (browser only) ----
(function () {
  if (typeof document === "undefined") return;
  const L = globalThis.CliniboxLive;
  const M = globalThis.CliniboxMeasure;

  /** how long "asked to keep" stays before the keeper's error on an earlier keep is shown */
  const KEEP_SECONDS = 4;

  function start() {
    const pane = document.getElementById("live");
    if (!pane) return;
    const canvas = document.getElementById("live-canvas");
    const stage = document.getElementById("live-stage");
    const context = canvas.getContext("2d");
    const data = pane.dataset;
    const locale = data.locale || "en";
    const ringSeconds = Number(data.ringSeconds) || 10;
    const words = {};
    for (const item of document.querySelectorAll("#live-words li")) {
      if (item.dataset.state) words["state:" + item.dataset.state] = item.textContent;
      if (item.dataset.hint) words["hint:" + item.dataset.hint] = item.textContent;
    }
    const held = [];          // {seq, arrived, blob, meta}: the frames received, within the ring
    let listed = [];          // the ring's seqs on the box (from /state)
    let newestSeq = -1;
    let shown = null;         // {seq, bitmap, meta} on the canvas
    let frozen = false;
    let measuring = false;
    let points = [];
    let stepping = false;
    let state = pane.dataset.state || "starting";  // the source's state (kept while frozen)
    let hintWord = "none";    // the shown frame's hint (shown only while running)
    let askedAt = 0;          // when this page last asked to keep something (ms)
    const delays = [];        // {at, ms}: each frame's delay, arrival at the box to drawn

    const el = (id) => document.getElementById(id);
    const freezeButton = el("live-freeze");
    const backButton = el("live-back");
    const forwardButton = el("live-forward");
    const measureButton = el("live-measure");
    const clearButton = el("live-clear");

    function setState(word) {
      const line = el("live-state");
      const text = words["state:" + word];
      if (!text) return;
      const changed = word !== state;
      state = word;
      line.textContent = text;
      line.className = "live-state " + word;
      const live = L.pictureLive(word);
      pane.classList.toggle("stale", !live);  // the picture shown is not live
      const stale = el("live-stale");
      stale.textContent = shown ? stale.dataset.stale : text;
      stale.hidden = live;
      if (word !== "running") fpsLine(null);
      freezeButton.disabled = !shown && !frozen;
      setHint(hintWord);
      if (changed && shown) draw();  // boxes only on a live picture
    }

    function setHint(word) {
      hintWord = word || "none";
      const shownWord = L.hintShown(state, hintWord);
      const line = el("live-hint");
      line.textContent = words["hint:" + shownWord] || "";
      line.className = "live-hint " + shownWord;
    }

    function draw() {
      if (!shown) return;
      const meta = shown.meta;
      const frameWidth = meta.width || shown.bitmap.width;
      const frameHeight = meta.height || shown.bitmap.height;
      const size = L.backingSize(frameWidth, frameHeight, stage.clientWidth || frameWidth,
                                 window.devicePixelRatio || 1);
      if (canvas.width !== size.width) canvas.width = size.width;
      if (canvas.height !== size.height) canvas.height = size.height;
      context.drawImage(shown.bitmap, 0, 0, size.width, size.height);
      const unit = size.width / (canvas.clientWidth || size.width);  // backing px per CSS px
      context.lineWidth = 2.5 * unit;
      context.font = "bold " + Math.round(16 * unit) + "px sans-serif";
      context.textBaseline = "bottom";
      for (const lesion of L.pictureLive(state) ? L.boxesToDraw(meta) : []) {
        const box = L.scaleBox(lesion.box, size.scale);
        context.strokeStyle = "#ff4040";
        context.strokeRect(box.x, box.y, box.w, box.h);
        const label = meta.mm_per_pixel ? L.sizeLabel(lesion.long_axis_mm, lesion.short_axis_mm, locale) : "";
        if (label) {
          const top = box.y > 20 * unit ? box.y - 3 * unit : box.y + box.h + 20 * unit;
          context.lineWidth = 4 * unit;
          context.strokeStyle = "#000";
          context.strokeText(label, box.x, top);
          context.fillStyle = "#ff4040";
          context.fillText(label, box.x, top);
          context.lineWidth = 2.5 * unit;
        }
      }
      drawMeasure(size, unit);
      pane.dataset.shownSeq = String(shown.seq);
      for (const field of document.querySelectorAll(".live-seq")) field.value = String(shown.seq);
      setHint(meta.hint);
      const uncalibrated = el("live-uncalibrated");
      if (uncalibrated && meta.mm_per_pixel) uncalibrated.hidden = true;
    }

    function drawMeasure(size, unit) {
      if (!points.length) return;
      context.strokeStyle = "#00e5ff";
      context.fillStyle = "#00e5ff";
      const at = points.map((p) => ({ x: p.x * size.scale, y: p.y * size.scale }));
      for (const p of at) {
        context.beginPath();
        context.arc(p.x, p.y, 5 * unit, 0, 2 * Math.PI);
        context.fill();
      }
      if (at.length === 2) {
        context.lineWidth = 2.5 * unit;
        context.beginPath();
        context.moveTo(at[0].x, at[0].y);
        context.lineTo(at[1].x, at[1].y);
        context.stroke();
        const text = measureText();
        context.lineWidth = 4 * unit;
        context.strokeStyle = "#000";
        const x = Math.min(at[1].x + 10 * unit, size.width - context.measureText(text).width - 4);
        const y = Math.max(at[1].y + 24 * unit, 20 * unit);
        context.strokeText(text, x, Math.min(y, size.height - 4));
        context.fillText(text, x, Math.min(y, size.height - 4));
      }
    }

    function measureText() {
      const length = L.lineLength(points[0], points[1], shown.meta.mm_per_pixel || 0);
      return M.formatLength(length, { mm: data.unitMm, px: data.unitPx });
    }

    async function show(entry) {
      const bitmap = await createImageBitmap(entry.blob);
      if (shown && shown.bitmap && shown.bitmap.close) shown.bitmap.close();
      shown = { seq: entry.seq, bitmap, meta: entry.meta };
      freezeButton.disabled = false;
      el("live-stale").textContent = el("live-stale").dataset.stale;
      draw();
    }

    function keep(entry) {
      held.push(entry);
      const kept = L.pruneRing(held, ringSeconds);
      held.splice(0, held.length - kept.length);
    }

    function meta(response) {
      try { return JSON.parse(response.headers.get("X-Live-Frame") || "{}"); } catch (e) { return {}; }
    }

    async function fetchFrame(url) {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      const answered = performance.now();  // the box said how late the frame was then
      if (response.redirected || response.status === 401) { window.location.reload(); return null; }
      if (response.status !== 200) return response.status;
      const info = meta(response);
      return { seq: info.seq, arrived: Number(info.arrived) || 0, blob: await response.blob(),
               meta: info, answered };
    }

    /** The frame just drawn: its delay (the box's, as served, and this page's since). */
    function drawnLate(got) {
      const served = got.meta.delay_ms;
      if (served === null || served === undefined) return;
      const now = performance.now();
      delays.push({ at: now, ms: Number(served) + (now - got.answered) });
      while (delays.length && now - delays[0].at > 2000) delays.shift();
    }

    async function loop() {
      for (;;) {
        if (frozen) { await new Promise((r) => window.setTimeout(r, 150)); continue; }
        let got = null;
        try {
          got = await fetchFrame(data.nextUrl + "?after=" + encodeURIComponent(newestSeq));
        } catch (error) { got = 0; }
        if (got && typeof got === "object") {
          if (got.seq < newestSeq) held.length = 0;  // the box numbers afresh (a reboot)
          newestSeq = got.seq;
          pane.dataset.seq = String(got.seq);
          keep(got);
          if (!frozen) {
            // a frame the browser cannot draw is skipped: the loop (the live picture) goes on
            try { await show(got); drawnLate(got); } catch (error) { /* the next frame */ }
            setState(got.meta.state);
            fpsLine(got.meta.state === "running" ? got.meta.fps : null);
          }
        } else if (got !== 204) {
          await new Promise((r) => window.setTimeout(r, 1000));  // the box may be restarting
        }
      }
    }

    let delayShownAt = 0;
    let delayWords = "";

    function fpsLine(fps) {
      const text = L.fpsText(data.fpsWords, fps, locale);
      const now = performance.now();
      if (!text) {
        delays.length = 0;
        delayWords = "";
      } else if (now - delayShownAt > 500) {  // steady enough to read: twice a second
        delayShownAt = now;
        delayWords = L.delayText(data.delayWords, delays.map((d) => d.ms), locale);
      }
      const shown = text ? "· " + text + (delayWords ? " · " + delayWords : "") : "";
      if (el("live-rate").textContent !== shown) el("live-rate").textContent = shown;
    }

    function setFrozen(value) {
      frozen = value;
      freezeButton.textContent = value ? data.resume : data.freeze;
      freezeButton.setAttribute("aria-pressed", String(value));
      for (const button of [backButton, forwardButton, measureButton, clearButton]) {
        button.disabled = !value;
      }
      el("live-frozen").hidden = !value;
      pane.classList.toggle("frozen", value);
      if (!value) {
        measuring = false;
        measureButton.setAttribute("aria-pressed", "false");
        el("live-measure-hint").hidden = true;
        el("live-measure-result").textContent = "";
        points = [];
      } else {
        pollState();
      }
    }

    async function step(direction) {
      if (!shown || stepping) return;
      stepping = true;
      try {
        let seqs = L.mergeSeqs(held.map((e) => e.seq), listed);
        let target = L.stepSeq(seqs, shown.seq, direction);
        while (target !== shown.seq) {
          let entry = held.find((e) => e.seq === target);
          if (!entry) {
            const got = await fetchFrame(data.frameUrl + target);
            if (got && typeof got === "object") entry = got;
          }
          if (entry) {
            points = [];
            el("live-measure-result").textContent = "";
            await show(entry);
            break;
          }
          listed = listed.filter((seq) => seq !== target);  // gone from the box's ring
          seqs = L.mergeSeqs(held.map((e) => e.seq), listed);
          target = L.stepSeq(seqs, shown.seq, direction);
        }
      } finally { stepping = false; }
    }

    function tap(event) {
      if (!frozen || !measuring || !shown) return;
      event.preventDefault();
      const rect = canvas.getBoundingClientRect();
      const meta = shown.meta;
      const point = L.framePoint(event.clientX, event.clientY, rect,
                                 meta.width || shown.bitmap.width, meta.height || shown.bitmap.height);
      if (points.length >= 2) points = [];
      points.push(point);
      el("live-measure-result").textContent = points.length === 2 ? measureText() : "";
      draw();
    }

    async function pollState() {
      try {
        const response = await fetch(data.stateUrl, { credentials: "same-origin", cache: "no-store" });
        if (response.redirected || response.status === 401) { window.location.reload(); return; }
        if (!response.ok) return;
        const answer = await response.json();
        listed = answer.seqs || [];
        if (!frozen || !shown) setState(answer.state);
        if (!shown) setHint(answer.hint);
        const session = answer.session ? String(answer.session.id) : "";
        if (session !== (data.session || "")) {
          if (!frozen) window.location.reload();  // a session started or ended elsewhere
          return;
        }
        if (answer.session) showKept(answer.session);
        else if (answer.last) showLast(answer.last);
      } catch (error) { /* the box may be restarting; next second */ }
    }

    /** The session just ended: its study page once the box has analysed what it kept. */
    function showLast(last) {
      const link = el("live-last-link");
      if (!link || !last.study_url) return;
      link.href = last.study_url;
      link.hidden = false;
      el("live-last-waiting").hidden = true;
    }

    function showKept(session) {
      const list = el("live-kept");
      if (!list) return;
      const lines = session.kept || [];
      list.replaceChildren(...(lines.length ? lines : [list.dataset.empty]).map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        if (!lines.length) item.className = "hint";
        return item;
      }));
      el("live-study").hidden = !lines.length;
      el("live-study-link").hidden = !session.study_url;
      if (session.study_url) el("live-study-link").href = session.study_url;
      el("live-study-waiting").hidden = Boolean(session.study_url);
      const said = el("live-keep-said");
      if (!said || Date.now() - askedAt < KEEP_SECONDS * 1000) return;  // the box is at it
      if (session.error) {  // the last keep failed (said until one succeeds)
        said.textContent = session.error;
        said.classList.add("error");
      } else if (said.classList.contains("error")) {
        said.textContent = "";
        said.classList.remove("error");
      }
    }

    for (const form of document.querySelectorAll(".live-keep-form")) {
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const said = el("live-keep-said");
        askedAt = Date.now();
        try {
          const body = new FormData(form);
          // the session this page shows: the box refuses a keep meant for an ended one
          if (!body.has("session")) body.append("session", data.session || "");
          const response = await fetch(form.action, { method: "POST", body,
            credentials: "same-origin", headers: { Accept: "application/json" } });
          if (response.redirected || response.status === 401) { window.location.reload(); return; }
          const answer = await response.json();
          said.textContent = answer.message || "";
          said.classList.toggle("error", !answer.ok);
          pollState();
        } catch (error) { form.submit(); }
      });
    }

    freezeButton.addEventListener("click", () => setFrozen(!frozen));
    backButton.addEventListener("click", () => step(-1));
    forwardButton.addEventListener("click", () => step(1));
    measureButton.addEventListener("click", () => {
      measuring = !measuring;
      measureButton.setAttribute("aria-pressed", String(measuring));
      el("live-measure-hint").hidden = !measuring;
      canvas.classList.toggle("measuring", measuring);
    });
    clearButton.addEventListener("click", () => {
      points = [];
      el("live-measure-result").textContent = "";
      draw();
    });
    canvas.addEventListener("pointerdown", tap);
    window.addEventListener("resize", draw);
    window.setInterval(() => { if (!document.hidden) pollState(); }, 1000);
    setState(state);
    pollState();
    loop();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
