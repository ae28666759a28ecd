"""reference/egress.md and reference/manifest.md: what a box sends, what a package holds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from docs_pages.code_docs import attribute_docs
from docs_pages.markdown import (
    GENERATED_NOTE,
    code,
    inline,
    number,
    rst_to_md,
    sentence,
    table,
)

REPO = Path(__file__).resolve().parents[2]

def describe_spec(spec: Any) -> str:
    """One egress field's allowed values, in words."""
    from clinibox_common.contracts import egress as e

    if isinstance(spec, e.Optional):
        return "optional; " + describe_spec(spec.spec)
    if isinstance(spec, e.Int):
        if spec.lo == spec.hi:
            return f"integer, always {spec.lo}"
        return f"integer {spec.lo} … {spec.hi}"
    if isinstance(spec, e.Num):
        return f"number {number(spec.lo)} … {number(spec.hi)}"
    if isinstance(spec, e.OneOf):
        return "one of " + ", ".join(code(v) for v in spec.values)
    if isinstance(spec, e.Label):
        return f"a finding label of the running model ({code(e.LABEL.pattern)})"
    if isinstance(spec, e.Pattern):
        return f"{spec.what}: {code(spec.regex.pattern)}"
    if isinstance(spec, e.Counts):
        return f"list of exactly {spec.length} counts"
    if isinstance(spec, e.CountsBy):
        return "counts by key; keys from " + ", ".join(code(k) for k in spec.keys)
    if isinstance(spec, e.Obj):
        return "object: " + ", ".join(code(name) for name in spec.fields)
    if isinstance(spec, e.ListOf):
        return f"list of at most {spec.max_items}, each " + describe_spec(spec.spec)
    return type(spec).__name__  # pragma: no cover - a new spec type: shown by its name


def field_comments(source: str) -> dict[tuple[str, ...], str]:
    """The ``#:`` comments of SCHEMAS in egress.py's source, by field path (kind, field …)."""
    comments: dict[tuple[str, ...], str] = {}
    start = source.index("SCHEMAS:")
    path: list[str] = []
    pending: list[str] = []
    for line in source[start:].splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            continue
        if not line.startswith(" "):
            break
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r'"(\w+)":', stripped)
        if match:
            if pending:
                comments[(*path, match[1])] = inline(" ".join(pending))
            pending = []
            if stripped.endswith("({"):
                path.append(match[1])
            continue
        if stripped.startswith("})"):
            path.pop()
    return comments


def field_rows(obj: Any, prefix: tuple[str, ...], comments: dict[tuple[str, ...], str],
               kind: str, shown: tuple[str, ...] | None = None) -> list[list[str]]:
    """One row per field of an egress object, nested objects' fields as ``a.b`` and the
    fields of a list's objects as ``a[].b`` (``shown``: the prefix as written); a nested
    field without a comment of its own (an object's keys made from a table, such as
    ``feedback``'s verdicts) is its object's comment and its name."""
    from clinibox_common.contracts import egress as e

    rows = []
    shown = prefix if shown is None else shown
    parent = comments.get((kind, *prefix), "") if prefix else ""
    for name, spec in obj.fields.items():
        path = (*prefix, name)
        inner = spec.spec if isinstance(spec, e.Optional) else spec
        meaning = comments.get((kind, *path)) or (f"{parent}: {code(name)}" if parent else "")
        rows.append([code(".".join((*shown, name))), describe_spec(spec), meaning])
        if isinstance(inner, e.Obj):
            rows += field_rows(inner, path, comments, kind, (*shown, name))
        elif isinstance(inner, e.ListOf) and isinstance(inner.spec, e.Obj):
            rows += field_rows(inner.spec, path, comments, kind, (*shown, f"{name}[]"))
    return rows


def egress_page() -> str:
    """reference/egress.md: every message kind the box may send and every field of it."""
    from clinibox_common.contracts import egress, topics

    comments = field_comments(Path(egress.__file__).read_text(encoding="utf-8"))
    parts = ["# Egress (MQTT) message reference", "", GENERATED_NOTE, "",
             rst_to_md(egress.__doc__), "",
             f"Schema version: **{egress.SCHEMA_VERSION}**. Kinds, in the order the outbox "
             "drains them (lower priority first):", "",
             table(("kind", "priority"), [[code(k), egress.PRIORITY[k]]
                                          for k in sorted(egress.KINDS,
                                                          key=egress.PRIORITY.__getitem__)]),
             "", "## Topics", "", rst_to_md(topics.__doc__), ""]
    for kind in egress.KINDS:
        parts += [f"## `{kind}`", "",
                  "Every field is required unless marked optional; any other field is "
                  "refused.", "",
                  table(("field", "allowed", "meaning"),
                        field_rows(egress.SCHEMAS[kind], (), comments, kind)), ""]
    return "\n".join([*parts, *envelope_section()])


def envelope_section() -> list[str]:
    """The envelope around every message: its wire format and the header fields that leave
    the box in the clear (``clinibox_common/contracts/envelope.py``)."""
    from clinibox_common.contracts import egress, envelope

    header = json.loads(envelope.Header("clinic", "device", egress.KINDS[0], 1).to_bytes())
    docs = {**attribute_docs(envelope.Header), "v": attribute_docs(envelope).get("VERSION", "")}
    allowed = {"clinic": egress.Pattern(egress.IDENTITY, "clinic id"),
               "device": egress.Pattern(egress.IDENTITY, "device id"),
               "kind": egress.OneOf(egress.KINDS), "seq": egress.Int(1, envelope.MAX_SEQ),
               "v": egress.Int(envelope.VERSION, envelope.VERSION)}
    rows = [[code(name), describe_spec(allowed[name]) if name in allowed else "",
             docs.get(name, "")] for name in header]
    return ["## The envelope", "", rst_to_md(envelope.__doc__), "",
            "### Header fields (signed, not encrypted)", "",
            "The header is canonical JSON (keys sorted, no spaces); a header with any other "
            "field, or not in canonical form, is refused.", "",
            table(("field", "allowed", "meaning"), rows), ""]


def manifest_page() -> str:
    """reference/manifest.md: the model package manifest, its heads, stages and artifacts."""
    from clinibox_common.contracts import backends, heads, manifest, stages

    demo = REPO / "models" / "clinibox-demo-lesion" / "1.0.0" / "manifest.json"
    example = json.loads(demo.read_text(encoding="utf-8"))
    parts = ["# Model package manifest reference", "", GENERATED_NOTE, "",
             f"Schema: {code(manifest.SCHEMA)} (`clinibox_common/contracts/manifest.py`).", "",
             rst_to_md(manifest.__doc__), "",
             *manifest_keys_section(manifest),
             "## Artifact formats and runtime backends", "",
             rst_to_md(backends.__doc__), "",
             table(("backend", "runs formats", "install", "resident MB"),
                   [[code(b.key), ", ".join(code(f) for f in b.formats), b.install,
                     b.resident_mb] for b in backends.BACKENDS.values()]), "",
             "Precisions: " + ", ".join(code(p) for p in backends.PRECISIONS) + ".", "",
             "## Heads and the validated range", "",
             "Head kinds: " + ", ".join(code(k) for k in heads.HEAD_KINDS)
             + "; activations: " + ", ".join(code(a) for a in heads.ACTIVATIONS) + ".", "",
             rst_to_md(heads.__doc__), "",
             "## Second stages", "", rst_to_md(stages.__doc__), "",
             f"## The demo package's manifest (`{demo.relative_to(REPO)}`)", "",
             "Its top-level keys, as an example of a complete manifest:", "",
             table(("key", "JSON type", "value (short)"),
                   [[code(k), type(v).__name__.replace("dict", "object")
                     .replace("str", "string").replace("list", "array"),
                     _short(v)] for k, v in example.items()]), ""]
    return "\n".join(parts)


def manifest_keys_section(manifest: Any) -> list[str]:
    """Every manifest key the code describes (``contracts/manifest.py`` ``KEYS``), with its
    meaning; objects whose keys are not listed one by one (``OPEN_KEYS``) say so."""
    docs = attribute_docs(manifest)
    rows = [[code(key), sentence(inline(meaning)) + (" Its keys are not listed one by one here."
                                                      if key in manifest.OPEN_KEYS else "")]
            for key, meaning in manifest.KEYS.items()]
    return ["## Every key", "", sentence(docs.get("KEYS", "")), "",
            table(("key", "meaning"), rows), ""]


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
        return code(text if len(text) <= 60 else text[:57] + "…")
    return code(value)
