"""The protobuf wire format of ONNX files, the few parts galmerge needs without `onnx`.

The inference image has no `onnx` package. Two jobs need the format anyway:

* :func:`read_metadata_props` reads a model's ``metadata_props`` (ModelProto
  field 14) and skips everything else — the graph and its weights are stepped
  over, never parsed — so ``galmerge fetch`` learns a model's geometry without
  an ONNX Runtime session;
* :func:`field_varint` / :func:`field_bytes` write fields, from which
  ``galmerge doctor`` builds its probe model.

Torch-free, pure Python.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from galmerge.errors import GalmergeError

__all__ = ["field_bytes", "field_varint", "read_metadata_props", "varint"]

#: ModelProto.metadata_props (repeated StringStringEntryProto: key = 1, value = 2).
METADATA_PROPS = 14
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    """``value`` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    """A varint field."""
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (bytes, a string or an embedded message)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint((number << 3) | _BYTES) + varint(len(data)) + data


def _read_varint(fh: BinaryIO) -> int | None:
    """The next varint, or None at the end of the file."""
    value = shift = 0
    while True:
        b = fh.read(1)
        if not b:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _entry(payload: bytes) -> tuple[str, str]:
    """A StringStringEntryProto's ``(key, value)``."""
    fields = {1: "", 2: ""}
    fh = io.BytesIO(payload)
    while (tag := _read_varint(fh)) is not None:
        if tag & 7 != _BYTES:
            raise ValueError("metadata entry with a non-string field")
        size = _read_varint(fh) or 0
        fields[tag >> 3] = fh.read(size).decode("utf-8")
    return fields[1], fields[2]


def _metadata_props(fh: BinaryIO, size: int) -> dict[str, str]:
    out: dict[str, str] = {}
    while (tag := _read_varint(fh)) is not None:
        kind = tag & 7
        if kind == _VARINT:
            _read_varint(fh)
            continue
        if kind in (_FIXED64, _FIXED32):
            length = 8 if kind == _FIXED64 else 4
        elif kind == _BYTES:
            length = _read_varint(fh) or 0
        else:
            raise ValueError(f"unexpected wire type {kind}")
        if fh.tell() + length > size:
            raise ValueError("field runs past the end of the file")
        if tag >> 3 == METADATA_PROPS and kind == _BYTES:
            key, value = _entry(fh.read(length))
            out[key] = value
        else:
            fh.seek(length, 1)  # the graph, its weights, ...: stepped over
    return out


def read_metadata_props(path: str | Path) -> dict[str, str]:
    """An ONNX model's ``metadata_props`` as a dict, read without `onnx` or ONNX Runtime.

    Raises:
        GalmergeError: the file is missing or is not an ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        raise GalmergeError(f"{p}: model file not found",
                            hint="pass --model PATH.onnx (see `galmerge export`)")
    try:
        with p.open("rb") as fh:
            return _metadata_props(fh, p.stat().st_size)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GalmergeError(f"{p}: not a loadable ONNX model ({exc})",
                            hint="pass a .onnx file written by `galmerge export`") from None
