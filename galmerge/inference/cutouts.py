"""Where cutouts come from: one small interface for local files, caches and services.

A :class:`CutoutSource` turns :class:`CutoutRequest` s (one per catalogue row)
into :class:`Cutout` s: decoded pixels plus what they are, or a row status
saying why there are none. Sources never raise for a per-row problem; the
pipeline carries the status to the output row.

Torch-free.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galmerge.conventions import FLUX_LINEAR, SDSS_COLOUR_JPEG, ModelConvention
from galmerge.data.images import IMAGE_EXTENSIONS, RawImage, read_image, stable_message
from galmerge.data.limits import (
    FileMissing,
    ImageLimits,
    check_declared,
    open_regular,
)
from galmerge.errors import GalmergeError

# The statuses and row types live in status.py; they are re-exported here for the
# modules that read them beside the sources.
from galmerge.inference.status import (
    BAD_COORDINATES,
    BAD_MODEL_OUTPUT,
    BLANK,
    FETCH_FAILED,
    MISSING_FILE,
    NO_COVERAGE,
    NO_CUTOUT_SOURCE,
    OK,
    STATUSES,
    TOO_LARGE,
    UNREADABLE,
    UNSUPPORTED_PIXELS,
    Cutout,
    CutoutRequest,
    WholeRunError,
    failure_status,
)

__all__ = [
    "BAD_COORDINATES",
    "BAD_MODEL_OUTPUT",
    "BLANK",
    "FETCH_FAILED",
    "MISSING_FILE",
    "NO_COVERAGE",
    "NO_CUTOUT_SOURCE",
    "OK",
    "STATUSES",
    "TOO_LARGE",
    "UNREADABLE",
    "UNSUPPORTED_PIXELS",
    "Cutout",
    "CutoutRequest",
    "CutoutSource",
    "CutoutStack",
    "H5Cube",
    "LocalFileSource",
    "WholeRunError",
    "failure_status",
    "model_limits",
]


def model_limits(convention: object, max_pixels: int | None = None) -> ImageLimits:
    """The image limits for a model's convention (``max_pixels``: ``--max-pixels``)."""
    size = int(getattr(convention, "size", 0) or 0)
    crop = float(getattr(convention, "crop_fraction", 1.0) or 1.0)
    extra = getattr(convention, "extra", None) or {}
    px = extra.get("cutout_pixels") if isinstance(extra, dict) else None
    return ImageLimits.for_model(size, crop, max_pixels=max_pixels,
                                 cutout_pixels=int(str(px)) if str(px).isdigit() else None)


#: Detail of the ``no_cutout_source`` status of a local source.
NO_SOURCE_DETAIL = "no file_loc and no --cutouts (and no service to fetch from)"


class CutoutSource(ABC):
    """Coordinates or locations in, images (or statuses) out."""

    #: Short name used in messages, cache keys and output metadata.
    name: str = "source"
    #: What an unexpected exception while getting one row's cutout means.
    error_status: str = UNREADABLE

    @abstractmethod
    def get(self, request: CutoutRequest) -> Cutout:
        """One cutout; per-row problems become a status, never an exception."""

    def get_many(self, requests: Sequence[CutoutRequest]) -> Iterator[Cutout]:
        """Cutouts for ``requests``, yielded in the same order.

        The default is sequential; network sources override it with bounded
        concurrency.
        """
        for req in requests:
            yield self.get(req)

    def get_stack(self, requests: Sequence[CutoutRequest]) -> CutoutStack | None:
        """Optional fast path: the cutouts of ``requests`` as one array, or None.

        Array-backed sources (HDF5 cubes, tile stores) return a
        :class:`CutoutStack`; the pipeline then converts and batches them
        without per-row Python work. The default (None) means "use
        :meth:`get_many`".
        """
        return None

    def without_location(self) -> tuple[str, str] | None:
        """``(status, detail)`` this source gives *every* request without a ``file_loc``,
        when it can say so without looking at the request; None (the default) when each
        such request must be asked (e.g. fetched by its coordinates). Lets a run set the
        status of millions of location-less rows in bulk."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections, files and threads."""

    def __enter__(self) -> CutoutSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- array fast path ------------------------------------------------------------------

@dataclass
class CutoutStack:
    """Cutouts of many rows as one array: the fast path of array-backed sources.

    Attributes:
        pixels: float32 (k, C, H, W) for the rows whose status is ``ok``, in order.
        status: per request, the row status (``ok`` or the reason there is none).
        detail: per request, a short explanation (``""`` when ok).
        kind, bands: pixel convention and band order of ``pixels``.
        crop_applied: fraction of the standard cutout's field already cropped
            away by whoever stored the pixels (1.0 = the full cutout).
    """

    pixels: np.ndarray
    status: list[str]
    detail: list[str]
    kind: str
    bands: tuple[str, ...]
    crop_applied: float = 1.0


# --- local files ------------------------------------------------------------------------

#: HDF5 files accepted as image cubes (``galmerge simulate`` / dataset files).
H5_EXTENSIONS = (".h5", ".hdf5", ".hdf")


def _is_h5(path: str) -> bool:
    return path.lower().endswith(H5_EXTENSIONS)


class H5Cube:
    """An HDF5 image cube: a galmerge dataset file (``images`` (N, C, S, S) + ``ids``).

    Rows are found by id (the ``ids`` dataset) or, when the file has no ids, by
    the catalogue row number. When the catalogue lists the file's ids in the
    file's order, a chunk is read as one contiguous slice (no id index is
    built); otherwise an id -> index map is built once (memory ~ 100 bytes per
    image).
    """

    def __init__(self, path: str | Path, limits: ImageLimits | None = None) -> None:
        import json as _json

        import h5py

        self.path = Path(path)
        # A regular file (never a FIFO or device, which h5py would wait on forever).
        open_regular(self.path).close()
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise GalmergeError(f"{self.path}: not a readable HDF5 file "
                                f"({stable_message(exc)})") from None
        try:
            self._check_images(limits or ImageLimits())
        except BaseException:
            self._h5.close()
            raise
        self.images = self._h5["images"]
        self.n = int(self.images.shape[0])
        attrs = self._h5.attrs
        if "convention" in attrs:
            conv = ModelConvention.from_dict(_json.loads(attrs["convention"]))
            self.kind, self.bands, self.crop_applied = (conv.pixel_convention, conv.bands,
                                                        conv.crop_fraction)
        else:
            self.kind = str(attrs.get("pixel_convention", FLUX_LINEAR))
            self.bands = tuple(_json.loads(attrs["bands"])) if "bands" in attrs else ()
            self.crop_applied = 1.0
        self._ids = self._h5["ids"] if "ids" in self._h5 else None
        self._index: dict[str, int] | None = None

    def _check_images(self, limits: ImageLimits) -> None:
        import h5py

        images = self._h5.get("images")
        if not isinstance(images, h5py.Dataset) or images.ndim != 4:
            raise GalmergeError(f"{self.path}: no 'images' (N, C, S, S) dataset",
                                hint="write cubes with `galmerge simulate` or "
                                     "galmerge.data.write_dataset")
        if images.dtype.kind not in "uif":
            raise GalmergeError(f"{self.path}: 'images' holds {images.dtype}, not numbers")
        check_declared(tuple(images.shape[1:]), limits, f"{self.path.name} images",
                       itemsize=4)

    def _id_index(self) -> dict[str, int]:
        if self._index is None:
            assert self._ids is not None
            index: dict[str, int] = {}
            step = 1 << 16
            for start in range(0, self.n, step):
                for j, v in enumerate(self._ids.asstr()[start:start + step]):
                    index.setdefault(v, start + j)
            self._index = index
        return self._index

    def locate(self, requests: Sequence[CutoutRequest], *, explicit: Sequence[int | None]
               ) -> tuple[np.ndarray, list[str]]:
        """File indices of ``requests`` (-1 when absent) and why absent."""
        k = len(requests)
        idx = np.full(k, -1, dtype=np.int64)
        why = [""] * k
        todo = [i for i in range(k) if explicit[i] is None]
        for i in range(k):
            e = explicit[i]
            if e is not None:
                if 0 <= e < self.n:
                    idx[i] = e
                else:
                    why[i] = f"index {e} outside {self.path.name} (0..{self.n - 1})"
        if not todo:
            return idx, why
        if self._ids is None:
            for i in todo:
                r = requests[i].row
                if r < self.n:
                    idx[i] = r
                else:
                    why[i] = f"row {r} beyond the {self.n} images of {self.path.name}"
            return idx, why
        # Fast path: the catalogue lists the file's ids in order at the same rows.
        lo = requests[todo[0]].row
        rows = np.array([requests[i].row for i in todo])
        if (rows[0] >= 0 and np.all(np.diff(rows) == 1) and rows[-1] < self.n):
            file_ids = self._ids.asstr()[lo:rows[-1] + 1]
            if all(file_ids[j] == requests[i].id for j, i in enumerate(todo)):
                idx[todo] = rows
                return idx, why
        index = self._id_index()
        for i in todo:
            j = index.get(requests[i].id, -1)
            idx[i] = j
            if j < 0:
                why[i] = f"id {requests[i].id!r} not in {self.path.name}"
        return idx, why

    def read(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Images at file ``indices`` (any order) as float32 (k, C, H, W).

        A contiguous run of float32 images is read straight into ``out`` when
        given (a reused buffer: no allocation, no page faults per batch).
        """
        if len(indices) == 0:
            return np.empty((0, *self.images.shape[1:]), dtype=np.float32)
        lo, hi = int(indices.min()), int(indices.max()) + 1
        if hi - lo == len(indices) and np.all(np.diff(indices) == 1):
            if (out is not None and self.images.dtype == np.float32
                    and out.shape[1:] == self.images.shape[1:] and len(out) >= hi - lo):
                dest = out[:hi - lo]
                self.images.read_direct(dest, np.s_[lo:hi], np.s_[0:hi - lo])
                return dest
            return np.asarray(self.images[lo:hi], dtype=np.float32)
        uniq, inverse = np.unique(indices, return_inverse=True)
        if hi - lo <= 4 * len(uniq):
            block = np.asarray(self.images[lo:hi], dtype=np.float32)[uniq - lo]
        else:
            block = np.asarray(self.images[uniq], dtype=np.float32)
        return block[inverse]

    def close(self) -> None:
        """Close the file."""
        self._h5.close()


class LocalFileSource(CutoutSource):
    """Cutouts from local files: a ``file_loc`` per row, or a cutouts folder / HDF5 cube.

    A row's cutout is, in order of preference:

    1. its ``file_loc`` (absolute, or relative to ``base_dir`` = the catalogue's
       folder); ``cube.h5#N`` means image N of an HDF5 cube;
    2. with ``cutouts`` a folder: ``pattern`` formatted with ``{id}`` and
       ``{row}`` (default: the id with any image extension, ``.jpeg``, ``.jpg``,
       ``.png``, ``.fits``, ``.fits.gz``, ``.fit``, ``.fts``, ``.fits.fz``, ``.npy``);
    3. with ``cutouts`` an HDF5 cube: the image with the row's id (or row number).

    JPEG/PNG, FITS (a cube or one HDU per band), ``.npy`` and HDF5 cubes are
    read (:func:`galmerge.data.images.read_image`). Statuses: ``missing_file``,
    ``unreadable``, ``no_cutout_source``.
    """

    name = "local"
    #: ``get`` may be called from several threads at once (files are opened per call).
    thread_safe = True
    #: Buffers reused by :meth:`get_stack` (must exceed the batches alive at once).
    RING = 8
    #: HDF5 cubes named by ``file_loc`` kept open at once (least recently used closed first).
    MAX_OPEN_CUBES = 32

    def __init__(self, *, base_dir: str | Path | None = None,
                 cutouts: str | Path | None = None, pattern: str | None = None,
                 jpeg_kind: str | None = None, limits: ImageLimits | None = None) -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.cutouts = Path(cutouts) if cutouts is not None else None
        self.pattern = pattern
        self.jpeg_kind = jpeg_kind or SDSS_COLOUR_JPEG
        self.limits = limits or ImageLimits()
        self._cubes: OrderedDict[str, H5Cube] = OrderedDict()
        self._lock = threading.Lock()
        self._ring: list[np.ndarray] = []
        self._ring_pos = 0
        self._dir: Path | None = None
        self._cube: H5Cube | None = None
        self._ext_order = list(IMAGE_EXTENSIONS)
        if self.cutouts is not None:
            if self.cutouts.is_dir():
                self._dir = self.cutouts
            elif self.cutouts.is_file() and _is_h5(str(self.cutouts)):
                self._cube = H5Cube(self.cutouts, self.limits)
            elif self.cutouts.exists():
                raise GalmergeError(f"{self.cutouts}: --cutouts must be a folder or an HDF5 "
                                    "cube (.h5)")
            else:
                raise GalmergeError(f"{self.cutouts}: cutouts folder not found")
        if pattern is not None and "{id}" not in pattern and "{row}" not in pattern:
            raise GalmergeError(f"cutout pattern {pattern!r} has neither {{id}} nor {{row}}",
                                hint="e.g. --pattern '{id}.jpeg'")

    def _open_cube(self, path: str) -> H5Cube:
        """The cube at ``path`` from the bounded set of open cubes (call with the lock held)."""
        cube = self._cubes.get(path)
        if cube is not None:
            self._cubes.move_to_end(path)
            return cube
        cube = H5Cube(path, self.limits)
        self._cubes[path] = cube
        while len(self._cubes) > self.MAX_OPEN_CUBES:
            self._cubes.popitem(last=False)[1].close()
        return cube

    # -- locating ---------------------------------------------------------------------
    def _resolve(self, req: CutoutRequest) -> tuple[str, Path | None, int | None, str]:
        """(mode, path, cube index, why): mode is 'file', 'cube', or a status."""
        if req.file_loc:
            loc = req.file_loc
            index: int | None = None
            if "#" in loc and _is_h5(loc.rsplit("#", 1)[0]):
                loc, frag = loc.rsplit("#", 1)
                try:
                    index = int(frag)
                except ValueError:
                    return UNREADABLE, None, None, f"bad cube index {frag!r} in file_loc"
            p = Path(loc)
            if not p.is_absolute():
                p = self.base_dir / p
            if _is_h5(loc):
                return "cube", p, index, ""
            return "file", p, None, ""
        if self._cube is not None:
            return "cube", self.cutouts, None, ""
        if self._dir is not None:
            ident = req.id
            if not ident and self.pattern is None:
                return MISSING_FILE, None, None, "row has no id to name its cutout file"
            if "/" in ident or "\\" in ident or ident in (".", ".."):
                return MISSING_FILE, None, None, f"id {ident!r} cannot be a file name"
            if self.pattern is not None:
                return "file", self._dir / self.pattern.format(id=ident, row=req.row), None, ""
            # A snapshot: other threads reorder the list while this one searches.
            for k, ext in enumerate(tuple(self._ext_order)):
                cand = self._dir / (ident + ext)
                if cand.is_file():
                    if k:  # try the extension that hit first next time
                        with self._lock:
                            if ext in self._ext_order:
                                self._ext_order.remove(ext)
                                self._ext_order.insert(0, ext)
                    return "file", cand, None, ""
            return MISSING_FILE, None, None, f"no {ident}.* image in {self._dir}"
        return (NO_CUTOUT_SOURCE, None, None, NO_SOURCE_DETAIL)

    def without_location(self) -> tuple[str, str] | None:
        """No ``--cutouts`` folder or cube: a row without ``file_loc`` has no cutout."""
        if self._cube is None and self._dir is None:
            return NO_CUTOUT_SOURCE, NO_SOURCE_DETAIL
        return None

    def get(self, request: CutoutRequest) -> Cutout:
        """One row's cutout (never raises for a per-row problem)."""
        try:
            return self._get(request)
        except WholeRunError:
            raise
        except Exception as exc:  # the firewall: one bad file never ends the run
            status, detail = failure_status(exc, self.error_status)
            return Cutout(status, detail=detail)

    def _get(self, request: CutoutRequest) -> Cutout:
        mode, path, index, why = self._resolve(request)
        if mode == "file":
            assert path is not None
            try:
                raw = read_image(path, jpeg_kind=self.jpeg_kind, limits=self.limits)
            except FileMissing:
                return Cutout(MISSING_FILE, detail=f"{path}: not found")
            return Cutout(OK, raw)
        if mode == "cube":
            assert path is not None
            # One lock for open, lookup and read: h5py serialises HDF5 calls anyway, and
            # a cube is never closed (evicted) while another thread reads it.
            with self._lock:
                if self._cube is not None and path == self.cutouts:
                    cube = self._cube
                else:
                    try:
                        cube = self._open_cube(str(path))
                    except FileMissing:
                        return Cutout(MISSING_FILE, detail=f"{path}: not found")
                idx, whys = cube.locate([request], explicit=[index])
                if idx[0] < 0:
                    return Cutout(MISSING_FILE, detail=whys[0])
                px = cube.read(idx)[0]
            return Cutout(OK, RawImage(px, cube.kind, cube.bands, f"{cube.path}#{idx[0]}"),
                          crop_applied=cube.crop_applied)
        return Cutout(mode, detail=why)

    def get_stack(self, requests: Sequence[CutoutRequest]) -> CutoutStack | None:
        """Vectorised read when every request resolves to ``--cutouts CUBE.h5``."""
        cube = self._cube
        if cube is None or any(r.file_loc for r in requests):
            return None
        idx, why = cube.locate(requests, explicit=[None] * len(requests))
        ok = idx >= 0
        # A small ring of reused buffers: a stack is consumed (scored) long before its
        # buffer comes round again (at most 3 batches wait in the pipeline's queue).
        shape = (len(requests), *cube.images.shape[1:])
        if not self._ring or self._ring[0].shape[0] < shape[0] or \
                self._ring[0].shape[1:] != shape[1:]:
            self._ring = [np.empty(shape, dtype=np.float32) for _ in range(self.RING)]
        buf = self._ring[self._ring_pos]
        self._ring_pos = (self._ring_pos + 1) % self.RING
        pixels = cube.read(idx[ok], out=buf)
        status = [OK if o else MISSING_FILE for o in ok]
        return CutoutStack(pixels, status, why, cube.kind, cube.bands, cube.crop_applied)

    def close(self) -> None:
        """Close open HDF5 cubes."""
        with self._lock:
            for cube in self._cubes.values():
                cube.close()
            self._cubes.clear()
            if self._cube is not None:
                self._cube.close()
                self._cube = None
