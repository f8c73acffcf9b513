"""Training images: scan and check a folder, caption it, bucket it, and fix the order of the data.

Everything a bad dataset can get wrong is found by ``scan_dataset`` before the model is loaded:
an empty or missing folder, unreadable or corrupt images, files that are not images, captions
without an image, two images for one caption name, images too small for the buckets, captions
that never mention the subject. Each is a ``DatasetError`` naming the file.

Photos are read the way a viewer shows them (:func:`load_image`): EXIF orientation applied before
any bucketing or cropping, ICC profiles converted to sRGB, CMYK / 16-bit / palette / alpha images
turned into 8-bit RGB (alpha composited on white).

Buckets keep each image's aspect ratio: an image of aspect a trained at resolution R goes to the
bucket (R*sqrt(a), R/sqrt(a)) rounded to multiples of 16, is resized to cover it and loses at most
a few pixels to a centre crop; nothing is cropped square.

The data order is a pure function of (seed, epoch): ``DataOrder`` shuffles item indices with a
private generator, groups them by bucket into global micro-batches and shuffles those, so a run
resumed at (epoch, index) sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import photos
from ..errors import DatasetError
from .config import TRIGGER, DatasetConfig, fill_trigger

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".avif")
CAPTION_SUFFIX = ".txt"
MULTIPLE = 16
# An image enlarged more than this to fill its bucket trains on blur; it is an error, not a silent resize.
MAX_ENLARGE = 2.0
# Bumped whenever load_image turns the same file into different pixels: part of the latent cache key.
PIXELS_VERSION = 2


@dataclass(frozen=True)
class Sample:
    """One image file and its final caption (trigger filled in)."""

    path: Path
    caption: str
    sha256: str  # of the file's bytes
    width: int  # after EXIF orientation
    height: int
    regularization: bool = False


@dataclass(frozen=True)
class Item:
    """One training item: a sample at one bucket size (an image trained at two resolutions is two items)."""

    sample: int  # index into Dataset.samples
    bucket: tuple[int, int]  # (width, height) in pixels


@dataclass(frozen=True)
class Dataset:
    samples: list[Sample]
    items: list[Item]
    sha256: str  # file bytes + captions + trigger

    @property
    def captions(self) -> list[str]:
        return sorted({s.caption for s in self.samples})


def scan_dataset(config: DatasetConfig) -> Dataset:
    """Check the folder(s) and return the samples, bucketed items and dataset hash."""
    samples = _scan_folder(Path(config.folder), config, regularization=False, what="dataset.folder")
    if config.regularization_folder:
        samples += _scan_folder(Path(config.regularization_folder), config, regularization=True,
                                what="dataset.regularization_folder")
    items = [Item(index, bucket_for(s.width, s.height, r))
             for r in config.resolutions for index, s in enumerate(samples)]
    return Dataset(samples, items, dataset_hash(samples, config))


def dataset_hash(samples: list[Sample], config: DatasetConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"trigger": config.trigger, "caption_template": config.caption_template}).encode())
    for s in samples:
        record = {"name": s.path.name, "regularization": s.regularization, "sha256": s.sha256, "caption": s.caption}
        h.update(json.dumps(record, sort_keys=True).encode())
    return h.hexdigest()


def _scan_folder(folder: Path, config: DatasetConfig, *, regularization: bool, what: str) -> list[Sample]:
    if not folder.is_dir():
        state = "is a file" if folder.exists() else "does not exist"
        raise DatasetError(f"{what} {str(folder)!r} {state}; point it at a folder of images")
    images: dict[str, Path] = {}  # by lower-case stem: IMG_0001.JPG and img_0001.txt belong together
    captions: dict[str, Path] = {}
    folders: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue  # hidden files: .DS_Store, macOS ._IMG_0001.JPG resource forks
        suffix = path.suffix.lower()
        if path.is_dir():
            if suffix in IMAGE_SUFFIXES + (CAPTION_SUFFIX,):  # skipping it would silently drop a training image
                raise DatasetError(f"{str(path)!r} in {what} is a folder named like an image or caption; "
                                   "rename it or move it out of the folder")
            folders.append(path)
            continue  # sub-folders (a cache, originals) are not part of the dataset
        if path.exists() and not path.is_file():  # a FIFO or device would block or never end on read
            raise DatasetError(f"{str(path)!r} in {what} is not a regular file (a pipe, socket or device); "
                               "move it out of the folder")
        if suffix in IMAGE_SUFFIXES:
            _add_once(images, path, "images", "a caption could not tell them apart")
        elif suffix == CAPTION_SUFFIX:
            _add_once(captions, path, "captions", "only one can belong to the image")
        elif suffix in (".heic", ".heif"):
            raise DatasetError(f"{str(path)!r} in {what} is a HEIC/HEIF photo, which cannot be decoded here; "
                               "export it as JPEG (or set the phone to 'Most Compatible') or move it out of the folder")
        else:
            raise DatasetError(f"{str(path)!r} in {what} is not a supported image ({', '.join(IMAGE_SUFFIXES)}) "
                               "or .txt caption; convert it or move it out of the folder")
    if not images:
        nested = [f.name for f in folders if any(p.suffix.lower() in IMAGE_SUFFIXES for p in f.iterdir())]
        hint = (f"; sub-folders are not searched and {nested[0]!r} holds images: point {what} at it" if nested
                else "; add some")
        raise DatasetError(f"{what} {str(folder)!r} has no images ({', '.join(IMAGE_SUFFIXES)}){hint}")
    orphans = sorted(set(captions) - set(images))
    if orphans:
        raise DatasetError(f"caption {str(captions[orphans[0]])!r} has no image of the same name in {what}; "
                           "add the image or remove the caption")
    samples = []
    for key, path in images.items():
        caption = _caption(captions.get(key), config, regularization)
        data = _read_bytes(path)
        width, height = image_size(path)
        _check_size(path, width, height, config.resolutions)
        samples.append(Sample(path, caption, hashlib.sha256(data).hexdigest(), width, height, regularization))
    return samples


def _add_once(found: dict[str, Path], path: Path, kind: str, why: str) -> None:
    """Files pair by name without case or extension; two files for one name are an error."""
    key = path.stem.lower()
    if key in found:
        raise DatasetError(f"{str(found[key])!r} and {str(path)!r} are two {kind} for the name {path.stem!r}; "
                           f"{why}: rename or remove one")
    found[key] = path


def _check_size(path: Path, width: int, height: int, resolutions) -> None:
    for resolution in resolutions:
        bw, bh = bucket_for(width, height, resolution)
        enlarge = max(bw / width, bh / height)
        if enlarge > MAX_ENLARGE:
            raise DatasetError(f"{str(path)!r} is {width}x{height}, too small for resolution {resolution} (its "
                               f"{bw}x{bh} bucket would enlarge it {enlarge:.1f}x, at most {MAX_ENLARGE:g}x is "
                               "allowed); use a larger photo, remove it, or lower dataset.resolutions")


def _caption(path: Path | None, config: DatasetConfig, regularization: bool) -> str:
    if path is None:
        if regularization:
            raise DatasetError("regularization images need their own .txt captions (a class prompt such as "
                               "'photo of a woman', without [trigger]); one is missing")
        return fill_trigger(config.caption_template, config.trigger)
    raw = _read_bytes(path)
    # UTF-16 only with its byte-order mark (Windows Notepad's "Unicode"); UTF-8 with or without one.
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise DatasetError(f"caption {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    # One line of single-spaced text: CRLF, trailing blanks and tabs from editors change neither the
    # embedding's meaning nor, now, the dataset hash.
    text = " ".join(text.lstrip("\ufeff").split())
    if not text:
        text = config.caption_template
    if regularization:
        if TRIGGER in text or config.trigger in text:
            raise DatasetError(f"regularization caption {str(path)!r} mentions the trigger; regularization images "
                               "show the class without the subject, remove the trigger")
        return text
    if TRIGGER not in text and config.trigger not in text:
        raise DatasetError(f"caption {str(path)!r} mentions neither [trigger] nor {config.trigger!r}; "
                           "put [trigger] where the subject is named")
    return fill_trigger(text, config.trigger)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {str(path)!r} ({exc.strerror}); fix its permissions or remove it") from None


def load_image(path: Path):
    """The image as 8-bit sRGB ``RGB``, as a viewer shows it.

    EXIF orientation applied; an RGB ICC profile (Display P3, Adobe RGB ...) converted to sRGB;
    CMYK through its profile when it has one; 16-bit grey scaled to 8 bits (not clipped); alpha,
    transparent palette entries and tRNS colour keys composited on white; grey and palette to RGB.
    """


    try:
        with Image.open(path) as image:
            image.load()  # decode everything now: a truncated file fails here, not mid-training
            image = photos.upright(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise DatasetError(f"{str(path)!r} is not a readable image ({reason}); re-export it or remove it") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _high_bit_grey(image, path)
    if image.mode == "CMYK":
        image = photos.cmyk_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
    elif image.mode != "RGB":
        image = image.convert("RGB")  # grey, palette, 1-bit; a grey profile is taken as sRGB's tone curve
    image = photos.to_srgb(image)
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _high_bit_grey(image, path: Path):
    """16-bit (and 32-bit integer) grey to 8-bit L by value / 257; Pillow's own conversion clips at 255."""

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F" or (values.size and (values.min() < 0 or values.max() > 65535)):
        raise DatasetError(f"{str(path)!r} is a {'32-bit float' if image.mode == 'F' else '32-bit integer'} image "
                           "without a fixed 0..65535 range; save it as an 8- or 16-bit image")
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8))


def image_size(path: Path) -> tuple[int, int]:
    image = load_image(path)
    return image.width, image.height


def bucket_for(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) of area ~ resolution**2 with the image's aspect ratio, sides multiples of 16."""
    aspect = width / height
    bw = max(MULTIPLE, round(resolution * math.sqrt(aspect) / MULTIPLE) * MULTIPLE)
    bh = max(MULTIPLE, round(resolution / math.sqrt(aspect) / MULTIPLE) * MULTIPLE)
    return bw, bh


def pixels_for_bucket(path: Path, bucket: tuple[int, int]):
    """(3, H, W) float tensor in [-1, 1]: resized to cover the bucket, the few excess pixels centre-cropped."""

    image = load_image(path)
    bw, bh = bucket
    scale = max(bw / image.width, bh / image.height)
    size = (max(bw, math.ceil(image.width * scale - 1e-6)), max(bh, math.ceil(image.height * scale - 1e-6)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - bw) // 2, (size[1] - bh) // 2
    image = image.crop((left, top, left + bw, top + bh))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class DataOrder:
    """The sequence of global micro-batches: a pure function of (seed, epoch, position).

    A global micro-batch holds ``global_batch`` items of one bucket (the per-process batch times the
    number of processes); process k trains on its k-th slice. A bucket whose item count is not a
    multiple of the global batch is topped up with its own items from the start of its shuffled list.
    """

    def __init__(self, items: list[Item], global_batch: int, seed: int):
        self.items = items
        self.global_batch = global_batch
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._batches = self.batches_for_epoch(0)
        self.batches_per_epoch = len(self._batches)  # the same every epoch: same items, same buckets

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.items), generator=generator).tolist()
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for index in order:
            by_bucket.setdefault(self.items[index].bucket, []).append(index)
        batches = []
        for members in by_bucket.values():
            for start in range(0, len(members), self.global_batch):
                chunk = members[start:start + self.global_batch]
                fill = 0
                while len(chunk) < self.global_batch:
                    chunk.append(members[fill % len(members)])
                    fill += 1
                batches.append(chunk)
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def next(self) -> list[int]:
        if self.index >= len(self._batches):
            self.epoch += 1
            self.index = 0
            self._batches = self.batches_for_epoch(self.epoch)
        batch = self._batches[self.index]
        self.index += 1
        return batch

    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def seek(self, position: dict) -> None:
        self.epoch, self.index = int(position["epoch"]), int(position["index"])
        self._batches = self.batches_for_epoch(self.epoch)


def describe_dataset(dataset: Dataset) -> str:
    buckets: dict[tuple[int, int], int] = {}
    for item in dataset.items:
        buckets[item.bucket] = buckets.get(item.bucket, 0) + 1
    instance = sum(not s.regularization for s in dataset.samples)
    lines = [f"images: {instance} subject, {len(dataset.samples) - instance} regularization",
             f"items: {len(dataset.items)} in buckets " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(buckets.items())),
             f"dataset sha256: {dataset.sha256}"]
    return "\n".join(lines)
