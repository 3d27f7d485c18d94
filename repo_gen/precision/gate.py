"""The INT8 accept/reject rule, as a pure function of the fidelity figures (no running here).

Cosine similarity alone let a random-weight MobileViT through with 93.8% top-1 agreement: its
logits have tiny margins, so the INT8 rounding keeps the logit vector's direction (cosine 0.99+)
while flipping the argmax of one image in sixteen. A classifier's user sees the argmax, so the
gate holds both: mean cosine >= `cosine_min` and top-1 agreement >= 1 - `top1_tolerance`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Criterion:
    name: str  # "cosine" | "top-1 agreement"
    value: float
    threshold: float  # value must be >= threshold
    ok: bool


@dataclass(frozen=True)
class Verdict:
    ok: bool
    criteria: tuple[Criterion, ...]

    @property
    def decided_by(self) -> str:
        """Which criterion decided: the failing ones when rejected, "all" when accepted."""
        failed = [c.name for c in self.criteria if not c.ok]
        return " and ".join(failed) if failed else "all criteria met"

    def describe(self) -> str:
        return "; ".join(f"{c.name} {c.value:.4f} {'>=' if c.ok else '<'} {c.threshold:.4f}" for c in self.criteria)

    def failures(self) -> list[str]:
        return [f"{c.name} {c.value:.4f} < {c.threshold:.4f}" for c in self.criteria if not c.ok]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "decided_by": self.decided_by, "criteria": [asdict(c) for c in self.criteria]}


def int8_verdict(fid: dict, cosine_min: float, top1_tolerance: float) -> Verdict:
    """Judge INT8 logits from their `repo_gen.compare.fidelity` figures against FP32.

    Args:
        cosine_min: minimum mean cosine similarity of the logits (--int8-tolerance).
        top1_tolerance: largest fraction of images whose top-1 class may change (--int8-top1-tolerance).
    """
    cos = Criterion("cosine", float(fid["cosine_mean"]), cosine_min, float(fid["cosine_mean"]) >= cosine_min)
    need = 1.0 - top1_tolerance
    # A hair of slack: agreement is k/n in float64, and 1 - tolerance is rounded too.
    top1 = Criterion("top-1 agreement", float(fid["top1_agreement"]), need, float(fid["top1_agreement"]) >= need - 1e-12)
    return Verdict(cos.ok and top1.ok, (cos, top1))
