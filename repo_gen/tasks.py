"""Tasks: what differs between kinds of model (classification today), in one registry.

A task owns its output contract (the tensors a served model declares), its fidelity metric (how a
precision variant is compared with FP32) and its labels. Stages ask the task (`get_task(cfg.task)`)
instead of branching on the kind of model, so a new task is one more `register_task` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from repo_gen.errors import UserError
from repo_gen.triton.config import TensorSpec

LABELS_FILE = "labels.txt"
INPUT_NAME = "input"
_TRITON_DTYPE = {"fp32": "TYPE_FP32", "fp16": "TYPE_FP16"}


@dataclass(frozen=True)
class Task:
    """One kind of model.

    Attributes:
        io: (image_size, num_classes, io_dtype) -> (inputs, outputs) as Triton declares them.
        fidelity: (reference outputs, outputs) -> metrics of a variant vs FP32.
        labels: num_classes -> the label of each class (written next to the outputs).
    """

    name: str
    io: Callable[[int, int, str], tuple[list[TensorSpec], list[TensorSpec]]]
    fidelity: Callable[[np.ndarray, np.ndarray], dict[str, Any]]
    labels: Callable[[int], list[str]]


def _classification_io(image_size: int, num_classes: int, io_dtype: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from repo_gen.onnx.export import OUTPUT_NAME

    dt = _TRITON_DTYPE[io_dtype]
    # format: Triton's own image clients (image_client.py) refuse an image input whose format is FORMAT_NONE.
    return ([TensorSpec(INPUT_NAME, dt, [3, image_size, image_size], format="FORMAT_NCHW")],
            [TensorSpec(OUTPUT_NAME, dt, [num_classes], label_filename=LABELS_FILE)])


def _classification_fidelity(ref: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    from repo_gen.compare import fidelity, max_relative_error

    f: dict[str, Any] = fidelity(ref, out)
    f["max_rel"] = max_relative_error(ref, out)
    return f


def _classification_labels(num_classes: int) -> list[str]:
    from repo_gen.labels import labels_for

    return labels_for(num_classes)


_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    _REGISTRY[task.name] = task
    return task


def available_tasks() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_task(name: str) -> Task:
    if name not in _REGISTRY:
        raise UserError(f"task {name!r}: unknown; choose from {', '.join(available_tasks())}")
    return _REGISTRY[name]


CLASSIFICATION = register_task(Task("classification", _classification_io, _classification_fidelity,
                                    _classification_labels))
