"""ImageNet's layout read as torchvision reads it: devkit archive or meta.bin, val flat or sorted
into synset folders, and each user mistake as one line naming the path."""

import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from netspec.errors import DataError
from netspec.train.imagenet import Listing, imagenet_listing, is_imagenet

FIELDS = [
    "ILSVRC2012_ID",
    "WNID",
    "words",
    "gloss",
    "num_children",
    "children",
    "wordnet_height",
    "num_train_images",
]
# (ILSVRC2012_ID, wnid, words, num_children): the IDs are not in wnid order, so a label that
# came from the ID instead of the sorted wnids would show; the last synset is an inner node
SYNSETS = [
    (1, "n02000002", "goldfish, Carassius auratus", 0),
    (2, "n01000001", "tench, Tinca tinca", 0),
    (3, "n03000003", "great white shark, white shark, man-eater", 0),
    (4, "n00000004", "fish", 3),
]
WNIDS = ["n01000001", "n02000002", "n03000003"]  # sorted: label i is WNIDS[i]
CLASSES = ["tench", "goldfish", "great white shark"]
GROUND_TRUTH = [3, 1, 2, 3]  # the IDs of val images 1..4: shark, goldfish, tench, shark
VAL_WNIDS = ["n03000003", "n02000002", "n01000001", "n03000003"]
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
DATA = "ILSVRC2012_devkit_t12/data/"


def jpeg(seed: int) -> bytes:
    pixels = np.full((4, 4, 3), seed * 40 % 256, dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def meta_mat(synsets=SYNSETS, key="synsets") -> bytes:
    rows = [
        (ident, wnid, words, f"gloss of {wnid}", kids, np.arange(kids, dtype=float), 0, 2)
        for ident, wnid, words, kids in synsets
    ]
    table = np.array(rows, dtype=[(f, object) for f in FIELDS])
    out = io.BytesIO()
    scipy.io.savemat(out, {key: table})
    return out.getvalue()


def write_devkit(root: Path, members: dict[str, bytes]) -> Path:
    path = root / DEVKIT
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def devkit_members(mat: bytes | None = None, truth: str | None = None) -> dict[str, bytes]:
    truth = "".join(f"{i}\n" for i in GROUND_TRUTH) if truth is None else truth
    return {
        DATA + "meta.mat": meta_mat() if mat is None else mat,
        DATA + "ILSVRC2012_validation_ground_truth.txt": truth.encode(),
    }


def val_name(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}.JPEG"


@pytest.fixture
def root(tmp_path) -> Path:
    """3 classes with 2 training images each, 4 flat validation images, the devkit archive."""
    write_devkit(tmp_path, devkit_members())
    for c, wnid in enumerate(WNIDS):
        for i in (1, 2):
            put(tmp_path / "train" / wnid / f"{wnid}_{i}.JPEG", jpeg(2 * c + i))
    for i in range(1, 5):
        put(tmp_path / "val" / val_name(i), jpeg(10 + i))
    return tmp_path


def train_files(root: Path) -> list[Path]:
    return [root / "train" / w / f"{w}_{i}.JPEG" for w in WNIDS for i in (1, 2)]


def sort_val_into_folders(root: Path) -> None:
    """What torchvision's parse_val_archive does to the flat folder."""
    for i, wnid in enumerate(VAL_WNIDS, 1):
        (root / "val" / wnid).mkdir(exist_ok=True)
        (root / "val" / val_name(i)).rename(root / "val" / wnid / val_name(i))


def write_meta_bin(root: Path, names=None, val_wnids=VAL_WNIDS) -> Path:
    if names is None:
        names = {wnid: tuple(words.split(", ")) for _, wnid, words, kids in SYNSETS if not kids}
    torch.save((names, val_wnids), root / "meta.bin")
    return root / "meta.bin"


def one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# --- reading ------------------------------------------------------------------------------


def test_train_from_devkit_archive(root):
    assert is_imagenet(root)
    listing = imagenet_listing(root, "train")
    assert listing == Listing(
        folder=root / "train",
        files=train_files(root),
        labels=[0, 0, 1, 1, 2, 2],
        classes=CLASSES,
        wnids=WNIDS,
    )


def test_flat_val_takes_labels_from_ground_truth(root):
    listing = imagenet_listing(root, "val")
    val = root / "val"
    # image 3 is the tench (label 0), 2 the goldfish (1), 1 and 4 the shark (2)
    assert listing.files == [
        val / val_name(3),
        val / val_name(2),
        val / val_name(1),
        val / val_name(4),
    ]
    assert listing.labels == [0, 1, 2, 2]
    assert listing.classes == CLASSES
    assert listing.wnids == WNIDS
    assert listing.folder == val


def test_val_in_synset_folders_keeps_the_labels(root):
    flat = imagenet_listing(root, "val")
    sort_val_into_folders(root)
    listing = imagenet_listing(root, "val")
    assert listing.labels == flat.labels == [0, 1, 2, 2]
    assert listing.files == [root / "val" / VAL_WNIDS[i - 1] / val_name(i) for i in (3, 2, 1, 4)]
    assert (listing.classes, listing.wnids) == (CLASSES, WNIDS)


def test_meta_bin_gives_the_same_listing(root):
    from_archive = [imagenet_listing(root, split) for split in ("train", "val")]
    (root / DEVKIT).unlink()
    assert not is_imagenet(root)
    write_meta_bin(root)
    assert is_imagenet(root)
    assert [imagenet_listing(root, split) for split in ("train", "val")] == from_archive
    sort_val_into_folders(root)
    assert imagenet_listing(root, "val").labels == [0, 1, 2, 2]


def test_meta_bin_is_read_before_the_archive(root):
    # torchvision reads meta.bin when present; the archive beside it is not opened
    names = {"n01000001": ("tinca",), "n02000002": ("carassius",), "n03000003": ("shark",)}
    write_meta_bin(root, names)
    (root / DEVKIT).write_bytes(b"not a tar file")
    assert imagenet_listing(root, "train").classes == ["tinca", "carassius", "shark"]


def test_plain_folder_is_not_imagenet(tmp_path):
    put(tmp_path / "train" / "cat" / "a.jpg", jpeg(0))
    assert not is_imagenet(tmp_path)
    assert not is_imagenet(tmp_path / "missing")


def test_hidden_and_non_image_files_are_skipped(root):
    tench = root / "train" / WNIDS[0]
    put(tench / ".hidden.JPEG", jpeg(0))
    put(tench / "._n01000001_1.JPEG", b"macOS resource fork")
    put(tench / ".ipynb_checkpoints" / "copy.JPEG", jpeg(0))
    put(tench / "notes.txt", b"not an image")
    (tench / "folder.jpg").mkdir()  # named like an image, but not a file
    put(root / "train" / ".ipynb_checkpoints" / "x.JPEG", jpeg(0))  # not taken for a class
    nested = put(tench / "more" / "extra.png", jpeg(1))
    upper = put(tench / "shout.JPG", jpeg(2))
    put(root / "val" / ".DS_Store", b"")
    put(root / "val" / ("._" + val_name(1)), b"macOS resource fork")
    put(root / "val" / ".ipynb_checkpoints" / val_name(1), jpeg(0))

    train = imagenet_listing(root, "train")
    assert train.files[:4] == sorted([*train_files(root)[:2], nested, upper])
    assert train.labels == [0, 0, 0, 0, 1, 1, 2, 2]
    assert imagenet_listing(root, "val").labels == [0, 1, 2, 2]  # still four flat images


# --- mistakes: one line naming the path ---------------------------------------------------


def test_no_devkit(tmp_path):
    put(tmp_path / "train" / WNIDS[0] / "a.JPEG", jpeg(0))
    with pytest.raises(DataError) as err:
        imagenet_listing(tmp_path, "train")
    assert f"has neither meta.bin nor {DEVKIT}" in one_line_naming(err, tmp_path)


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError) as err:
        imagenet_listing(tmp_path / "nope", "train")
    assert "not found" in one_line_naming(err, tmp_path / "nope")


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split(root, split):
    shutil.rmtree(root / split)
    with pytest.raises(DataError) as err:
        imagenet_listing(root, split)
    assert "not found: expected" in one_line_naming(err, root / split)


def test_corrupt_archive(root):
    (root / DEVKIT).write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "train")
    msg = one_line_naming(err, root / DEVKIT)
    assert msg.startswith("cannot read devkit archive") and msg.endswith(f"download {DEVKIT} again")


def test_archive_without_meta_mat(root):
    members = devkit_members()
    del members[DATA + "meta.mat"]
    write_devkit(root, members)
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "train")
    assert f"has no {DATA}meta.mat" in one_line_naming(err, root / DEVKIT)


@pytest.mark.parametrize(
    ("mat", "expected"),
    [
        (b"MATLAB 5.0 but nothing else", "cannot read"),
        (meta_mat(key="other"), "has no synsets table"),
        (meta_mat(SYNSETS[3:]), "lists no classes (synsets with num_children 0)"),
    ],
    ids=["corrupt", "no-synsets", "no-leaves"],
)
def test_bad_meta_mat(root, mat, expected):
    write_devkit(root, devkit_members(mat=mat))
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "train")
    msg = one_line_naming(err, root / DEVKIT)
    assert f"{root / DEVKIT}:{DATA}meta.mat" in msg and expected in msg


def test_ground_truth_id_of_no_class(root):
    write_devkit(root, devkit_members(truth="3\n4\n2\n3\n"))  # 4 is the inner node
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "val")
    msg = one_line_naming(err, root / DEVKIT)
    assert "ILSVRC2012_validation_ground_truth.txt line 2: '4' is not the ILSVRC2012_ID" in msg


def test_scipy_missing(root, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "train")
    msg = one_line_naming(err, root / DEVKIT)
    assert "needs scipy: pip install scipy, or put torchvision's meta.bin" in msg


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a pickle", "meta.bin: not a file torch.save wrote (UnpicklingError)"),
        (({"n01000001": 5}, []), "is not torchvision's ImageNet meta file"),
        (({}, []), "lists no classes"),
        (({"n01000001": ("tench",)}, ["n09999999"]), "validation wnid 'n09999999'"),
    ],
    ids=["corrupt", "wrong-shape", "empty", "unknown-val-wnid"],
)
def test_bad_meta_bin(root, content, expected):
    path = root / "meta.bin"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "train")
    msg = one_line_naming(err, path)
    assert expected in msg and msg.endswith(f"delete it to read {DEVKIT} instead")


@pytest.mark.parametrize("split", ["train", "val"])
def test_folder_of_no_class(root, split):
    if split == "val":
        sort_val_into_folders(root)
    stray = put(root / split / "n09999999" / "a.JPEG", jpeg(0)).parent
    with pytest.raises(DataError) as err:
        imagenet_listing(root, split)
    msg = one_line_naming(err, stray)
    assert f"is not a class of {root / DEVKIT}" in msg and "move it out of" in msg


def test_class_without_training_images(root):
    shutil.rmtree(root / "train" / WNIDS[1])
    shutil.rmtree(root / "train" / WNIDS[2])
    (root / "train" / WNIDS[2]).mkdir()
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "train")
    msg = one_line_naming(err, root / "train" / WNIDS[1])
    assert "has no images (and 1 more classes): every class of the devkit needs" in msg


def test_flat_val_count_mismatch(root):
    (root / "val" / val_name(4)).unlink()
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "val")
    msg = one_line_naming(err, root / "val")
    assert f"has 3 images but {root / DEVKIT} labels 4" in msg


def test_val_with_folders_and_loose_images(root):
    (root / "val" / WNIDS[0]).mkdir()
    with pytest.raises(DataError) as err:
        imagenet_listing(root, "val")
    msg = one_line_naming(err, root / "val")
    assert f"has both <wnid> folders and loose images such as {val_name(1)}" in msg


# --- packing the layout -----------------------------------------------------------------


def test_pack_reads_the_imagenet_layout_and_its_class_names(root, tmp_path):
    from netspec.spec.settings import DataConfig
    from netspec.train.data import open_data
    from netspec.train.decode import load_image
    from netspec.train.pack import pack

    pack(root, tmp_path / "store", resize=4, workers=0, stats_images=100)
    manifest = json.loads((tmp_path / "store" / "store.json").read_text())
    assert manifest["layout"] == "imagenet"
    assert manifest["classes"] == CLASSES and manifest["wnids"] == WNIDS
    assert np.load(tmp_path / "store" / "train-labels.npy").tolist() == [0, 0, 1, 1, 2, 2]
    # sorted by (class, path), as every split: tench (val 3), goldfish (2), shark (1, 4)
    assert np.load(tmp_path / "store" / "val-labels.npy").tolist() == [0, 1, 2, 2]
    pixels = np.load(tmp_path / "store" / "val.npy")
    for i, number in enumerate([3, 2, 1, 4]):
        want = load_image(root / "val" / val_name(number), 4).numpy()
        assert np.array_equal(pixels[i], want)
    data = open_data(tmp_path / "store", DataConfig(resize=4, crop=3), tmp_path / "c")
    assert data.classes == CLASSES and len(data.val_set) == 4
    put(root / "train" / WNIDS[0] / "extra.JPEG", jpeg(9))  # the source changed: one more
    with pytest.raises(DataError, match=r"\(1 added, 0 removed, 0 modified\)"):
        open_data(tmp_path / "store", DataConfig(resize=4, crop=3), tmp_path / "c")
