"""Routing rules: which model analyses a series, chosen by its DICOM header.

Like mercure's routing, a rule (``[[routing.rules]]`` in the config) names a
model package and the criteria an image must meet: modality, Body Part
Examined, SOP class, a regular expression on Series Description, and its size
in rows and columns. Rules are tried in order; the first that matches picks
the model; several packages run side by side, each with its own trial, floor
and rollback (``service/appliance.py`` loads every package a rule names). An
image no rule matches, or whose rule names a model that is not on this box, is
``not_analysed`` with its reason (a code: ``contracts/reasons.py``): good input that no
model here is meant for, kept apart from quarantine (broken input). Without
rules the running package's own modality list decides, as before. A rule never
widens a package's scope: its accepted modalities still bound it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clinibox_common.contracts.manifest import ModelPackage
from clinibox_common.contracts.reasons import Reason, ReasonCode
from engine.imaging.decode import DecodedImage
from firmware_app.settings.routing import RoutingRule


def _within(value: int, low: int, high: int) -> bool:
    return (low == 0 or value >= low) and (high == 0 or value <= high)


@dataclass(frozen=True)
class CompiledRule:
    """A routing rule with its regular expression compiled."""

    rule: RoutingRule
    series: re.Pattern[str] | None

    @classmethod
    def of(cls, rule: RoutingRule) -> CompiledRule:
        """Compile ``rule`` (its series description is matched case-insensitively)."""
        pattern = re.compile(rule.series_description, re.IGNORECASE) \
            if rule.series_description else None
        return cls(rule, pattern)

    def matches(self, image: DecodedImage) -> bool:
        """Whether every criterion the rule gives holds for ``image``."""
        rule = self.rule
        return ((not rule.modality or image.modality.upper() in rule.modality)
                and (not rule.body_part or image.body_part.upper() in rule.body_part)
                and (not rule.sop_class or image.sop_class_uid in rule.sop_class)
                and (self.series is None or bool(self.series.search(image.series_description)))
                and _within(image.rows, rule.min_rows, rule.max_rows)
                and _within(image.columns, rule.min_columns, rule.max_columns))


def describe(image: DecodedImage) -> str:
    """What the rules looked at, in words (for the reason an image is not analysed)."""
    parts = [f"modality {image.modality or 'unknown'}"]
    if image.body_part:
        parts.append(f"body part {image.body_part}")
    if image.series_description:
        parts.append(f"series {image.series_description!r}")
    parts.append(f"{image.rows}x{image.columns}")
    return ", ".join(parts)


def modality_refusal(package: ModelPackage, modality: str) -> Reason | None:
    """Why the package does not analyse ``modality`` (None when it does)."""
    accepted = package.modalities
    if accepted and modality not in accepted:
        return Reason(ReasonCode.MODALITY_NOT_ACCEPTED, {
            "modality": modality or "unknown", "model": package.model_id,
            "accepted": ", ".join(accepted)})
    return None


@dataclass(frozen=True)
class Route:
    """Where an image goes: the package name that analyses it, or why none does."""

    model: str | None
    reason: Reason | None = None


class Router:
    """Chooses, among the packages running on the box, the one that analyses an image."""

    def __init__(self, rules: Sequence[RoutingRule], packages: Mapping[str, ModelPackage],
                 default: str) -> None:
        """``packages``: the running packages by name; ``default``: the one that analyses
        every image its modality list accepts when there are no rules."""
        self.rules = [CompiledRule.of(rule) for rule in rules]
        self.packages = dict(packages)
        self.default = default

    def rule_for(self, image: DecodedImage) -> RoutingRule | None:
        """The first rule ``image`` matches, or None."""
        return next((c.rule for c in self.rules if c.matches(image)), None)

    def route(self, image: DecodedImage) -> Route:
        """The package that analyses ``image``, or the reason none does."""
        name = self.default
        if self.rules:
            rule = self.rule_for(image)
            if rule is None:
                return Route(None, Reason(ReasonCode.NO_ROUTING_RULE,
                                          {"series": describe(image)}))
            if rule.model not in self.packages:
                running = ", ".join(p.model_id for p in self.packages.values()) or "none"
                return Route(None, Reason(ReasonCode.MODEL_NOT_INSTALLED, {
                    "rule": rule.name, "model": rule.model, "running": running}))
            name = rule.model
        refusal = modality_refusal(self.packages[name], image.modality)
        return Route(None, refusal) if refusal else Route(name)

    def refusal(self, image: DecodedImage) -> Reason | None:
        """Why no package here analyses ``image`` (None: one does)."""
        route = self.route(image)
        return None if route.model else route.reason
