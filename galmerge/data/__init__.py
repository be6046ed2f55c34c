"""Dataset files, image decoding and the galaxy simulator (torch-free)."""

from galmerge.data.dataset import (
    DEFAULT_FRACTIONS,
    SPLITS,
    Dataset,
    DatasetWriter,
    H5Dataset,
    ImageDirDataset,
    NpyPairDataset,
    make_split,
    open_dataset,
    validate_pixels,
    write_dataset,
)
from galmerge.data.images import RawImage, prepare, read_image, resize_area

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "Dataset",
    "DatasetWriter",
    "H5Dataset",
    "ImageDirDataset",
    "NpyPairDataset",
    "RawImage",
    "make_split",
    "open_dataset",
    "prepare",
    "read_image",
    "resize_area",
    "validate_pixels",
    "write_dataset",
]
