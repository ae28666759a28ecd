"""``clinibox console-banner``: what the appliance's screen says above its login prompt.

The image's ``clinibox-console.service`` writes these lines, after the box's addresses, to
``/etc/issue.d/`` every half minute, so a technician with a screen and no keyboard sees what
the box is waiting for: the hospital's enrolment bundle (on a USB stick), the hospital's
enrolment of its code (shown with its QR code), or a model. The Linux console has no Chinese
font, so the banner is in English whatever the box's language.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
from collections.abc import Callable
from importlib import metadata

from clinibox_common.errors import EXIT_OK
from firmware_app.ops import usb_model, usb_network
from firmware_app.ops.provision import qr_code
from firmware_app.ops.usb_provision import StickOutcome, StickResult, read_outcome
from firmware_app.settings import box as config_module
from firmware_app.storage.enrolment import enrolment_code
from firmware_app.words import software_words

WAITING_FOR_BUNDLE = ("waiting for: the hospital's enrolment bundle. Put a USB stick with "
                      "the box's .bundle file at its top into a USB port.")


def addresses() -> list[str]:
    """The box's IPv4 addresses on the clinic's network (``ip``), empty while it has none."""
    try:
        shown = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"],
                               capture_output=True, text=True, timeout=10, check=True).stdout
        return [a["local"] for link in json.loads(shown) for a in link.get("addr_info", [])
                if a.get("local")]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return []


def where_lines(config: config_module.Config, found: list[str]) -> list[str]:
    """Where the viewer and the DICOM port answer, an address a line."""
    if not found:
        return ["  no network address yet: plug in the clinic's network cable"]
    return [f"  viewer https://{address}:{config.web.port}/   DICOM {address} port "
            f"{config.dicom.port}, AE title {config.dicom.ae_title}" for address in found]


def printable(text: str) -> str:
    """``text`` without control characters: a stick's file name or a bundle's words reach the
    screen, and an escape sequence there could rewrite what the technician reads."""
    return "".join(c if c.isprintable() else "?" for c in text)


def stick_line(result: StickResult | None) -> str | None:
    """The last stick's enrolment bundle, when it was refused."""
    if result is None or result.outcome in (StickOutcome.NO_BUNDLE, StickOutcome.PROVISIONED):
        return None
    return printable(f"USB stick refused ({result.bundle}): {result.reason}")


def clock_line(result: StickResult | None) -> str | None:
    """The clock, when the stick's bundle moved it forward (no network time had set it)."""
    if result is None or not result.clock_to:
        return None
    when = result.clock_to.replace("T", " ")[:16]
    return printable(f"clock was behind the hospital's bundle: moved forward to {when} UTC, "
                     "when it was issued (no network time yet)")


def banner(config: config_module.Config, stick: StickResult | None,
           found: list[str]) -> list[str]:
    """The banner's lines."""
    lines = ["", f"clinibox {metadata.version('clinibox')}, lesion detection appliance",
             *where_lines(config, found)]
    update = software_words.read_outcome()
    if update is not None:
        lines.append(printable(f"  last software update: "
                               f"{software_words.outcome_sentence(update)}"))
    for said in (usb_network.banner_line(usb_network.read_outcome()),
                 usb_model.banner_line(usb_model.read_outcome())):
        if said:
            lines.append(printable(f"  {said}"))
    for said in (clock_line(stick), stick_line(stick)):
        if said:
            lines.append(f"  {said}")
    code = enrolment_code(config)
    if code is None:
        lines.append(f"  {WAITING_FOR_BUNDLE}")
        return lines
    lines.append(f"  enrolled as {config.telemetry.clinic}/{config.telemetry.device}, "
                 f"hospital broker {config.mqtt.host}:{config.mqtt.port}")
    lines.append("  the hospital enrols this box with:")
    lines.append(f"    clinibox central enrol-code {code}")
    drawn = io.StringIO()
    qr_code(code).terminal(out=drawn, compact=True)
    lines.extend(drawn.getvalue().rstrip("\n").splitlines())
    return lines


def cmd_console_banner(args: argparse.Namespace) -> int:
    """Print the console's banner lines (``clinibox-console.service``)."""
    config = config_module.load(getattr(args, "config", None))
    print("\n".join(banner(config, read_outcome(), addresses())))
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``console-banner`` on the main parser."""
    p = with_config(sub.add_parser(
        "console-banner", help="the lines the appliance's screen shows above its login prompt "
                               "(what the box waits for, its enrolment code)"))
    p.set_defaults(func=cmd_console_banner)
