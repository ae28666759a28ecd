// clinibox distance tool: the length of a line between two points in source pixels.
// Pure functions, no DOM: used by image_tools.js, tested by tests/unit/test_measure_js.py (node).
"use strict";

(function (root) {
  /**
   * Length between p0 and p1 ({x, y} in source pixels: x along columns, y along rows).
   * spacing: {rowMm, columnMm} (mm per pixel, rows and columns may differ) or null when
   * the image has no calibration. Returns {value, units} with units "mm" or "px".
   */
  function measureLength(p0, p1, spacing) {
    const dx = p1.x - p0.x;
    const dy = p1.y - p0.y;
    if (spacing && spacing.rowMm > 0 && spacing.columnMm > 0) {
      return { value: Math.hypot(dx * spacing.columnMm, dy * spacing.rowMm), units: "mm" };
    }
    return { value: Math.hypot(dx, dy), units: "px" };
  }

  /** The spacing read from the viewer's data attributes (strings; "" when uncalibrated). */
  function parseSpacing(rowText, columnText) {
    const rowMm = Number(rowText);
    const columnMm = Number(columnText);
    if (!rowText || !columnText || !(rowMm > 0) || !(columnMm > 0)) return null;
    return { rowMm, columnMm };
  }

  /** A length as shown: one decimal in mm, whole pixels otherwise, with its unit's word. */
  function formatLength(length, unitWords) {
    const digits = length.units === "mm" ? 1 : 0;
    return length.value.toFixed(digits) + " " + (unitWords[length.units] || length.units);
  }

  const api = { measureLength, parseSpacing, formatLength };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  root.CliniboxMeasure = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
