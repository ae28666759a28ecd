"""The HTTP MJPEG camera's parser (issue 56): every part bounded before it is read, the
boundary found in the content type or the body's first line, a camera's own forms read."""

from __future__ import annotations

import io

import pytest

from firmware_app.live.mjpeg_http import (
    MAX_HEADER_LINES,
    MultipartJpeg,
    PartRefused,
    StreamEnded,
    max_part_bytes,
    multipart_boundary,
)


class Recorded(io.BytesIO):
    """A body that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = super().readline(size)
        self.taken += len(data)
        return data


def _part(data: bytes, length: bool = True, boundary: bytes = b"b") -> bytes:
    head = b"--" + boundary + b"\r\nContent-Type: image/jpeg\r\n"
    if length:
        head += b"Content-Length: %d\r\n" % len(data)
    return head + b"\r\n" + data + b"\r\n"


def test_parts_with_and_without_a_length_are_read_as_sent():
    jpegs = [b"\xff\xd8one\r\n--x\xff\xd9", b"\xff\xd8two\xff\xd9", b"\xff\xd8three\xff\xd9"]
    body = (b"preamble\r\n" + _part(jpegs[0]) + _part(jpegs[1], length=False)
            + _part(jpegs[2]) + b"--b--\r\n")
    reader = MultipartJpeg(Recorded(body), b"b", 1000)
    parts = reader.parts()
    assert [next(parts) for _ in range(3)] == jpegs
    with pytest.raises(StreamEnded):
        next(parts)


def test_a_part_claiming_more_than_the_bound_is_refused_before_it_is_read():
    body = Recorded(b"--b\r\nContent-Length: 2000000000\r\n\r\n" + b"\0" * 100_000)
    parts = MultipartJpeg(body, b"b", max_part_bytes(8_300_000)).parts()
    with pytest.raises(PartRefused, match="claims 2000000000 bytes"):
        next(parts)
    assert body.taken < 100  # the headers only


@pytest.mark.parametrize(("body", "words"), [
    (b"--b\r\n\r\n" + b"\xff" * 5000, "without a length runs past"),
    (b"--b\r\n" + b"X-Pad: 1\r\n" * (MAX_HEADER_LINES + 1) + b"\r\n", "header lines"),
    (b"--b\r\nX-Long: " + b"a" * 5000 + b"\r\n\r\n", "longer than"),
    (b"no boundary at all, " * 500, "no part boundary"),
    (b"--b\r\nContent-Length: lots\r\n\r\n", "not a number"),
])
def test_what_no_camera_sends_is_refused_within_the_bound(body, words):
    recorded = Recorded(body)
    with pytest.raises(PartRefused, match=words):
        list(MultipartJpeg(recorded, b"b", 1000).parts())
    assert recorded.taken <= 1000 + 5000 + 200


@pytest.mark.parametrize(("content_type", "boundary"), [
    ("multipart/x-mixed-replace;boundary=ffmpeg", b"ffmpeg"),
    ('multipart/x-mixed-replace; boundary="--myboundary"', b"myboundary"),
    ("application/octet-stream", None),
    ("video/mp2t", None),
])
def test_the_boundary_is_read_from_the_content_type(content_type, boundary):
    assert multipart_boundary(content_type) == boundary
