"""The galmerge dataset file, and readers for the other layouts users have.

One on-disk format is read by every stage (documented in ``docs/dataset-format.md``):
an HDF5 file with

* ``images``  (N, C, S, S) float32 — pixels in the file's pixel convention;
* ``labels``  (N,) int8 — 1 merger, 0 non-merger, -1 unknown;
* ``split``   (N,) ASCII — ``train`` / ``val`` / ``test`` (70/10/20, seeded, as in the paper §4.1);
* ``ids``     (N,) UTF-8 strings;
* attributes ``format`` = ``galmerge-dataset``, ``format_version``, ``convention``
  (JSON :class:`~galmerge.conventions.ModelConvention`), ``bands``,
  ``pixel_convention``, ``split_seed`` and ``provenance`` (JSON).

Readers also accept the paper's own published arrays (paired ``.npy`` files
``..._X_...npy`` / ``..._y_...npy``) and a directory of JPEG/PNG/FITS cutouts
with an optional labels CSV. All readers stream: images are read by index,
a batch at a time, never the whole file.

Torch-free.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galmerge import __version__
from galmerge.conventions import FLUX_LINEAR, SDSS_COLOUR_JPEG, ModelConvention
from galmerge.data.images import IMAGE_EXTENSIONS, image_suffix, prepare, read_image
from galmerge.errors import GalmergeError

__all__ = [
    "DEFAULT_FRACTIONS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ID_COLUMNS",
    "LABEL_COLUMNS",
    "SPLITS",
    "Dataset",
    "DatasetWriter",
    "H5Dataset",
    "ImageDirDataset",
    "NpyPairDataset",
    "find_label_partner",
    "make_split",
    "open_dataset",
    "validate_pixels",
    "write_dataset",
]

FORMAT_NAME = "galmerge-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
#: 70% : 10% : 20% train/validation/test, as in the paper (§4.1, §4.2.2).
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
LABEL_MERGER, LABEL_NONMERGER, LABEL_UNKNOWN = 1, 0, -1
_VALIDATE_CHUNK = 256


def make_split(n: int, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Seeded train/val/test assignment of ``n`` items (array of ``'train'|'val'|'test'``)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    split = np.empty(n, dtype="<U5")
    split[order[:n_train]] = "train"
    split[order[n_train:n_train + n_val]] = "val"
    split[order[n_train + n_val:]] = "test"
    return split


@dataclass
class Dataset:
    """A labelled or unlabelled set of cutouts, read lazily.

    Subclasses implement :meth:`_read` (sorted, unique indices -> images).
    """

    path: str
    convention: ModelConvention
    labels: np.ndarray
    split: np.ndarray
    ids: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def is_labelled(self) -> bool:
        """True when every item has a 0/1 label."""
        return bool(len(self) and np.all(self.labels >= 0))

    def indices(self, split: str | None = None) -> np.ndarray:
        """Indices of one split (``None`` = all items)."""
        if split is None or split == "all":
            return np.arange(len(self))
        if split not in SPLITS:
            raise GalmergeError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == split)

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Images at ``indices`` (any order) as float32 (k, C, S, S)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            s = self.convention.size
            return np.empty((0, len(self.convention.bands), s, s), dtype=np.float32)
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"index out of range for {self.path} (n={len(self)})")
        uniq, inverse = np.unique(idx, return_inverse=True)
        return self._read(uniq)[inverse]

    def iter_batches(
        self, batch_size: int, indices: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, images)`` batches in the given order."""
        idx = self.indices() if indices is None else np.asarray(indices)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            yield chunk, self.read(chunk)

    def _read(self, sorted_unique: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One-line summary."""
        lab = self.labels
        return (f"{self.path}: {len(self)} images {self.convention.pixel_convention} "
                f"[{','.join(self.convention.bands)}] {self.convention.size}px; "
                f"mergers {int((lab == 1).sum())}, non-mergers {int((lab == 0).sum())}, "
                f"unlabelled {int((lab < 0).sum())}")


# --- HDF5 ---------------------------------------------------------------------

class H5Dataset(Dataset):
    """A galmerge HDF5 dataset file (see module docstring)."""

    def __init__(self, path: str | Path) -> None:
        import h5py

        p = Path(path)
        if not p.is_file():
            raise GalmergeError(f"{p}: file not found")
        try:
            self._h5 = h5py.File(p, "r")
        except OSError as exc:
            raise GalmergeError(f"{p}: not a readable HDF5 file ({exc})") from None
        h5 = self._h5
        try:
            for key in ("images", "labels"):
                if key not in h5:
                    raise GalmergeError(
                        f"{p}: HDF5 dataset {key!r} is missing",
                        hint="write it with `galmerge simulate` or galmerge.data.write_dataset",
                    )
            images = h5["images"]
            _check_image_array(images.shape, images.dtype, str(p))
            n = images.shape[0]
            labels = _check_labels(np.asarray(h5["labels"][...]), n, str(p))
            split = (np.asarray(h5["split"][...]).astype("<U5") if "split" in h5
                     else make_split(n, int(h5.attrs.get("split_seed", 1))))
            ids = (np.asarray(h5["ids"].asstr()[...], dtype=object) if "ids" in h5
                   else np.array([str(i) for i in range(n)], dtype=object))
            conv = _convention_from_attrs(h5.attrs, images.shape, str(p))
            prov = json.loads(h5.attrs.get("provenance", "{}"))
        except GalmergeError:
            h5.close()
            raise
        super().__init__(str(p), conv, labels, split, ids, prov)
        self._images = images

    def _read(self, sorted_unique: np.ndarray) -> np.ndarray:
        # h5py fancy indexing needs increasing indices; contiguous runs are fast.
        lo, hi = int(sorted_unique[0]), int(sorted_unique[-1]) + 1
        if hi - lo == len(sorted_unique):
            out = self._images[lo:hi]
        elif hi - lo <= 4 * len(sorted_unique):
            out = self._images[lo:hi][sorted_unique - lo]
        else:
            out = self._images[sorted_unique]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        """Close the HDF5 file."""
        if getattr(self, "_h5", None) is not None:
            self._h5.close()


def _convention_from_attrs(attrs: Any, shape: tuple[int, ...], where: str) -> ModelConvention:
    if "convention" in attrs:
        conv = ModelConvention.from_dict(json.loads(attrs["convention"]))
    else:
        bands = tuple(json.loads(attrs["bands"])) if "bands" in attrs else _default_bands(shape[1])
        conv = ModelConvention(
            pixel_convention=str(attrs.get("pixel_convention", FLUX_LINEAR)),
            bands=bands, size=int(shape[-1]))
    if conv.size != shape[-1] or len(conv.bands) != shape[1]:
        raise GalmergeError(
            f"{where}: attributes say {len(conv.bands)} bands of {conv.size}px but images are "
            f"{shape[1:]}")
    return conv


def _default_bands(c: int) -> tuple[str, ...]:
    return tuple(f"ch{i}" for i in range(c))


def _check_image_array(shape: tuple[int, ...], dtype: Any, where: str) -> None:
    if len(shape) != 4 or shape[2] != shape[3] or shape[1] not in (1, 3, 4):
        raise GalmergeError(
            f"{where}: images have shape {tuple(shape)}, expected (N, 3, S, S)",
            hint="store channels first, e.g. (N, 3, 75, 75)",
        )
    if shape[0] == 0:
        raise GalmergeError(f"{where}: dataset is empty (0 images)")
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise GalmergeError(
            f"{where}: images have dtype {dtype}, expected float32",
            hint="convert the array with .astype('float32')",
        )


def _check_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise GalmergeError(f"{where}: labels have shape {labels.shape}, expected ({n},)")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            raise GalmergeError(f"{where}: labels must be integers 1, 0 or -1")
    elif labels.dtype.kind not in "iub":
        raise GalmergeError(f"{where}: labels have dtype {labels.dtype}, expected int8")
    lab = labels.astype(np.int8)
    bad = ~np.isin(lab, (LABEL_MERGER, LABEL_NONMERGER, LABEL_UNKNOWN))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise GalmergeError(
            f"{where}: label {labels[i]!r} at row {i} is not 1 (merger), 0 or -1 (unknown)")
    return lab


def validate_pixels(ds: Dataset, *, chunk: int = _VALIDATE_CHUNK) -> None:
    """Stream through every image; raise on NaN/inf pixels (names file and row)."""
    for idx, batch in ds.iter_batches(chunk):
        finite = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
        if not finite.all():
            row = int(idx[np.flatnonzero(~finite)[0]])
            raise GalmergeError(
                f"{ds.path}: image {row} (id {ds.ids[row]}) has NaN or infinite pixels",
                hint="replace or drop bad images before training",
            )


# --- writing ----------------------------------------------------------------

class DatasetWriter:
    """Stream images into a new galmerge HDF5 file, atomically.

    Usage::

        with DatasetWriter(path, n, convention, labels=..., ids=...) as w:
            w.write(0, first_chunk)
            ...

    The file is written to ``path + '.tmp'`` and renamed on success, so a
    killed run never leaves a half-written dataset under the final name.
    """

    def __init__(
        self, path: str | Path, n: int, convention: ModelConvention, *,
        labels: np.ndarray, ids: Sequence[str] | None = None, split: np.ndarray | None = None,
        split_seed: int = 1, provenance: dict[str, Any] | None = None,
        chunk_images: int = 16,
    ) -> None:
        import h5py

        if n <= 0:
            raise GalmergeError(f"{path}: refusing to write an empty dataset")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        c, s = len(convention.bands), convention.size
        labels = _check_labels(np.asarray(labels), n, str(path))
        self._h5 = h5py.File(self._tmp, "w")
        self._images = self._h5.create_dataset(
            "images", shape=(n, c, s, s), dtype="float32",
            chunks=(min(chunk_images, n), c, s, s))
        self._h5.create_dataset("labels", data=labels.astype(np.int8))
        sp = make_split(n, split_seed) if split is None else np.asarray(split).astype("<U5")
        self._h5.create_dataset("split", data=sp.astype("S5"))
        id_list = [str(i) for i in (ids if ids is not None else range(n))]
        self._h5.create_dataset("ids", data=id_list, dtype=h5py.string_dtype("utf-8"))
        a = self._h5.attrs
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["convention"] = json.dumps(convention.to_dict(), sort_keys=True)
        a["bands"] = json.dumps(list(convention.bands))
        a["pixel_convention"] = convention.pixel_convention
        a["split_seed"] = int(split_seed)
        prov = {"galmerge_version": __version__, **(provenance or {})}
        a["provenance"] = json.dumps(prov, sort_keys=True, default=str)
        self._n = n
        self._written = 0

    def write(self, start: int, images: np.ndarray) -> None:
        """Write ``images`` (k, C, S, S) at rows ``start:start+k``."""
        k = images.shape[0]
        if start < 0 or start + k > self._n:
            raise ValueError("write outside the dataset")
        self._images[start:start + k] = images.astype(np.float32, copy=False)
        self._written += k

    def write_extra(self, name: str, values: np.ndarray) -> None:
        """Store a per-image column ``extra/<name>`` (N, ...) beside the images.

        Used for simulation truth (merger stage, separation, mass ratio, ...);
        readers of the format ignore the ``extra`` group.
        """
        arr = np.asarray(values)
        if arr.shape[:1] != (self._n,):
            raise ValueError(f"extra column {name!r} must have {self._n} rows, got {arr.shape}")
        self._h5.require_group("extra").create_dataset(name, data=arr)

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._h5.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard the temporary file."""
        self._h5.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dataset(
    path: str | Path, images: np.ndarray, labels: np.ndarray, convention: ModelConvention,
    *, ids: Sequence[str] | None = None, split: np.ndarray | None = None, split_seed: int = 1,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write an in-memory array as a galmerge dataset file (atomic)."""
    _check_image_array(images.shape, images.dtype, str(path))
    with DatasetWriter(path, images.shape[0], convention, labels=labels, ids=ids, split=split,
                       split_seed=split_seed, provenance=provenance) as w:
        w.write(0, images)
    return Path(path)


# --- the paper's .npy pairs -------------------------------------------------------

class NpyPairDataset(Dataset):
    """Paired ``X`` (N, C, S, S) and ``y`` (N,) ``.npy`` arrays, memory-mapped."""

    def __init__(
        self, x_path: str | Path, y_path: str | Path | None, *, split_seed: int = 1,
        bands: tuple[str, ...] | None = None, pixel_convention: str = FLUX_LINEAR,
    ) -> None:
        xp = Path(x_path)
        if not xp.is_file():
            raise GalmergeError(f"{xp}: file not found")
        try:
            x = np.load(xp, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise GalmergeError(f"{xp}: not a readable .npy array ({exc})") from None
        _check_image_array(x.shape, x.dtype, str(xp))
        n = x.shape[0]
        if y_path is None:
            labels = np.full(n, LABEL_UNKNOWN, dtype=np.int8)
        else:
            yp = Path(y_path)
            if not yp.is_file():
                raise GalmergeError(f"{yp}: label file not found")
            try:
                y = np.load(yp, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise GalmergeError(f"{yp}: not a readable .npy array ({exc})") from None
            if y.ndim == 2 and y.shape[1] == 2:  # one-hot (non-merger, merger)
                y = y.argmax(axis=1)
            labels = _check_labels(np.asarray(y).reshape(-1) if y.ndim == 2 and 1 in y.shape
                                   else y, n, str(yp))
        conv = ModelConvention(pixel_convention=pixel_convention,
                               bands=bands or _default_bands(x.shape[1]), size=int(x.shape[-1]))
        super().__init__(str(xp), conv, labels, make_split(n, split_seed),
                         np.array([str(i) for i in range(n)], dtype=object),
                         {"x": str(xp), "y": str(y_path) if y_path else None})
        self._x = x

    def _read(self, sorted_unique: np.ndarray) -> np.ndarray:
        return np.asarray(self._x[sorted_unique], dtype=np.float32)


def find_label_partner(x_path: Path) -> Path | None:
    """The ``y`` file of a paper-style ``X`` file, e.g. ``..._SOURCE_X_...npy``."""
    name = x_path.name
    for pat, rep in ((r"_X_", "_y_"), (r"_X\.", "_y."), (r"^X_", "y_"), (r"^X\.", "y."),
                     (r"_x_", "_y_"), (r"^x_", "y_")):
        cand = re.sub(pat, rep, name, count=1)
        if cand != name and (x_path.parent / cand).is_file():
            return x_path.parent / cand
    return None


# --- a directory of cutouts ---------------------------------------------------

ID_COLUMNS = ("objid", "id_str", "id", "dr7objid", "objID", "name")
LABEL_COLUMNS = ("merger", "label", "is_merger", "y")


class ImageDirDataset(Dataset):
    """A directory of JPEG/PNG/FITS/.npy cutouts, optionally with a labels CSV.

    Files are sorted by name; an item's id is its file name without extension.
    Images are decoded on demand, centre-cropped by ``crop_fraction`` and
    area-resized to ``size``.
    """

    def __init__(
        self, directory: str | Path, *, labels_csv: str | Path | None = None, size: int = 75,
        crop_fraction: float = 1.0, split_seed: int = 1, jpeg_kind: str = SDSS_COLOUR_JPEG,
    ) -> None:
        d = Path(directory)
        if not d.is_dir():
            raise GalmergeError(f"{d}: directory not found")
        files = sorted(p for p in d.iterdir()
                       if p.is_file() and image_suffix(p) in IMAGE_EXTENSIONS)
        if not files:
            raise GalmergeError(f"{d}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
        ids = np.array([p.name[: -len(image_suffix(p))] for p in files], dtype=object)
        n = len(files)
        labels = np.full(n, LABEL_UNKNOWN, dtype=np.int8)
        if labels_csv is not None:
            labels = _labels_from_csv(Path(labels_csv), ids)
        self._files = files
        self._jpeg_kind = jpeg_kind
        first = read_image(files[0], jpeg_kind=jpeg_kind)
        conv = ModelConvention(
            pixel_convention=first.kind, bands=first.bands or _default_bands(first.pixels.shape[0]),
            size=size, crop_fraction=crop_fraction,
            stretch="SDSS ImgCutout colour JPEG (Lupton et al. 2004 asinh)"
            if first.kind == SDSS_COLOUR_JPEG else "none")
        prov = {"directory": str(d), "labels_csv": str(labels_csv) if labels_csv else None}
        super().__init__(str(d), conv, labels, make_split(n, split_seed), ids, prov)

    def _read(self, sorted_unique: np.ndarray) -> np.ndarray:
        c, s = len(self.convention.bands), self.convention.size
        out = np.empty((len(sorted_unique), c, s, s), dtype=np.float32)
        for j, i in enumerate(sorted_unique):
            raw = read_image(self._files[int(i)], jpeg_kind=self._jpeg_kind)
            if raw.pixels.shape[0] != c:
                raise GalmergeError(
                    f"{self._files[int(i)]}: has {raw.pixels.shape[0]} channels, "
                    f"the other images have {c}")
            img = prepare(raw.pixels, s, self.convention.crop_fraction)
            if not np.isfinite(img).all():
                raise GalmergeError(f"{self._files[int(i)]}: image has NaN or infinite pixels")
            out[j] = img
        return out


def _labels_from_csv(path: Path, ids: np.ndarray) -> np.ndarray:
    import pandas as pd

    if not path.is_file():
        raise GalmergeError(f"{path}: labels file not found")
    try:
        df = pd.read_csv(path, dtype=str)
    except (ValueError, OSError) as exc:
        raise GalmergeError(f"{path}: cannot parse labels CSV ({exc})") from None
    lower = {c.lower(): c for c in df.columns}
    id_col = next((lower[c.lower()] for c in ID_COLUMNS if c.lower() in lower), None)
    lab_col = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    if id_col is None or lab_col is None:
        raise GalmergeError(
            f"{path}: needs an id column ({', '.join(ID_COLUMNS)}) and a label column "
            f"({', '.join(LABEL_COLUMNS)}); found {', '.join(df.columns)}")
    table = dict(zip(df[id_col].str.strip(), df[lab_col].str.strip(), strict=True))
    labels = np.full(len(ids), LABEL_UNKNOWN, dtype=np.int8)
    for i, ident in enumerate(ids):
        v = table.get(str(ident))
        if v is None or v == "":
            continue
        try:
            val = int(float(v))
        except ValueError:
            raise GalmergeError(f"{path}: label {v!r} for id {ident} is not 1, 0 or -1") from None
        if val not in (1, 0, -1):
            raise GalmergeError(f"{path}: label {v!r} for id {ident} is not 1, 0 or -1")
        labels[i] = val
    return labels


# --- dispatch -------------------------------------------------------------------

def open_dataset(
    spec: str | Path, *, labels: str | Path | None = None, size: int = 75,
    crop_fraction: float = 1.0, split_seed: int = 1, validate: bool = True,
) -> Dataset:
    """Open any dataset layout galmerge reads.

    Args:
        spec: an ``.h5``/``.hdf5`` galmerge dataset; an ``X`` ``.npy`` file (its
            ``y`` partner found by name, or given as ``labels``); or a directory
            of cutouts (labels from ``labels``, ``<dir>_labels.csv`` beside it, or
            ``labels.csv`` inside it).
        labels: explicit labels file (``.npy`` for arrays, CSV for directories).
        size, crop_fraction: for image directories.
        split_seed: seed of the 70/10/20 split for layouts that do not store one.
        validate: stream through arrays once and refuse NaN/inf pixels.

    Raises:
        GalmergeError: with a one-line message naming the file and the problem.
    """
    p = Path(spec)
    if not p.exists():
        raise GalmergeError(f"{p}: no such file or directory")
    ds: Dataset
    if p.is_dir():
        lab = Path(labels) if labels else None
        if lab is None:
            for cand in (p.parent / f"{p.name}_labels.csv", p / "labels.csv"):
                if cand.is_file():
                    lab = cand
                    break
        ds = ImageDirDataset(p, labels_csv=lab, size=size, crop_fraction=crop_fraction,
                             split_seed=split_seed)
        return ds
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        ds = H5Dataset(p)
    elif suffix == ".npy":
        y = Path(labels) if labels else find_label_partner(p)
        ds = NpyPairDataset(p, y, split_seed=split_seed)
    else:
        raise GalmergeError(
            f"{p}: unknown dataset type {suffix!r}",
            hint="use a galmerge .h5 file, a paper-style X .npy file, or a directory of cutouts",
        )
    if validate:
        try:
            validate_pixels(ds)
        except GalmergeError:
            ds.close()
            raise
    return ds
