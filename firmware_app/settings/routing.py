"""The ``[routing]`` section and its ``[[routing.rules]]``: which model analyses a series."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from clinibox_common.contracts.manifest import DEMO_MODEL_NAME
from clinibox_common.i18n import ENGLISH, current, gettext
from clinibox_common.settings_loader import in_range, setting, toml_value
from firmware_app.settings.checks import check_name, load_tables


def _regex(value: Any) -> str | None:
    """a regular expression (Python re)."""
    try:
        re.compile(value)
    except re.error as exc:
        return not_a_regex(exc, value)
    return None


def not_a_regex(exc: re.error, value: str) -> str:
    """Why ``value`` is not a regular expression: in English with ``re``'s own words, in
    another language where it goes wrong (the character's position)."""
    if current() == ENGLISH:
        return f"not a regular expression ({exc}): {value!r}"
    if exc.pos is not None:
        return gettext("not a regular expression (wrong at character %(position)s): %(value)s",
                       position=exc.pos + 1, value=repr(value))
    return gettext("not a regular expression: %(value)s", value=repr(value))


def _upper_list(value: Any) -> str | None:
    """values, none of them empty."""
    if any(not str(v).strip() for v in value):
        return gettext("must not hold empty values, got %(value)s", value=repr(value))
    return None


@dataclass
class RoutingRule:
    """One rule choosing which model analyses a series (as mercure routes): every criterion
    given must hold; an empty one holds for any image."""

    name: str = setting(check_name, "a name for the log and the reasons (unique)", "rule")
    model: str = setting(doc="package name of the model that analyses what the rule matches",
                         default=DEMO_MODEL_NAME)
    modality: list[str] = setting(_upper_list, "modalities, any of (e.g. [\"CT\", \"US\"])",
                                  factory=list)
    body_part: list[str] = setting(_upper_list, "Body Part Examined, any of (case-insensitive)",
                                   factory=list)
    sop_class: list[str] = setting(_upper_list, "SOP Class UIDs, any of", factory=list)
    series_description: str = setting(_regex, "regular expression searched in Series "
                                      "Description (case-insensitive)", "")
    min_rows: int = setting(in_range(0, 65535), "fewest rows (0: no bound)", 0)
    max_rows: int = setting(in_range(0, 65535), "most rows (0: no bound)", 0)
    min_columns: int = setting(in_range(0, 65535), "fewest columns (0: no bound)", 0)
    max_columns: int = setting(in_range(0, 65535), "most columns (0: no bound)", 0)


#: the documentation line of ``[routing] rules`` (shown as a commented example table)
RULES_DOC = ("the rules: one [[routing.rules]] table each, tried in order; none by default "
             "(the model's own modality list decides)")


@dataclass
class RoutingConfig:
    """Which model analyses a series: rules on its DICOM header, first match wins. An image
    no rule matches is ``not_analysed`` with its reason (kept apart from quarantine)."""

    rules: list[RoutingRule] = setting(doc=RULES_DOC, factory=list)


def load_rules(raw: Any) -> list[RoutingRule]:
    """Build and check the ``[[routing.rules]]`` tables; ConfigError naming the key."""
    rules = load_tables(raw, RoutingRule, "routing.rules", ("name", "model"))
    for rule in rules:
        rule.modality = [m.strip().upper() for m in rule.modality]
        rule.body_part = [b.strip().upper() for b in rule.body_part]
        rule.sop_class = [c.strip() for c in rule.sop_class]
    return rules


def describe_rule_example() -> str:
    """A commented ``[[routing.rules]]`` table with every key (the example config's end)."""
    lines = ["# Routing rules: none by default (the model's own modality list decides). One",
             "# table per rule, tried in order; the first that matches picks the model",
             "# (name and model are required):",
             "# [[routing.rules]]"]
    example = RoutingRule(name="ct-chest", modality=["CT"], body_part=["CHEST"],
                          series_description="chest|thorax")
    for spec in dataclasses.fields(example):
        lines.append(f"# # {spec.metadata.get('doc', '')}")
        lines.append(f"# {spec.name} = {toml_value(getattr(example, spec.name))}")
    return "\n".join(lines)
