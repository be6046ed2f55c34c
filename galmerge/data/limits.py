"""Bounds on what one cutout may cost, checked before anything is allocated.

A cutout file or body says how big it is before it is decoded: a JPEG/PNG in
its header (read by Pillow without decoding), a FITS file in its header cards
(``NAXISn``, ``BITPIX``), a ``.npy`` file in its array header, an HDF5 dataset
in its shape. :class:`ImageLimits` holds the largest image a run accepts and
:func:`check_declared` compares a declared shape with it, so a 3-KB JPEG that
claims 12000 x 12000 pixels, or a 2,880-byte FITS header that claims 10^12,
is refused (:class:`ImageTooLarge`) instead of eating the machine.

The default is scaled to the model (:meth:`ImageLimits.for_model`): a model
that sees ``size`` pixels of the central ``crop_fraction`` of a cutout needs
cutouts of about ``size / crop_fraction`` pixels across; galmerge accepts
:data:`SIDE_FACTOR` times that, and never less than :data:`MIN_SIDE` across.
``--max-pixels`` raises (or lowers) it.

:func:`open_regular` opens only regular files (never a FIFO, a device or a
socket, which would block a worker forever or read without end) and refuses
files larger than the byte limit.

Torch-free.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from galmerge.errors import GalmergeError

__all__ = [
    "MAX_CHANNELS",
    "MIN_SIDE",
    "SIDE_FACTOR",
    "FileMissing",
    "ImageLimits",
    "ImageTooLarge",
    "NotARegularFile",
    "check_declared",
    "declared_jpeg_png_size",
    "file_problem",
    "open_regular",
]

#: Cutouts up to this many pixels across are always accepted.
MIN_SIDE = 2048
#: Accepted cutouts are up to this many times wider than the model needs.
SIDE_FACTOR = 8
#: Most planes (bands) one cutout may have.
MAX_CHANNELS = 16
#: Bytes per accepted pixel of one plane in a file: up to 6 planes of float64.
BYTES_PER_PIXEL = 48
#: Fixed allowance for headers, WCS and metadata in a file.
HEADER_ALLOWANCE = 4 << 20


class ImageTooLarge(GalmergeError):
    """A cutout declares more pixels or bytes than the run accepts (row status ``too_large``)."""


class FileMissing(GalmergeError):
    """No file at a cutout path (row status ``missing_file``)."""


class NotARegularFile(GalmergeError):
    """A cutout path names a FIFO, device, socket or folder (row status ``unreadable``)."""


@dataclass(frozen=True)
class ImageLimits:
    """The largest cutout a run decodes.

    Attributes:
        max_pixels: most pixels of one plane (height x width).
        max_channels: most planes.
        max_bytes: largest file or body, in bytes (before decoding).
    """

    max_pixels: int = MIN_SIDE * MIN_SIDE
    max_channels: int = MAX_CHANNELS
    max_bytes: int = MIN_SIDE * MIN_SIDE * BYTES_PER_PIXEL + HEADER_ALLOWANCE

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_channels < 1 or self.max_bytes < 1:
            raise GalmergeError("image limits must be positive", hint="e.g. --max-pixels 16777216")

    @classmethod
    def from_pixels(cls, max_pixels: int) -> ImageLimits:
        """Limits for ``max_pixels`` per plane (the byte limit follows)."""
        if max_pixels < 1:
            raise GalmergeError(f"--max-pixels must be at least 1, got {max_pixels}")
        return cls(max_pixels=int(max_pixels),
                   max_bytes=int(max_pixels) * BYTES_PER_PIXEL + HEADER_ALLOWANCE)

    @classmethod
    def for_model(cls, size: int, crop_fraction: float = 1.0, *,
                  cutout_pixels: int | None = None,
                  max_pixels: int | None = None) -> ImageLimits:
        """Limits for a model of ``size`` px seeing the central ``crop_fraction``.

        ``max_pixels`` (``--max-pixels``) overrides the scaled default.
        """
        if max_pixels is not None:
            return cls.from_pixels(max_pixels)
        need = max(size / max(crop_fraction, 1e-3), cutout_pixels or 0)
        side = max(MIN_SIDE, math.ceil(SIDE_FACTOR * need))
        return cls.from_pixels(side * side)

    def describe(self) -> str:
        """The limit in words, for messages."""
        side = math.isqrt(self.max_pixels)
        return f"{self.max_pixels:,} pixels (about {side}x{side})"


def check_declared(shape: tuple[int, ...], limits: ImageLimits, where: str, *,
                   itemsize: int = 4) -> None:
    """Refuse a declared (C, H, W) / (H, W) / (H, W, C) shape beyond ``limits``.

    The two largest axes are taken as the plane, the rest as channels.

    Raises:
        ImageTooLarge: too many pixels, planes or bytes.
        GalmergeError: a negative axis.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise GalmergeError(f"{where}: declares a negative image size {tuple(dims)}")
    if len(dims) < 2:
        return
    plane = sorted(dims)[-2:]
    pixels = plane[0] * plane[1]
    channels = math.prod(dims) // pixels if pixels else 0
    hint = "raise the limit with --max-pixels if such cutouts are real"
    if pixels > limits.max_pixels:
        raise ImageTooLarge(f"{where}: declares {plane[1]}x{plane[0]} = {pixels:,} pixels, "
                            f"more than the limit of {limits.describe()}", hint=hint)
    if channels > limits.max_channels:
        raise ImageTooLarge(f"{where}: declares {channels:,} planes, more than the limit of "
                            f"{limits.max_channels}")
    if math.prod(dims) * max(1, itemsize) > limits.max_bytes:
        raise ImageTooLarge(f"{where}: declares {math.prod(dims) * itemsize:,} bytes of pixels, "
                            f"more than the limit of {limits.max_bytes:,}", hint=hint)


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                       0xCE, 0xCF})


def declared_jpeg_png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG ``IHDR`` or a JPEG ``SOFn`` header, without decoding.

    None when the bytes are neither, or the header is not found (the decoder
    then reports the problem).
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in _JPEG_SOF and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return int(w), int(h)
        if marker in (0xDA, 0xD9):  # scan data or end before a frame header
            return None
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def file_problem(exc: OSError) -> str:
    """A short, stable description of why a file could not be opened."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        return "not found"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENAMETOOLONG:
        return "file name too long"
    if code == errno.ELOOP:
        return "too many levels of symbolic links"
    if code == errno.EMFILE or code == errno.ENFILE:
        return "too many open files"
    if code == errno.EISDIR:
        return "is a folder"
    name = errno.errorcode.get(code or 0, "error")
    return f"cannot open ({name})"


def open_regular(path: str | Path, limits: ImageLimits | None = None) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file within the byte limit.

    The file is opened non-blocking first (so a FIFO does not wait for a
    writer), checked with ``fstat`` (no race with a rename), then handed back
    as an ordinary blocking binary file. The caller closes it.

    Raises:
        FileMissing: no such file (the caller's ``missing_file``).
        NotARegularFile: a FIFO, device, socket or folder.
        ImageTooLarge: larger than ``limits.max_bytes``.
        GalmergeError: permission denied, name too long, other OS errors.
    """
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileMissing(f"{p}: file not found") from None
        raise GalmergeError(f"{Path(p).name}: {file_problem(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO"
                    if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                    else "a device")
            raise NotARegularFile(f"{Path(p).name}: is {kind}, not a regular file")
        if limits is not None and st.st_size > limits.max_bytes:
            raise ImageTooLarge(f"{Path(p).name}: {st.st_size:,} bytes, more than the limit of "
                                f"{limits.max_bytes:,}",
                                hint="raise the limit with --max-pixels if such cutouts are real")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
