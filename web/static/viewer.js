// clinibox viewer: small progressive enhancements. Every page works without this file.
"use strict";

// Worklist: fetch the rows again every few seconds so new studies appear without a reload.
function startWorklistRefresh() {
  const list = document.getElementById("worklist");
  if (!list) return;
  const seconds = Number(list.dataset.refresh) || 5;
  const refresh = async () => {
    try {
      const response = await fetch(list.dataset.rowsUrl, { credentials: "same-origin" });
      if (response.redirected || response.status === 401) { window.location.reload(); return; }
      if (response.ok) list.innerHTML = await response.text();  // rendered and escaped on the box
    } catch (error) { /* the box may be restarting; try again next time */ }
  };
  window.setInterval(refresh, seconds * 1000);
}

// Study: window/level sliders update the image as they move (debounced).
function startWindowControls() {
  const image = document.getElementById("frame-image");
  const form = document.getElementById("window-form");
  if (!image || !form) return;
  const pairs = [["centre", "centre-range"], ["width", "width-range"]];
  let timer = null;
  const update = () => {
    const centre = document.getElementById("centre").value;
    const width = document.getElementById("width").value;
    if (!(Number(width) > 0)) return;
    window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      const url = new URL(image.dataset.base, window.location.href);
      url.searchParams.set("centre", centre);
      url.searchParams.set("width", width);
      image.src = url.toString();
    }, 120);
  };
  for (const [numberId, rangeId] of pairs) {
    const number = document.getElementById(numberId);
    const range = document.getElementById(rangeId);
    range.addEventListener("input", () => { number.value = Number(range.value).toPrecision(5) * 1; update(); });
    number.addEventListener("input", () => { range.value = number.value; update(); });
  }
}

function startReportButtons() {
  const print = document.getElementById("print-report");
  if (print) print.addEventListener("click", () => window.print());
  for (const button of document.querySelectorAll("button.danger")) {
    button.addEventListener("click", (event) => {
      const question = button.dataset.confirm || "Delete this object from the box for good?";
      if (!window.confirm(question)) event.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  startWorklistRefresh();
  startWindowControls();
  startReportButtons();
});
