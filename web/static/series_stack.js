// clinibox study page: the stack of a CT or MR series (templates/series_stack.html).
//
// Without this file the stack is plain links (previous / next, the marked slices) and a
// form listing every slice. With it, the slice shown changes in place, without a page
// load: the image's source, the slice label, the slider, previous / next and the address
// (history.replaceState, so a reload or a shared link opens that slice); the two slices
// either side are fetched ahead. On a slice other than the page's own, the image layer
// shows that slice's lesion boxes (numbered as in the 3-D lesion table), the heatmap is
// hidden, the 3-D lesion table beside marks the lesions on the slice shown, and what the
// page says of its own image ("This image" onwards) is dimmed, with a link to the slice's
// page: those findings are the page's image's, not the slice's.
//
// The image is made no taller than the screen's height less the stack, so both show at once.
//
// Ways to move:
// * the slider (a 44 px thumb), previous / next, a marked slice in the strip;
// * the mouse wheel over the image, the slider or the strip, one slice a notch. Ctrl (or ⌘)
//   + wheel, and a touchpad's pinch (sent as Ctrl + wheel), still zoom (image_tools.js);
// * ↑ ↓ ← → one slice, PageUp / PageDown a tenth of the stack (Home / End on the slider:
//   the ends; elsewhere they stay the page's);
// * one finger (or the mouse) dragged up or left on the image: the next slices, down or
//   right: the previous ones, as it moves. Only while the image is at fit and the distance
//   tool is off: zoomed in, one finger pans (image_tools.js), and two fingers always pinch.
"use strict";

(function (root) {
  const NOTCH = 40;         // wheel pixels that make one slice (a mouse notch is 50-120)
  const SWIPE_START = 10;   // screen pixels a finger moves before the drag turns slices
  const THUMB = 44;         // the slider thumb's width in CSS pixels (viewer.css)
  const SETTLE_MS = 250;    // after the last move: the address, and the neighbours fetched
  const AHEAD = [1, -1, 2, -2];
  const MIN_SIDE = 320;     // the image's height is not made smaller than this to fit

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  /** The slice a key moves to from `index` (0-based) in `count`, or null for other keys. */
  function keyTarget(key, index, count, pageStep) {
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1,
                    PageDown: pageStep, PageUp: -pageStep };
    if (key === "Home") return 0;
    if (key === "End") return count - 1;
    if (!(key in moves)) return null;
    return clamp(index + moves[key], 0, count - 1);
  }

  /** Slices a wheel event moves ({steps, rest}): a notch is one slice, smaller deltas (a
   *  touchpad) add up in `rest` until they make one. deltaMode: 0 pixels, 1 lines, 2 pages. */
  function wheelSteps(rest, delta, deltaMode) {
    const pixels = delta * (deltaMode === 1 ? 16 : deltaMode === 2 ? 400 : 1);
    if (Math.abs(pixels) >= NOTCH) return { steps: Math.sign(pixels), rest: 0 };
    const sum = rest + pixels;
    if (Math.abs(sum) >= NOTCH) return { steps: Math.sign(sum), rest: 0 };
    return { steps: 0, rest: sum };
  }

  /** Where a drag that began on slice `base` has got to ({axis, index}): its axis is fixed
   *  once it moved SWIPE_START pixels; up or left is forward; `extent` is the image's size
   *  along that axis, spread over the stack (8 to 48 pixels a slice). */
  function swipeTarget(base, dx, dy, axis, count, extent) {
    if (!axis) {
      if (Math.max(Math.abs(dx), Math.abs(dy)) < SWIPE_START) return { axis: null, index: base };
      axis = Math.abs(dy) >= Math.abs(dx) ? "y" : "x";
    }
    const forward = axis === "y" ? -dy : -dx;
    const perSlice = clamp(extent / count, 8, 48);
    return { axis, index: clamp(base + Math.trunc(forward / perSlice), 0, count - 1) };
  }

  /** The strip's cell width and side margin that put cell k under the slider's thumb at
   *  value k + 1 (a track of `width` pixels, a thumb of `thumb`). */
  function stripLayout(width, thumb, count) {
    const cell = count > 1 ? (width - thumb) / (count - 1) : width;
    return { cell, margin: thumb / 2 - cell / 2 };
  }

  /** `url` with the window's centre and width (none: as it is). */
  function withWindow(url, chosen, base) {
    if (!chosen) return url;
    const out = new URL(url, base);
    out.searchParams.set("centre", chosen.centre);
    out.searchParams.set("width", chosen.width);
    return out.pathname + out.search;
  }

  /** The slice label: the template's "{n}" filled. */
  function labelFor(template, number) { return template.replace("{n}", String(number)); }

  const api = { keyTarget, wheelSteps, swipeTarget, stripLayout, withWindow, labelFor };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  root.CliniboxStack = api;
  if (typeof document === "undefined") return;

  /** What the findings pane says of the page's own image: from its "This image" heading
   *  on (the previous study apart), else the whole pane. */
  function ownImageParts(findings) {
    if (!findings) return [];
    const heading = findings.querySelector("#this-image");
    if (!heading || heading.parentElement !== findings) return [findings];
    const parts = [];
    for (let node = heading; node; node = node.nextElementSibling) {
      if (node.id !== "previous-study") parts.push(node);
    }
    return parts;
  }

  function startStack() {
    const nav = document.getElementById("series-stack");
    const source = document.getElementById("stack-data");
    const viewer = document.getElementById("viewer");
    const stage = document.getElementById("stage");
    const image = document.getElementById("frame-image");
    if (!nav || !source || !viewer || !image) return;
    const data = JSON.parse(source.dataset.stack);
    const slices = data.slices;
    const count = slices.length;
    const home = data.index;
    let index = home;
    const $ = (id) => document.getElementById(id);
    const slider = $("stack-slider"), label = $("stack-label"), strip = $("stack-marks");
    const previous = $("stack-previous"), next = $("stack-next"), away = $("stack-away");
    const open = $("stack-open"), boxes = $("boxes"), hint = $("stack-hint");
    const findings = document.querySelector(".findings-pane");
    const imageParts = ownImageParts(findings);
    const template = nav.dataset.label || "{n}";
    const homeBoxes = boxes ? [...boxes.childNodes].map((node) => node.cloneNode(true)) : [];
    for (const shown of [slider, hint]) if (shown) shown.hidden = false;
    if ($("stack-go")) $("stack-go").hidden = true;
    nav.classList.add("scripted");

    // -- the window the images are asked for: the one chosen on this page, if any -------
    function chosenWindow() {
      const centre = $("centre"), width = $("width");
      if (!centre || !width || !(Number(width.value) > 0)) return null;
      const asked = new URL(window.location.href).searchParams.has("centre");
      const changed = centre.value !== centre.defaultValue || width.value !== width.defaultValue;
      return asked || changed ? { centre: centre.value, width: width.value } : null;
    }
    const here = window.location.href;
    const imageUrl = (k) => withWindow(slices[k].image, chosenWindow(), here);
    const pageUrl = (k) => withWindow(slices[k].page, chosenWindow(), here);

    // -- fetching ahead ------------------------------------------------------------------
    const fetched = new Map();
    function fetchAhead() {
      for (const step of AHEAD) {
        const k = index + step;
        if (k < 0 || k >= count || slices[k].gone) continue;
        const url = imageUrl(k);
        if (fetched.has(url)) continue;
        const early = new Image();
        early.src = url;
        fetched.set(url, early);
        if (fetched.size > 24) fetched.delete(fetched.keys().next().value);
      }
    }

    // -- the image layer of a slice other than the page's own ------------------------------
    function svg(name, attributes, text) {
      const node = document.createElementNS(boxes.namespaceURI, name);  // SVG's
      for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
      if (text !== undefined) node.textContent = text;
      return node;
    }
    function drawLayer(k) {
      if (!boxes) return;
      if (k === home) { boxes.replaceChildren(...homeBoxes.map((n) => n.cloneNode(true))); return; }
      const size = boxes.querySelector("text") ? boxes.querySelector("text").style.fontSize : "";
      const drawn = [];
      for (const mark of slices[k].marks) {
        if (!mark.box) continue;
        const [x0, y0, x1, y1] = mark.box;
        drawn.push(svg("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0,
                                 class: "stack-box" }));
        const text = svg("text", { x: x0, y: Math.max(y0 - 4, 12), class: "stack-box" },
                         String(mark.number));
        if (size) text.style.fontSize = size;
        drawn.push(text);
      }
      boxes.replaceChildren(...drawn);
    }

    // -- showing a slice -------------------------------------------------------------------
    let settleTimer = null;
    function settle() {
      history.replaceState(history.state, "", pageUrl(index));
      fetchAhead();
    }
    function link(anchor, k) {
      if (!anchor) return;
      if (k >= 0 && k < count) {
        anchor.href = pageUrl(k);
        anchor.removeAttribute("aria-disabled");
      } else {
        anchor.removeAttribute("href");
        anchor.setAttribute("aria-disabled", "true");
      }
    }
    function show(k) {
      k = clamp(k, 0, count - 1);
      if (k === index) return;
      if (slices[k].gone) { window.location.assign(pageUrl(k)); return; }  // its page says so
      index = k;
      const text = labelFor(template, k + 1);
      image.dataset.base = slices[k].image;  // the window controls (viewer.js) ask this one
      image.src = imageUrl(k);
      image.alt = text;
      label.textContent = text;
      if (slider) { slider.value = String(k + 1); slider.setAttribute("aria-valuetext", text); }
      link(previous, k - 1);
      link(next, k + 1);
      if (strip) {
        strip.querySelectorAll(".stack-cell").forEach((cell, i) => {
          cell.classList.toggle("current", i === k);
        });
      }
      drawLayer(k);
      const elsewhere = k !== home;
      viewer.classList.toggle("stack-elsewhere", elsewhere);
      for (const part of imageParts) part.classList.toggle("stack-elsewhere", elsewhere);
      for (const row of document.querySelectorAll("#volume-table tr[id^='lesion-3d-']")) {
        const number = Number(row.id.slice("lesion-3d-".length));
        row.classList.toggle("on-this-slice", (slices[k].lesions || []).includes(number));
      }
      if (away) away.hidden = !elsewhere;
      if (hint) hint.hidden = elsewhere;  // the note takes the hint's place
      if (open) open.href = pageUrl(k);
      window.clearTimeout(settleTimer);
      settleTimer = window.setTimeout(settle, SETTLE_MS);
    }
    // a slice whose picture is not the page's shape (or fails) opens as its own page
    const columns = Number(viewer.dataset.columns), rows = Number(viewer.dataset.rows);
    image.addEventListener("load", () => {
      if (index === home || !(columns > 0 && rows > 0) || !image.naturalWidth) return;
      const ratio = (image.naturalWidth / image.naturalHeight) / (columns / rows);
      if (Math.abs(ratio - 1) > 0.01) window.location.assign(pageUrl(index));
    });
    image.addEventListener("error", () => {
      if (index !== home) window.location.assign(pageUrl(index));
    });

    // -- the controls ----------------------------------------------------------------------
    if (slider) {
      slider.addEventListener("input", () => show(Number(slider.value) - 1));
    }
    const step = (anchor, by) => {
      if (anchor) anchor.addEventListener("click", (event) => {
        event.preventDefault();
        show(index + by);
      });
    };
    step(previous, -1);
    step(next, 1);
    if (strip) {
      for (const mark of strip.querySelectorAll("a[data-index]")) {
        mark.addEventListener("click", (event) => {
          event.preventDefault();
          show(Number(mark.dataset.index));
        });
      }
    }
    function layoutStrip() {
      if (!strip || !slider || !slider.clientWidth) return;
      const { cell, margin } = stripLayout(slider.clientWidth, THUMB, count);
      strip.style.marginLeft = `${margin}px`;
      strip.style.marginRight = `${margin}px`;
      nav.classList.toggle("roomy", cell >= 28);
    }
    // the image and the stack together on the screen (a tablet's 1024×768): the image no
    // wider than the height left beside the stack allows (and never under MIN_SIDE)
    function fitViewer() {
      if (!(columns > 0 && rows > 0)) return;
      const room = window.innerHeight - nav.getBoundingClientRect().height - 24;
      viewer.style.maxWidth = `${Math.floor(Math.max(room, MIN_SIDE) * columns / rows)}px`;
      viewer.style.marginLeft = viewer.style.marginRight = "auto";
    }
    fitViewer();
    layoutStrip();
    window.addEventListener("resize", () => { fitViewer(); layoutStrip(); });

    // -- the wheel: slices, before image_tools.js would zoom (Ctrl + wheel still zooms) -----
    let wheelRest = 0;
    const pane = viewer.parentElement || document;
    pane.addEventListener("wheel", (event) => {
      if (event.ctrlKey || event.metaKey) return;
      const over = viewer.contains(event.target) || event.target === slider
        || (strip && strip.contains(event.target));
      if (!over) return;
      event.preventDefault();
      event.stopPropagation();
      const delta = Math.abs(event.deltaX) > Math.abs(event.deltaY) ? event.deltaX : event.deltaY;
      const moved = wheelSteps(wheelRest, delta, event.deltaMode);
      wheelRest = moved.rest;
      if (moved.steps) show(index + moved.steps);
    }, { capture: true, passive: false });

    // -- keys ------------------------------------------------------------------------------
    document.addEventListener("keydown", (event) => {
      if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
      const target = event.target;
      const typing = target && (target.isContentEditable
        || (/^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) && target !== slider));
      if (typing) return;
      if ((event.key === "Home" || event.key === "End") && target !== slider) return;
      const k = keyTarget(event.key, index, count, data.page_step || 1);
      if (k === null) return;
      event.preventDefault();
      show(k);
    });

    // -- a drag on the image at fit --------------------------------------------------------
    const fingers = new Set();
    let swipe = null;
    function zoomed() {
      const found = /scale\(([\d.]+)\)/.exec(stage ? stage.style.transform : "");
      return Boolean(found) && Number(found[1]) > 1.001;
    }
    viewer.addEventListener("pointerdown", (event) => {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      fingers.add(event.pointerId);
      swipe = null;
      if (fingers.size !== 1 || zoomed() || viewer.classList.contains("measuring")) return;
      swipe = { id: event.pointerId, x: event.clientX, y: event.clientY, base: index, axis: null };
    });
    viewer.addEventListener("pointermove", (event) => {
      if (!swipe || event.pointerId !== swipe.id || fingers.size !== 1) return;
      const dx = event.clientX - swipe.x, dy = event.clientY - swipe.y;
      const axis = swipe.axis || (Math.abs(dy) >= Math.abs(dx) ? "y" : "x");
      const extent = axis === "x" ? viewer.clientWidth : viewer.clientHeight;
      const moved = swipeTarget(swipe.base, dx, dy, swipe.axis, count, extent);
      swipe.axis = moved.axis;
      if (moved.axis) show(moved.index);
    });
    const lift = (event) => {
      fingers.delete(event.pointerId);
      if (swipe && swipe.id === event.pointerId) swipe = null;
    };
    viewer.addEventListener("pointerup", lift);
    viewer.addEventListener("pointercancel", lift);

    fetchAhead();
  }

  document.addEventListener("DOMContentLoaded", startStack);
})(typeof globalThis !== "undefined" ? globalThis : this);
