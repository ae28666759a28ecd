"""A live source's credentials never written (issue 56): the one redaction of a URL and of
an FFmpeg error that quotes it, the password_file kept out of the URL until the stream is
opened, and the configuration that would need one refused."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from clinibox_common.redaction import (
    RedactingFilter,
    redact_detail,
    redact_text,
    redact_url,
    url_secrets,
)
from clinibox_common.settings_loader import ConfigError
from firmware_app.live.source import StreamRefused, VideoInput, source_path, source_secrets
from firmware_app.settings.box import from_dict
from firmware_app.settings.live import LiveConfig, LiveSource

CANARY = "Canary7Pw"


@pytest.mark.parametrize(("url", "redacted"), [
    (f"rtsp://admin:{CANARY}@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
    (f"http://admin:{CANARY}@cam/video.mjpg", "http://admin:***@cam/video.mjpg"),
    (f"rtsp://admin:p@ss{CANARY}@cam/x", "rtsp://admin:***@cam/x"),
    (f"srt://enc:9000?mode=caller&passphrase={CANARY}", "srt://enc:9000?mode=caller&passphrase=***"),
    (f"http://cam/video?user=a&password={CANARY}&fps=5", "http://cam/video?user=a&password=***&fps=5"),
    ("rtsp://admin@cam/live", "rtsp://admin@cam/live"),
    ("/dev/video0", "/dev/video0"),
])
def test_a_urls_password_becomes_stars_and_its_user_stays(url, redacted):
    assert redact_url(url) == redacted
    assert CANARY not in redact_url(url)


def test_an_ffmpeg_error_quoting_the_url_and_a_known_secret_anywhere_are_redacted():
    error = f"[Errno 111] Connection refused: 'rtsp://admin:{CANARY}@127.0.0.1:9/x'"
    assert redact_text(error) == "[Errno 111] Connection refused: 'rtsp://admin:***@127.0.0.1:9/x'"
    assert redact_text(f"auth {CANARY} refused", [CANARY]) == "auth *** refused"
    detail = {"error": error, "nested": [f"pw {CANARY}"], "status": 3}
    assert redact_detail(detail, [CANARY]) == {
        "error": "[Errno 111] Connection refused: 'rtsp://admin:***@127.0.0.1:9/x'",
        "nested": ["pw ***"], "status": 3}


def test_url_secrets_finds_the_password_as_written_and_decoded():
    found = url_secrets("rtsp://admin:a%40b@cam/x?passphrase=zz")
    assert {"a%40b", "a@b", "zz"} <= set(found)


def test_a_log_record_and_its_traceback_are_redacted():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter([CANARY]))
    logger = logging.getLogger("test-live-secrets")
    logger.addHandler(handler)
    try:
        logger.warning("opening %s", f"http://u:{CANARY}@cam/")
        try:
            raise OSError(f"refused: rtsp://u:{CANARY}@cam/ and {CANARY}")
        except OSError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "http://u:***@cam/" in text and "OSError: refused" in text
    assert CANARY not in text


def _password_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "camera.password"
    path.write_text(f"{CANARY}\n")
    os.chmod(path, mode)
    return path


def test_the_password_file_is_put_into_the_url_only_when_opened(tmp_path):
    source = LiveSource(name="cam", url="rtsp://admin@127.0.0.1:9/x",
                        password_file=str(_password_file(tmp_path)))
    assert CANARY not in source.url
    assert source_path(source) == f"rtsp://admin:{CANARY}@127.0.0.1:9/x"
    assert CANARY in source_secrets(source)


def test_a_password_file_others_may_read_is_refused_and_not_used(tmp_path):
    source = LiveSource(name="cam", url="rtsp://admin@127.0.0.1:9/x",
                        password_file=str(_password_file(tmp_path, 0o644)))
    with pytest.raises(StreamRefused, match="chmod 600") as refused:
        source_path(source)
    assert CANARY not in str(refused.value)


def test_an_unreachable_source_says_why_without_its_password(tmp_path):
    for source in (LiveSource(name="a", url=f"rtsp://admin:{CANARY}@127.0.0.1:9/x"),
                   LiveSource(name="b", url="http://admin@127.0.0.1:9/x",
                              password_file=str(_password_file(tmp_path)))):
        with pytest.raises(Exception) as failed:
            VideoInput(source, LiveConfig(stall_seconds=1.0))
        assert "refused" in str(failed.value).lower()
        assert CANARY not in str(failed.value)
        assert failed.value.__cause__ is None  # no chained error that quotes the URL


@pytest.mark.parametrize(("table", "words"), [
    ({"url": "rtsp://127.0.0.1/x", "password_file": "/etc/cam.pw"}, "must name the user"),
    ({"url": "/dev/video0", "password_file": "/etc/cam.pw"}, "must name the user"),
    ({"url": "rtsp://u@127.0.0.1/x", "password_file": "cam.pw"}, "absolute path"),
    ({"url": "udp://127.0.0.1:5000", "ca_file": "/etc/ca.pem"}, "ca_file"),
])
def test_a_password_file_or_ca_file_that_cannot_work_is_refused_at_load(table, words):
    with pytest.raises(ConfigError, match=words):
        from_dict({"live": {"sources": [{"name": "cam", **table}]}})


def test_a_refused_url_is_quoted_without_its_password():
    with pytest.raises(ConfigError) as refused:
        from_dict({"live": {"sources": [{"name": "cam", "url": f"srt://u:{CANARY}@enc:9000"}]}})
    assert "srt://u:***@enc:9000" in str(refused.value)
    assert CANARY not in str(refused.value)
