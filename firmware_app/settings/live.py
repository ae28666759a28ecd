"""The ``[live]`` section and its ``[[live.sources]]`` tables: bedside live video.

Each source is one video input a clinic's ultrasound or endoscope feeds: a V4L2 capture
card (``/dev/videoN``), a network stream (``rtsp://``, ``udp://`` MPEG-TS, ``http://``
MJPEG) or a video file (``file://`` or a path: demonstrations and tests). The box reads it
with PyAV (FFmpeg) in a process of its own per source (``firmware_app/live/``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from clinibox_common.i18n import gettext
from clinibox_common.redaction import redact_url, url_secrets
from clinibox_common.settings_loader import ConfigError, in_range, names, one_of, setting
from firmware_app.settings.checks import check_absolute_or_empty

#: a source's name: it names its folder and its page (``/live/<name>``)
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
#: the URL schemes a source may use (``file`` and a bare path: a video file)
SOURCE_SCHEMES = ("file", "rtsp", "rtsps", "udp", "rtp", "http", "https", "tls")
#: the schemes that carry TLS: the sender proves who it is with a certificate (``ca_file``)
TLS_SCHEMES = ("https", "tls")
#: V4L2 pixel formats a capture card may be asked for ('' lets the card choose)
PIXEL_FORMATS = ("", "mjpeg", "yuyv422", "nv12")


def _source_name(value: Any) -> str | None:
    """1-32 lower-case letters, digits or dashes, a letter or digit first."""
    if not _SOURCE_NAME.match(value):
        return gettext("must be 1-32 lower-case letters, digits or dashes (a letter or digit "
                       "first), got %(value)s", value=repr(value))
    return None


def _source_url(value: Any) -> str | None:
    """a V4L2 device (/dev/videoN), a path, or a URL of a scheme in SOURCE_SCHEMES."""
    if not value:
        return gettext("must name a device, a file or a stream URL")
    if value.startswith("/"):
        return None
    scheme = urlsplit(value).scheme.lower()
    if scheme not in SOURCE_SCHEMES:
        return gettext("must be %(device)s, a path, or a URL of %(schemes)s; got %(value)s",
                       device="/dev/videoN", schemes=names(SOURCE_SCHEMES),
                       value=repr(redact_url(value)))
    return None


def _addresses(value: Any) -> str | None:
    """IPv4 or IPv6 addresses."""
    for address in value:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return gettext("must list IP addresses (the encoder's), got %(value)s",
                           value=repr(address))
    return None


def _video_size(value: Any) -> str | None:
    """'' or WIDTHxHEIGHT."""
    if value and not re.fullmatch(r"[1-9][0-9]{1,4}x[1-9][0-9]{1,4}", value):
        return gettext("must be %(form)s (e.g. %(example)s) or empty, got %(value)s",
                       form="WIDTHxHEIGHT", example="1280x720", value=repr(value))
    return None


@dataclass
class LiveSource:
    """One live video source and what reads it."""

    name: str = setting(_source_name, "a name for its page and its folder (unique)", "us-1")
    url: str = setting(_source_url, "/dev/videoN (a capture card), a video file, or "
                       "rtsp://, udp:// (MPEG-TS), http:// (MJPEG) stream, or tls:// "
                       "(MPEG-TS over TLS: the sender proven by its certificate, ca_file); "
                       "write a password in password_file, not here", "/dev/video0")
    password_file: str = setting(check_absolute_or_empty, "network streams: a file (mode 0600, "
                                 "read by the service alone) holding the password of the "
                                 "url's user; put into the URL only when the stream is "
                                 "opened, never shown or logged", "")
    ca_file: str = setting(check_absolute_or_empty, "https:// and tls:// streams: the "
                           "CA (PEM) that signed the sender's certificate; the sender's "
                           "certificate is verified and a stream from any other is refused. "
                           "Empty: not verified", "")
    label: str = setting(doc="what the tablet calls it (e.g. the room's ultrasound)", default="")
    modality: str = setting(doc="what the picture shows, in DICOM words: US (ultrasound) or "
                            "ES (endoscopy)", default="US")
    model: str = setting(doc="the package that reads it; empty: the routing rules decide by "
                         "modality, as for a pushed image", default="")
    video_size: str = setting(_video_size, "capture cards: the size to ask for (WIDTHxHEIGHT); "
                              "empty lets the card choose", "")
    framerate: int = setting(in_range(0, 240), "capture cards: frames a second to ask for; 0 "
                             "lets the card choose", 0)
    pixel_format: str = setting(one_of(*PIXEL_FORMATS), "capture cards: the pixel format to "
                                "ask for (mjpeg, yuyv422, nv12); empty lets the card choose",
                                "")
    region_x: int = setting(in_range(0, 16384), "the image area on the captured screen: its "
                            "left edge in pixels (the machine's menus left out)", 0)
    region_y: int = setting(in_range(0, 16384), "the image area: its top edge", 0)
    region_width: int = setting(in_range(0, 16384), "the image area: its width; 0 takes the "
                                "whole frame", 0)
    region_height: int = setting(in_range(0, 16384), "the image area: its height; 0 takes the "
                                 "whole frame", 0)
    measured_on: str = setting(_video_size, "the picture size (WIDTHxHEIGHT) the image area "
                               "and the scale were measured on; a picture of another size "
                               "scales them. Empty: video_size, else the first picture seen",
                               "")
    mm_per_pixel: float = setting(in_range(0, 10), "the image area's scale (mm a pixel, as the "
                                  "machine's depth scale shows it); 0: sizes are not "
                                  "measured in mm", 0.0)
    allowed_senders: list[str] = setting(_addresses, "UDP and RTP streams: the addresses "
                                         "packets are taken from (the encoder's); others "
                                         "are ignored. A filter, not authentication: anyone "
                                         "on the network can forge a sender's address (use "
                                         "tls:// with ca_file). Empty: any sender",
                                         factory=list)
    rtsp_transport: str = setting(one_of("tcp", "udp"), "RTSP streams: RTP over the RTSP "
                                  "connection (tcp: nothing lost on a busy network) or over "
                                  "UDP (for cameras that offer only that)", "tcp")
    loop: bool = setting(doc="video files: start again at the end (demonstrations)",
                         default=False)

    @property
    def kind(self) -> str:
        """``v4l2``, ``file`` or ``stream``."""
        if self.url.startswith(("/dev/video", "/dev/v4l/")):  # by-id/by-path links too
            return "v4l2"
        if self.url.startswith("/") or urlsplit(self.url).scheme.lower() == "file":
            return "file"
        return "stream"

    @property
    def reference_size(self) -> tuple[int, int] | None:
        """(width, height) the region and scale were measured on, when the source says."""
        size = self.measured_on or self.video_size
        if not size:
            return None
        width, height = size.split("x")
        return int(width), int(height)

    @property
    def secrets(self) -> list[str]:
        """The secrets the url itself carries (a password, a passphrase): never written."""
        return url_secrets(self.url)

    @property
    def region(self) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of the image area, or None for the whole frame."""
        if self.region_width and self.region_height:
            return (self.region_x, self.region_y, self.region_width, self.region_height)
        return None


#: the documentation line of ``[live] sources`` (shown as a commented example table)
SOURCES_DOC = ("the sources: one [[live.sources]] table each; none by default (live mode is "
               "off)")


@dataclass
class LiveConfig:
    """Bedside live mode: lesion hints on an ultrasound's or endoscope's live video."""

    hold_frames: int = setting(in_range(1, 100), "a lesion seen on this many analysed frames "
                               "in a row is shown, and the hint says to hold the probe", 3)
    max_fps: float = setting(in_range(1, 120), "the most frames a second analysed (newest "
                             "first: a frame not taken in time is dropped); above the "
                             "source's own rate, so that no frame waits for its turn", 60.0)
    ring_seconds: float = setting(in_range(1, 60), "seconds of frames the page may step back "
                                  "through", 10.0)
    clip_seconds: float = setting(in_range(1, 30), "seconds a clip keeps (at most)", 5.0)
    stall_seconds: float = setting(in_range(0.5, 600), "no frame for this long: the source is "
                                   "stalled, and opened again", 3.0)
    frozen_seconds: float = setting(in_range(0.5, 600), "an unchanging picture for this long "
                                    "is frozen: nothing is analysed until it moves", 2.0)
    max_megapixels: float = setting(in_range(0.1, 40), "largest frame decoded (megapixels); a "
                                    "stream claiming more is refused before decoding", 8.3)
    memory_mb: int = setting(in_range(256, 65536), "address space a source's live process "
                             "may take (its decoder's bound; a 720p source with a session "
                             "open peaks near 900 MB)", 2048)
    jpeg_quality: int = setting(in_range(30, 95), "quality of the frames the page shows", 80)
    display_width: int = setting(in_range(0, 7680), "the frames the page shows are at most this "
                                 "wide (a tablet's screen; the clinic's Wi-Fi carries half the "
                                 "bytes of 720p at 960); 0 shows them as captured", 960)
    key_frames_per_session: int = setting(in_range(0, 1000), "most key frames a session keeps "
                                          "by itself (the requested ones besides)", 20)
    sources: list[LiveSource] = setting(doc=SOURCES_DOC, factory=list)

    def source(self, name: str) -> LiveSource | None:
        """The source called ``name``, if one is."""
        return next((source for source in self.sources if source.name == name), None)


def check_sources(sources: list[LiveSource]) -> None:
    """Normalise the sources' modalities (upper case); a password_file needs a stream URL
    that names its user, and a ca_file a TLS stream (ConfigError)."""
    for source in sources:
        source.modality = source.modality.strip().upper()
        parts = urlsplit(source.url)
        where = f"[[live.sources]] {source.name}"
        if source.password_file and (source.kind != "stream" or not parts.username):
            raise ConfigError(gettext("%(where)s password_file: the url must name the user "
                                      "(%(example)s)", where=where,
                                      example="rtsp://USER@host/stream"))
        if source.ca_file and parts.scheme.lower() not in TLS_SCHEMES:
            raise ConfigError(gettext("%(where)s ca_file: needs a url of %(schemes)s",
                                      where=where, schemes=names(TLS_SCHEMES)))


def describe_source_example() -> str:
    """A commented ``[[live.sources]]`` table with every key (the example config's end)."""
    import dataclasses

    from clinibox_common.settings_loader import toml_value

    lines = ["# Live sources: none by default (live mode is off). One table per video input",
             "# (name and url are required):",
             "# [[live.sources]]"]
    example = LiveSource(name="us-1", url="/dev/video0", label="Ultrasound, room 1",
                         video_size="1280x720", framerate=30, pixel_format="mjpeg")
    for spec in dataclasses.fields(example):
        lines.append(f"# # {spec.metadata.get('doc', '')}")
        lines.append(f"# {spec.name} = {toml_value(getattr(example, spec.name))}")
    return "\n".join(lines)
