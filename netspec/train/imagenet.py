"""ImageNet (ILSVRC2012) as torchvision.datasets.ImageNet lays it out, read without changing it.

ROOT/train/<wnid>/*.JPEG holds the training images. ROOT/val/ holds the validation images
either sorted into ROOT/val/<wnid>/ (as torchvision leaves them) or flat, as the original
archive unpacks (ILSVRC2012_val_00000001.JPEG …), their labels then coming from the devkit's
ground truth. The devkit is torchvision's parsed ROOT/meta.bin or the original
ROOT/ILSVRC2012_devkit_t12.tar.gz, read in memory: the data folder may be read-only, and an
archive that is not byte-identical to the official one (a re-compressed copy) still serves.

The classes are the devkit's leaf synsets sorted by wnid, so label i here is label i in
torchvision's ImageNet and in any model trained on it, whichever files are present.
"""

from __future__ import annotations

import importlib
import io
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from netspec.errors import DataError
from netspec.train.folder import IMAGE_SUFFIXES

META_BIN = "meta.bin"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
META_MAT = "ILSVRC2012_devkit_t12/data/meta.mat"
GROUND_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
SYNSET_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "num_children")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Listing:
    """One split of a data folder as netspec reads it."""

    folder: Path  # the split's folder (ROOT/train or ROOT/val)
    files: list[Path]  # the image files, sorted by (label, path)
    labels: list[int]  # class index of each file, same order
    classes: list[str]  # class display names, index = label (ImageNet: the devkit's first name)
    wnids: list[str]  # the synset ids, sorted (label i is wnids[i]); [] for a plain folder


class Devkit(NamedTuple):
    """What the devkit tells: each class's names, and the wnid of each flat val image in
    file-name order. `source` is the file it came from, for messages."""

    names: dict[str, tuple[str, ...]]
    val_wnids: list[str]
    source: Path


def is_imagenet(root: Path) -> bool:
    """True when ROOT carries an ImageNet devkit: its classes then come from the devkit, not
    from the folder names, so a class missing from the disk cannot shift every label."""
    root = Path(root)
    return (root / META_BIN).is_file() or (root / DEVKIT_ARCHIVE).is_file()


def imagenet_listing(root: Path, split: str) -> Listing:
    """The images of ROOT's `split` ("train" or "val") with the devkit's labels, checked so
    that a half-unpacked or mixed-up folder fails here, in one line, before any decoding."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} not found: expected {root}/train/<wnid>/*.JPEG")
    devkit = read_devkit(root)
    wnids = sorted(devkit.names)
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    folder = root / split
    if not folder.is_dir():
        flat = " or its flat ILSVRC2012_val_*.JPEG" if split == "val" else ""
        raise DataError(f"{folder} not found: expected {folder}/<wnid>/*.JPEG{flat}")
    if split == "train":
        pairs = _synset_folders(folder, label_of, devkit.source)
        _require_every_class(folder, wnids, pairs)
    else:
        pairs = _val_images(folder, label_of, devkit)
    if not pairs:
        raise DataError(f"{folder} has no images: expected {folder}/<wnid>/*.JPEG")
    pairs.sort()
    return Listing(
        folder=folder,
        files=[path for _, path in pairs],
        labels=[label for label, _ in pairs],
        classes=[devkit.names[wnid][0] for wnid in wnids],
        wnids=wnids,
    )


def read_devkit(root: Path) -> Devkit:
    """meta.bin when present (what torchvision reads first), else the devkit archive."""
    meta_bin, archive = root / META_BIN, root / DEVKIT_ARCHIVE
    if meta_bin.is_file():
        return _read_meta_bin(root, archive.is_file())
    if archive.is_file():
        return _read_archive(archive)
    raise DataError(
        f"{root} has neither {META_BIN} nor {DEVKIT_ARCHIVE}: "
        f"put ImageNet's devkit archive {DEVKIT_ARCHIVE} in {root}"
    )


def _read_meta_bin(root: Path, has_archive: bool) -> Devkit:
    from torchvision.datasets.imagenet import load_meta_file

    path = root / META_BIN
    fix = (
        f"delete it to read {DEVKIT_ARCHIVE} instead"
        if has_archive
        else f"delete it and put {DEVKIT_ARCHIVE} in {root}"
    )
    try:
        meta = load_meta_file(root)
    except OSError as err:
        raise DataError(f"cannot read {path}: {_reason(err)}; {fix}") from None
    except Exception as err:  # a damaged pickle fails in more ways than any list would name
        # torch's own text runs to a paragraph about weights_only; the kind is what helps
        kind = type(err).__name__
        raise DataError(
            f"cannot read {path}: not a file torch.save wrote ({kind}); {fix}"
        ) from None
    names, val_wnids = _check_meta(meta)
    if names is None or val_wnids is None:
        raise DataError(
            f"{path} is not torchvision's ImageNet meta file (wnid_to_classes, val_wnids); {fix}"
        )
    if not names:
        raise DataError(f"{path} lists no classes; {fix}")
    unknown = next((w for w in val_wnids if w not in names), None)
    if unknown is not None:
        raise DataError(f"{path} gives validation wnid {unknown!r}, not one of its classes; {fix}")
    return Devkit(names, val_wnids, path)


def _check_meta(meta: Any) -> tuple[dict[str, tuple[str, ...]] | None, list[str] | None]:
    """The two parts of meta.bin, or None for a part that is not the shape torchvision writes
    (a dict of wnid -> names, a list of wnids)."""
    if not (isinstance(meta, tuple | list) and len(meta) == 2):
        return None, None
    raw_names, raw_val = meta
    val_ok = isinstance(raw_val, list | tuple) and all(isinstance(w, str) for w in raw_val)
    return _check_names(raw_names), list(raw_val) if val_ok else None


def _check_names(raw: Any) -> dict[str, tuple[str, ...]] | None:
    if not isinstance(raw, dict):
        return None
    names: dict[str, tuple[str, ...]] = {}
    for wnid, value in raw.items():
        words = tuple(value.split(", ")) if isinstance(value, str) else value
        if not (
            isinstance(wnid, str)
            and isinstance(words, tuple | list)
            and words
            and all(isinstance(w, str) for w in words)
        ):
            return None
        names[wnid] = tuple(words)
    return names


def _read_archive(archive: Path) -> Devkit:
    fix = f"download {DEVKIT_ARCHIVE} again"
    wanted: dict[str, bytes | None] = {META_MAT: None, GROUND_TRUTH: None}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    file = tar.extractfile(member)
                    wanted[name] = file.read() if file is not None else None
    except (OSError, EOFError, tarfile.TarError, zlib.error) as err:
        raise DataError(f"cannot read devkit archive {archive}: {_reason(err)}; {fix}") from None
    for name, data in wanted.items():
        if data is None:
            raise DataError(f"devkit archive {archive} has no {name}: {fix}")
    meta_mat, ground_truth = wanted[META_MAT], wanted[GROUND_TRUTH]
    assert meta_mat is not None and ground_truth is not None
    by_id = _parse_meta_mat(meta_mat, f"{archive}:{META_MAT}", fix)
    val_wnids = _parse_ground_truth(ground_truth, by_id, f"{archive}:{GROUND_TRUTH}", fix)
    names = dict(by_id.values())
    return Devkit(names, val_wnids, archive)


def _parse_meta_mat(data: bytes, where: str, fix: str) -> dict[int, tuple[str, tuple[str, ...]]]:
    """ILSVRC2012_ID -> (wnid, names) of each class. The synsets table also lists WordNet's
    inner nodes (num_children > 0), which are no class of the challenge."""
    try:
        scipy_io = importlib.import_module("scipy.io")  # only this route needs scipy
    except ImportError:
        raise DataError(
            f"reading {where} needs scipy: pip install scipy, or put torchvision's {META_BIN} "
            "(written by torchvision.datasets.ImageNet) beside the archive"
        ) from None
    try:
        synsets = scipy_io.loadmat(io.BytesIO(data), squeeze_me=True).get("synsets")
    except Exception as err:  # loadmat's failures on a damaged file have no common base
        raise DataError(f"cannot read {where}: {_reason(err)}; {fix}") from None
    fields = getattr(getattr(synsets, "dtype", None), "names", None) or ()
    if not set(SYNSET_FIELDS) <= set(fields):
        raise DataError(f"{where} has no synsets table with {', '.join(SYNSET_FIELDS)}: {fix}")
    classes: dict[int, tuple[str, tuple[str, ...]]] = {}
    try:
        for row in np.atleast_1d(synsets):
            if int(row["num_children"]) == 0:
                wnid, words = str(row["WNID"]), str(row["words"])
                classes[int(row["ILSVRC2012_ID"])] = (wnid, tuple(words.split(", ")))
    except (TypeError, ValueError) as err:
        raise DataError(f"malformed synsets table in {where}: {_reason(err)}; {fix}") from None
    if not classes:
        raise DataError(f"{where} lists no classes (synsets with num_children 0): {fix}")
    return classes


def _parse_ground_truth(
    data: bytes, by_id: dict[int, tuple[str, tuple[str, ...]]], where: str, fix: str
) -> list[str]:
    """The wnid of each flat validation image, in file-name order: line i of the ground truth
    is the ILSVRC2012_ID of ILSVRC2012_val_<i>.JPEG."""
    wnids: list[str] = []
    for number, line in enumerate(data.decode("ascii", "replace").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        try:
            wnids.append(by_id[int(text)][0])
        except (ValueError, KeyError):
            raise DataError(
                f"{where} line {number}: {text!r} is not the ILSVRC2012_ID of a class "
                f"in meta.mat: {fix}"
            ) from None
    return wnids


def _val_images(folder: Path, label_of: dict[str, int], devkit: Devkit) -> list[tuple[int, Path]]:
    """Validation images in either layout; a folder holding both is refused, since the loose
    files would silently count for nothing (or the folders would, read the other way)."""
    entries = [e for e in folder.iterdir() if not _hidden(e.name)]
    loose = sorted(e for e in entries if _is_image(e))
    if any(e.is_dir() for e in entries):
        if loose:
            raise DataError(
                f"{folder} has both <wnid> folders and loose images such as {loose[0].name}: "
                "move the loose images into their folders or the folders' images out"
            )
        return _synset_folders(folder, label_of, devkit.source)
    if len(loose) != len(devkit.val_wnids):
        raise DataError(
            f"{folder} has {len(loose)} images but {devkit.source} labels "
            f"{len(devkit.val_wnids)}: put all of ILSVRC2012_img_val.tar's images in it, "
            f"or sort them into {folder}/<wnid>/ folders"
        )
    # the archive's names are zero-padded, so name order is the ground truth's line order
    return [(label_of[wnid], path) for wnid, path in zip(devkit.val_wnids, loose, strict=True)]


def _synset_folders(folder: Path, label_of: dict[str, int], source: Path) -> list[tuple[int, Path]]:
    """(label, file) for the images under folder/<wnid>/, nested folders included. A folder
    that is no class of the devkit is an error: its images would have no label."""
    pairs: list[tuple[int, Path]] = []
    for sub in sorted(folder.iterdir()):
        if _hidden(sub.name) or not sub.is_dir():
            continue
        label = label_of.get(sub.name)
        if label is None:
            raise DataError(
                f"{sub} is not a class of {source}: ImageNet's folders are named by synset id "
                f"(e.g. {next(iter(label_of))}); move it out of {folder}"
            )
        pairs.extend((label, path) for path in _images_under(sub))
    return pairs


def _images_under(top: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        found.extend(p for name in filenames if _is_image(p := Path(dirpath, name)))
    return found


def _require_every_class(folder: Path, wnids: list[str], pairs: list[tuple[int, Path]]) -> None:
    """A class with no training image is a half-unpacked train archive, not a choice: the
    model would still have an output for it that nothing ever trains."""
    present = {label for label, _ in pairs}
    missing = [wnid for i, wnid in enumerate(wnids) if i not in present]
    if missing:
        more = f" (and {len(missing) - 1} more classes)" if len(missing) > 1 else ""
        raise DataError(
            f"{folder / missing[0]} has no images{more}: every class of the devkit needs "
            f"training images in {folder}/<wnid>/*.JPEG: unpack each class's <wnid>.tar "
            "from ILSVRC2012_img_train.tar into its folder"
        )


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not _hidden(path.name) and path.is_file()


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
