"""Pure comparisons of two result arrays (reference first). No running happens here."""

from __future__ import annotations

import numpy as np


def max_relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    """max |out - ref| / max |ref|: elementwise relative error is meaningless for logits near 0,
    so the error is measured against the scale of the reference tensor."""
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    scale = float(np.max(np.abs(ref64))) or 1.0
    return float(np.max(np.abs(out64 - ref64)) / scale)


def fidelity(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Agreement of classifier logits `out` with reference logits `ref`, both [N, C]."""
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    dot = np.sum(ref64 * out64, axis=1)
    norms = np.linalg.norm(ref64, axis=1) * np.linalg.norm(out64, axis=1)
    cos = dot / np.maximum(norms, 1e-30)
    rel_l2 = float(np.linalg.norm(out64 - ref64)) / max(float(np.linalg.norm(ref64)), 1e-30)
    top1_ref, top1_out = ref64.argmax(1), out64.argmax(1)
    k = min(5, ref.shape[1])
    top5_out = np.argsort(-out64, axis=1)[:, :k]
    top5_ref = np.argsort(-ref64, axis=1)[:, :k]
    top5_agree = np.mean([set(a) == set(b) for a, b in zip(top5_ref, top5_out, strict=True)])
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "rel_l2": float(rel_l2),
        "max_abs": float(np.max(np.abs(out64 - ref64))),
        "top1_agreement": float(np.mean(top1_ref == top1_out)),
        "top5_agreement": float(top5_agree),
        "n": int(ref.shape[0]),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray, names: tuple[str, ...] | list[str] | None = None) -> dict:
    """Top-1 / top-5 accuracy (in %) of logits [N, C] against integer labels [N].

    With class `names`, also "per_class": {name: [correct top-1, images]} for every class present.
    """
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1)[:, :k]
    out: dict = {
        "top1": float(np.mean(topk[:, 0] == labels) * 100),
        "top5": float(np.mean([lbl in row for lbl, row in zip(labels, topk, strict=True)]) * 100),
        "n": int(len(labels)),
    }
    if names is not None:
        hit = topk[:, 0] == labels
        out["per_class"] = {names[c]: [int(hit[labels == c].sum()), int((labels == c).sum())]
                            for c in sorted(set(labels.tolist()))}
    return out
