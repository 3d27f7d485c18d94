"""Class names: the precedence of their sources, and every bad labels input as a one-line UserError."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repo_gen.errors import UserError
from repo_gen.labels import class_index, folder_classes, read_labels_file, resolve_labels


def _folders(root: Path, names) -> Path:
    for n in names:
        (root / n).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / n / "a.png")
    return root


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (None, "no such file"),
        (b"\xff\xfecat\n", "not UTF-8"),
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"cat\n\ndog\n", "line 2 is blank"),
        (b"cat\ndog\ncat\n", "'cat' appears on lines 1 and 3"),
    ],
)
def test_bad_labels_file(tmp_path, content, expect):
    f = tmp_path / "labels.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(UserError) as e:
        read_labels_file(f)
    msg = _one_line(e)
    assert expect in msg and "--labels" in msg


def test_labels_file_count_must_match_head(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("cat\ndog\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        resolve_labels(3, labels_file=f)
    assert "2 names" in _one_line(e) and "3 outputs" in str(e.value)


def test_precedence(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("chat\nchien\noiseau\n", encoding="utf-8")  # a trailing newline and UTF-8 names are fine
    ev = _folders(tmp_path / "eval", ["bird", "cat", "dog"])
    assert resolve_labels(3, f, ["a", "b", "c"]).names == ("chat", "chien", "oiseau")
    assert resolve_labels(3, None, ["a", "b", "c"]).source == "checkpoint"
    got = resolve_labels(3, None, None, ev)
    assert got.names == ("bird", "cat", "dog") and got.source == "folders"  # ImageFolder order: sorted
    assert resolve_labels(1000).source == "imagenet"
    assert resolve_labels(1000).names[0] == "tench"
    generic = resolve_labels(4)
    assert generic.names == ("class_0", "class_1", "class_2", "class_3") and generic.source == "generic"


def test_generic_names_warn_how_to_pass_names(tmp_path, caplog):
    resolve_labels(4)
    assert "--labels" in caplog.text


def test_folders_that_disagree_with_the_labels(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("cat\ndog\n", encoding="utf-8")
    ev = _folders(tmp_path / "eval", ["cat", "horse"])
    with pytest.raises(UserError) as e:
        resolve_labels(2, f, eval_dir=ev)
    assert "--eval-dir" in _one_line(e) and "horse" in str(e.value)
    calib = _folders(tmp_path / "calib", ["a", "b", "c"])
    with pytest.raises(UserError) as e:
        resolve_labels(2, calib_dir=calib)
    assert "--calib-dir" in _one_line(e) and "a, b, c match none of the model's 2 classes" in str(e.value)


def test_class_index_by_name_index_or_synset(tmp_path):
    labels = resolve_labels(3, None, ["zero", "one", "two"])
    assert class_index(["two", "0"], labels, "--eval-dir", tmp_path) == {"two": 2, "0": 0}
    imagenet = resolve_labels(1000)
    assert class_index(["n01443537"], imagenet, "--eval-dir", tmp_path) == {"n01443537": 1}


def test_flat_folder_has_no_classes(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert folder_classes(tmp_path) is None


def test_a_subset_of_classes_is_matched_not_taken_as_names(tmp_path):
    """Eval folders for a few classes (here ImageNet synsets) do not become the names of a 1000-class head."""
    ev = _folders(tmp_path / "eval", ["n01443537", "n01440764"])
    got = resolve_labels(1000, eval_dir=ev)
    assert got.source == "imagenet"


def test_imagenet_names_read_without_timm_match_timms_own():
    """labels.py reads timm's bundled ImageNet files without importing timm (a CLI run that only needs
    the class names skips seconds of imports): they must be exactly what timm's ImageNetInfo says."""
    from timm.data import ImageNetInfo

    from repo_gen.labels import imagenet_labels, imagenet_synsets

    info = ImageNetInfo()
    assert imagenet_synsets() == [info.index_to_label_name(i) for i in range(info.num_classes())]
    assert imagenet_labels() == [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    assert imagenet_labels()[:2] == ["tench", "goldfish"]
