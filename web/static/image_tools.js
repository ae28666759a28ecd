// clinibox study page: zoom, pan, the distance tool and the lesion table's selection.
// A finger works (pointer events: drag pans, two fingers pinch, tap or drag measures);
// a mouse too (wheel zooms). The image and its overlays sit in one transformed stage,
// so boxes, contours and measurements stay on the image at every zoom. Without this
// file the page still shows the image, its boxes and the lesion table (rows are links).
"use strict";

(function () {
  const MIN_SCALE = 1;
  const MAX_SCALE = 8;
  const STEP = 1.5;
  const TAP_SLOP = 6;  // screen pixels a tap may wander

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  function startImageTools() {
    const viewer = document.getElementById("viewer");
    const stage = document.getElementById("stage");
    const layer = document.getElementById("measures");
    const M = window.CliniboxMeasure;
    if (!viewer || !stage || !layer || !M) return;
    const columns = Number(viewer.dataset.columns);
    const rows = Number(viewer.dataset.rows);
    const spacing = M.parseSpacing(viewer.dataset.rowMm, viewer.dataset.columnMm);
    const unitWords = { mm: viewer.dataset.unitMm || "mm", px: viewer.dataset.unitPx || "px" };
    const list = document.getElementById("measurements");
    const tools = document.getElementById("viewer-tools");
    const measureButton = document.getElementById("measure-toggle");
    if (tools) tools.hidden = false;
    viewer.classList.add("interactive");

    const view = { scale: 1, x: 0, y: 0 };
    let measuring = false;

    // -- the transform -----------------------------------------------------------------
    function clampPan() {
      const w = viewer.clientWidth, h = viewer.clientHeight;
      view.x = clamp(view.x, w - w * view.scale, 0);
      view.y = clamp(view.y, h - h * view.scale, 0);
    }
    function apply() {
      clampPan();
      stage.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
      const perSource = screenPerSource();
      for (const text of layer.querySelectorAll("text")) text.setAttribute("font-size", 15 / perSource);
      for (const dot of layer.querySelectorAll("circle")) dot.setAttribute("r", 5 / perSource);
      // the boxes' labels are 14 screen pixels at any zoom and any image size (a 128-pixel
      // phantom drawn 580 wide would otherwise letter them 60 pixels high)
      for (const text of document.querySelectorAll("#boxes text")) {
        text.style.fontSize = `${14 / perSource}px`;
      }
    }
    function screenPerSource() {
      return (viewer.clientWidth * view.scale) / columns || 1;
    }
    function local(clientX, clientY) {
      const box = viewer.getBoundingClientRect();
      return { x: clientX - box.left, y: clientY - box.top };
    }
    function zoomAt(factor, at) {
      const scale = clamp(view.scale * factor, MIN_SCALE, MAX_SCALE);
      const px = (at.x - view.x) / view.scale, py = (at.y - view.y) / view.scale;
      view.x = at.x - scale * px;
      view.y = at.y - scale * py;
      view.scale = scale;
      apply();
    }
    function centre() { return { x: viewer.clientWidth / 2, y: viewer.clientHeight / 2 }; }
    function fit() { view.scale = 1; view.x = 0; view.y = 0; apply(); }
    /** A client point in source pixels (x along columns, y along rows), whatever the zoom. */
    function toSource(clientX, clientY) {
      const box = stage.getBoundingClientRect();
      return { x: (clientX - box.left) / box.width * columns,
               y: (clientY - box.top) / box.height * rows };
    }

    // -- measurements ------------------------------------------------------------------
    let count = 0;
    let pending = null;  // the first point of a tap-tap measurement
    function element(name, attributes) {
      const node = document.createElementNS(layer.namespaceURI, name);  // SVG's
      for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
      return node;
    }
    function drawLine(p0, p1) {
      const group = element("g", { class: "measure" });
      group.append(element("line", { x1: p0.x, y1: p0.y, x2: p1.x, y2: p1.y }),
                   element("circle", { cx: p0.x, cy: p0.y, r: 4 }),
                   element("circle", { cx: p1.x, cy: p1.y, r: 4 }));
      layer.append(group);
      return group;
    }
    function moveLine(group, p1) {
      const line = group.querySelector("line");
      line.setAttribute("x2", p1.x); line.setAttribute("y2", p1.y);
      const end = group.querySelectorAll("circle")[1];
      end.setAttribute("cx", p1.x); end.setAttribute("cy", p1.y);
    }
    function finish(group, p0, p1) {
      const length = M.measureLength(p0, p1, spacing);
      const shown = M.formatLength(length, unitWords);
      count += 1;
      moveLine(group, p1);
      const label = element("text", { x: Math.max(p0.x, p1.x) + 4, y: Math.min(p0.y, p1.y) });
      label.textContent = `${count}: ${shown}`;
      group.append(label);
      if (list) {
        const item = document.createElement("li");
        item.textContent = shown;
        item.dataset.value = String(length.value);
        item.dataset.units = length.units;
        list.append(item);
      }
      apply();
    }
    function clearMeasurements() {
      layer.replaceChildren();
      if (list) list.replaceChildren();
      pending = null;
      count = 0;
    }
    function setMeasuring(on) {
      measuring = on;
      viewer.classList.toggle("measuring", on);
      if (measureButton) measureButton.setAttribute("aria-pressed", on ? "true" : "false");
      if (!on && pending) { pending.group.remove(); pending = null; }
    }

    // -- pointers: pan, pinch, measure -------------------------------------------------
    const pointers = new Map();
    let gesture = null;
    function pinchState() {
      const [a, b] = [...pointers.values()];
      return { distance: Math.hypot(a.x - b.x, a.y - b.y) || 1,
               mid: local((a.x + b.x) / 2, (a.y + b.y) / 2) };
    }
    viewer.addEventListener("pointerdown", (event) => {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      event.preventDefault();
      try { viewer.setPointerCapture(event.pointerId); } catch (error) { /* synthetic pointer */ }
      pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (pointers.size === 2) {
        if (gesture && gesture.kind === "measure" && !gesture.fromPending) gesture.group.remove();
        const { distance, mid } = pinchState();
        gesture = { kind: "pinch", distance, mid, scale: view.scale, x: view.x, y: view.y };
      } else if (pointers.size === 1) {
        const down = { x: event.clientX, y: event.clientY };
        if (measuring) {
          const start = pending ? pending.point : toSource(down.x, down.y);
          const group = pending ? pending.group : drawLine(start, start);
          gesture = { kind: "measure", down, start, group, fromPending: Boolean(pending) };
        } else {
          gesture = { kind: "pan", down, x: view.x, y: view.y };
        }
      }
    });
    viewer.addEventListener("pointermove", (event) => {
      if (!pointers.has(event.pointerId)) return;
      pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (!gesture) return;
      if (gesture.kind === "pinch" && pointers.size === 2) {
        const { distance, mid } = pinchState();
        const scale = clamp(gesture.scale * distance / gesture.distance, MIN_SCALE, MAX_SCALE);
        const px = (gesture.mid.x - gesture.x) / gesture.scale;
        const py = (gesture.mid.y - gesture.y) / gesture.scale;
        view.scale = scale; view.x = mid.x - scale * px; view.y = mid.y - scale * py;
        apply();
      } else if (gesture.kind === "pan") {
        view.x = gesture.x + event.clientX - gesture.down.x;
        view.y = gesture.y + event.clientY - gesture.down.y;
        apply();
      } else if (gesture.kind === "measure") {
        moveLine(gesture.group, toSource(event.clientX, event.clientY));
      }
    });
    function pointerEnds(event) {
      if (!pointers.has(event.pointerId)) return;
      pointers.delete(event.pointerId);
      const ended = gesture;
      if (pointers.size > 0 || !ended) { gesture = null; return; }
      gesture = null;
      if (ended.kind !== "measure" || event.type === "pointercancel") {
        if (ended.kind === "measure" && !ended.fromPending) ended.group.remove();
        return;
      }
      const end = toSource(event.clientX, event.clientY);
      const moved = Math.hypot(event.clientX - ended.down.x, event.clientY - ended.down.y);
      if (moved > TAP_SLOP || ended.fromPending) {
        pending = null;
        finish(ended.group, ended.start, end);
      } else {
        pending = { point: ended.start, group: ended.group };  // a tap: the next tap ends it
      }
    }
    viewer.addEventListener("pointerup", pointerEnds);
    viewer.addEventListener("pointercancel", pointerEnds);
    viewer.addEventListener("wheel", (event) => {
      event.preventDefault();
      zoomAt(event.deltaY < 0 ? 1.2 : 1 / 1.2, local(event.clientX, event.clientY));
    }, { passive: false });

    // -- buttons -----------------------------------------------------------------------
    const on = (id, handler) => {
      const button = document.getElementById(id);
      if (button) button.addEventListener("click", handler);
    };
    on("zoom-in", () => zoomAt(STEP, centre()));
    on("zoom-out", () => zoomAt(1 / STEP, centre()));
    on("zoom-fit", fit);
    on("measure-toggle", () => setMeasuring(!measuring));
    on("measure-clear", clearMeasurements);

    // -- the lesion table: a row selects its frame, box and zooms to it ------------------
    function zoomToBox(box) {
      const w = viewer.clientWidth, h = viewer.clientHeight;
      const sx = w / columns, sy = h / rows;
      const bw = Math.max(1, (box[2] - box[0]) * sx), bh = Math.max(1, (box[3] - box[1]) * sy);
      view.scale = clamp(Math.min(w / (bw * 3), h / (bh * 3)), MIN_SCALE, MAX_SCALE);
      view.x = w / 2 - view.scale * (box[0] + box[2]) / 2 * sx;
      view.y = h / 2 - view.scale * (box[1] + box[3]) / 2 * sy;
      apply();
    }
    function select(row) {
      for (const marked of document.querySelectorAll(".selected[data-lesion]")) {
        marked.classList.remove("selected");
      }
      row.classList.add("selected");
      const rect = document.querySelector(`#boxes rect[data-lesion="${row.dataset.lesion}"]`);
      if (rect) rect.classList.add("selected");
      const boxes = document.getElementById("show-boxes");
      if (boxes) boxes.checked = true;
      zoomToBox(row.dataset.box.split(",").map(Number));
    }
    const frame = viewer.dataset.frame;
    for (const row of document.querySelectorAll("#lesion-table tr[data-lesion]")) {
      row.addEventListener("click", (event) => {
        const link = row.querySelector("a");
        if (row.dataset.frame !== frame) {
          if (link && event.target !== link) window.location.assign(link.href);
          return;  // another frame: the link loads it, and the page selects the row there
        }
        event.preventDefault();
        history.replaceState(null, "", `#lesion-${row.dataset.lesion}`);
        select(row);
      });
    }
    const chosen = /^#lesion-(\d+)$/.exec(window.location.hash);
    const image = document.getElementById("frame-image");
    const selectChosen = () => {
      const row = chosen && document.getElementById(`lesion-${chosen[1]}`);
      if (row && row.dataset.frame === frame) select(row);
    };
    if (image && !image.complete) image.addEventListener("load", selectChosen, { once: true });
    else selectChosen();
    window.addEventListener("resize", apply);
    apply();
  }

  document.addEventListener("DOMContentLoaded", startImageTools);
})();
