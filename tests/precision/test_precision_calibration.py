"""Calibration / evaluation image sets: bad input gives one clear line, odd images are converted."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from repo_gen.data.calibration import load_calibration, load_eval
from repo_gen.errors import UserError
from repo_gen.labels import resolve_labels
from repo_gen.models import get_model_spec

DATA = get_model_spec("mobilevit_xxs").data.with_size(64)


def _img(mode: str, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    bands = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    arr = rng.integers(0, 255, (*size[::-1], bands), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)


def test_missing_dir(tmp_path):
    with pytest.raises(UserError, match="--calib-dir .*not a directory"):
        load_calibration(tmp_path / "nope", DATA, 8)


def test_empty_dir(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="no image files"):
        load_calibration(tmp_path, DATA, 8)


def test_only_unreadable_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"")
    with pytest.raises(UserError, match="none of the 2 image files could be decoded"):
        load_calibration(tmp_path, DATA, 8)


def test_odd_modes_converted_bad_skipped_and_fewer_warned(tmp_path, caplog):
    sub = tmp_path / "nested" / "deeper"
    sub.mkdir(parents=True)
    _img("L").save(tmp_path / "gray.png")
    _img("RGBA").save(tmp_path / "rgba.png")
    _img("CMYK").save(sub / "cmyk.jpg")
    _img("I;16").save(sub / "sixteen.png")
    _img("RGB").save(tmp_path / "photo.webp")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    logging.getLogger("repo_gen").propagate = True
    with caplog.at_level(logging.WARNING, logger="repo_gen"):
        s = load_calibration(tmp_path, DATA, 10)
    assert s.tensors.shape == (5, 3, 64, 64) and s.tensors.dtype == np.float32
    assert np.isfinite(s.tensors).all()
    assert [n for n, _ in s.skipped] == [str(tmp_path / "broken.jpg")]
    assert "fewer than" in s.note
    assert "fewer than --calib-count 10" in caplog.text and "broken.jpg" in caplog.text


def test_builtin_photos_when_no_dir():
    s = load_calibration(None, DATA, 6)
    assert s.tensors.shape == (6, 3, 64, 64) and not s.representative and "NOT representative" in s.note


DIGIT_LABELS = resolve_labels(10, checkpoint_names=[str(i) for i in range(10)])


def test_eval_dir_class_folders(tmp_path):
    for c in ("0", "3"):
        (tmp_path / c).mkdir()
        for i in range(3):
            _img("L").save(tmp_path / c / f"{i}.png")
    ev = load_eval(tmp_path, DATA, 4, DIGIT_LABELS)
    assert list(ev.labels) == [0, 3, 0, 3]  # round-robin over classes
    assert ev.class_folders == ["0", "3"]


def test_eval_dir_synsets_for_imagenet(tmp_path):
    (tmp_path / "n01443537").mkdir()
    _img("RGB").save(tmp_path / "n01443537" / "x.jpg")
    ev = load_eval(tmp_path, DATA, 4, resolve_labels(1000))
    assert list(ev.labels) == [1]  # goldfish is ImageNet class 1


def test_eval_dir_labels_mismatch(tmp_path):
    for c in ("cat", "12"):
        (tmp_path / c).mkdir()
        _img("RGB").save(tmp_path / c / "x.png")
    with pytest.raises(UserError, match="class folders (12, cat|cat, 12) match none of the model's 10 classes"):
        load_eval(tmp_path, DATA, 4, DIGIT_LABELS)


def test_eval_dir_without_classes_is_fidelity_only(tmp_path):
    _img("RGB").save(tmp_path / "a.png")
    ev = load_eval(tmp_path, DATA, 4, DIGIT_LABELS)
    assert ev.labels is None and ev.tensors.shape[0] == 1


def test_eval_default_is_disjoint_from_calibration():
    a = load_calibration(None, DATA, 8).tensors
    b = load_eval(None, DATA, 8, DIGIT_LABELS).tensors
    assert not any(np.array_equal(x, y) for x in a for y in b)
