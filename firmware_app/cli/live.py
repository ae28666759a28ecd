"""``clinibox live SOURCE``: one live source's process (the service starts one per
``[[live.sources]]``; a technician may run one in the foreground to see what it does), and
``clinibox demo-video OUT``: the phantom ultrasound screen a demonstration source plays."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from clinibox_common.errors import EXIT_OK, EXIT_USAGE
from clinibox_common.i18n import gettext as _


def add_parsers(sub, with_config) -> None:
    """Register ``live`` and ``demo-video``."""
    parser = with_config(sub.add_parser(
        "live", help="read, analyse and show one live video source ([[live.sources]]) until "
                     "stopped (the service runs one per source)"))
    parser.add_argument("source", help="the source's name ([[live.sources]] name)")
    parser.set_defaults(func=cmd_live)
    demo = sub.add_parser(
        "demo-video", help="write a generated ultrasound screen with phantom lesions (no "
                           "patient) as a video file, for a demonstration live source")
    demo.add_argument("out", help="the file to write (.mp4, .mkv, .ts or .avi)")
    demo.add_argument("--seconds", type=float, default=60.0, help="its length (default 60)")
    demo.add_argument("--seed", type=int, default=7, help="which phantoms (default 7)")
    demo.set_defaults(func=cmd_demo_video)


def cmd_demo_video(args: argparse.Namespace) -> int:
    """Write ``phantoms.video``'s ultrasound screen (1280 x 720, 30 fps, H.264) and say the
    ``[[live.sources]]`` region that reads it."""
    from clinibox_common.errors import CliniboxError
    from firmware_app.live.video_file import write_video
    from phantoms.video import ScreenLayout, screen_frames

    if not 0 < args.seconds <= 3600:
        raise CliniboxError(_("--seconds: between 0 and 3600"), exit_status=EXIT_USAGE)
    if Path(args.out).suffix.lower() not in (".mp4", ".mkv", ".ts", ".avi"):
        raise CliniboxError(_("%(out)s: write an .mp4, .mkv, .ts or .avi file", out=args.out),
                            exit_status=EXIT_USAGE)
    layout = ScreenLayout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frames = (frame for frame, _boxes in screen_frames(args.seed, args.seconds, 30.0, layout))
    count = write_video(args.out, frames, 30.0, "h264")
    x, y, w, h = layout.region
    print(_("wrote %(out)s: %(count)s frames, %(width)sx%(height)s at 30 fps, generated "
            "phantoms (not a patient; the demo model is not for clinical use)", out=args.out,
            count=count, width=layout.width, height=layout.height))
    print(_("its image area for [[live.sources]]:") + f" region_x = {x}, region_y = {y}, "
          f"region_width = {w}, region_height = {h}")
    return EXIT_OK


def cmd_live(args: argparse.Namespace) -> int:
    """Run one source; the model chosen for it loaded and checked as the service loads it."""
    from clinibox_common.contracts.manifest import PackageError
    from clinibox_common.redaction import redact_logs
    from firmware_app.live.run import find_source, limit_memory, model_for, run_source
    from firmware_app.live.source import source_secrets
    from firmware_app.models.routing import modality_refusal
    from firmware_app.models.store import package_config
    from firmware_app.service.appliance import load_runner
    from firmware_app.service.viewer_process import die_with_parent
    from firmware_app.settings import box
    from firmware_app.storage.live_frames import claim_source, live_root

    die_with_parent()
    config = box.load(args.config)
    logging.getLogger().setLevel(config.logging.level)
    source = find_source(config, args.source)
    redact_logs(source_secrets(source))  # no log line of this process carries a password
    # one live process a source, held until this one ends: refused before the model loads
    claim_source(live_root(config.state_dir), source.name)
    limit_memory(config.live.memory_mb)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    runner, why = None, ""
    try:
        runner = load_runner(package_config(config, model_for(config, source)))
    except PackageError as exc:
        why = str(exc)
    refusal = modality_refusal(runner.package, source.modality) if runner else None
    if runner is not None and refusal is not None:
        runner.close()
        runner, why = None, refusal.english()
    try:
        run_source(config, source, runner, why, stop)
    finally:
        if runner is not None:
            runner.close()
    return EXIT_OK
