"""Greedy search for the nodes to keep in higher precision (FP32 in FP16 graphs, float in INT8 ones).

The TensorRT Hackathon 2022 MobileViT team did this by hand; Polygraphy's `debug precision`
bisects. Here: start with nothing kept; while the tolerance is not met, try each remaining
candidate group kept in higher precision on top of the current set, keep the one that lowers
the error most, and stop when the tolerance is met, no group lowers the error by at least
`min_gain` (relative), or `max_steps` is reached. Before the first round, one evaluation with
every candidate kept shows whether the tolerance is reachable at all; if it is not, the search
stops there ("unreachable", nothing kept: a partial fallback that cannot meet the tolerance
would cost speed and buy no verdict). After the first round, only groups that
lowered the error at all stay candidates (a group that did not help alone rarely helps later),
which bounds the cost to about G + k * G' evaluations. Every evaluation is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from repo_gen.log import logger


@dataclass
class SearchResult:
    kept_groups: list[str]
    kept_nodes: list[str]
    metrics: dict
    met: bool
    stop_reason: str
    steps: list[dict] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0


def greedy_search(
    candidates: dict[str, list[str]],
    evaluate: Callable[[set[str]], dict],
    meets: Callable[[dict], bool],
    error: Callable[[dict], float],
    max_steps: int = 8,
    min_gain: float = 0.02,
    label: str = "search",
) -> SearchResult:
    """Args:
    candidates: group name -> node names kept in higher precision together.
    evaluate: set of kept node names -> metrics dict.
    meets: whether metrics meet the tolerance.
    error: scalar to minimise (e.g. rel L2, 1 - cosine).
    """
    t0 = time.perf_counter()
    kept: list[str] = []
    nodes: set[str] = set()
    metrics = evaluate(nodes)
    n_eval = 1
    steps = [{"step": 0, "kept": [], "error": error(metrics), "metrics": metrics, "tried": {}}]
    logger.info(f"{label}: baseline error {error(metrics):.3e}")
    remaining = dict(candidates)
    stop = "tolerance met"
    step = 0
    if not meets(metrics) and candidates:
        # One evaluation bounds what any subset can do: with every candidate kept in higher
        # precision. If even that misses the tolerance, the search is skipped.
        everything = evaluate(nodes | {n for g in candidates.values() for n in g})
        n_eval += 1
        steps[0]["all_candidates_error"] = error(everything)
        if not meets(everything):
            stop = (f"unreachable: even with all {len(candidates)} candidate groups in higher precision the error "
                    f"is {error(everything):.3e} (baseline {error(metrics):.3e})")
            remaining = {}
    while not meets(metrics) and remaining:
        if step >= max_steps:
            stop = f"max steps ({max_steps}) reached"
            break
        step += 1
        cur = error(metrics)
        tried: dict[str, float] = {}
        results: dict[str, dict] = {}
        for gname, gnodes in remaining.items():
            results[gname] = evaluate(nodes | set(gnodes))
            tried[gname] = error(results[gname])
            n_eval += 1
        best = min(tried, key=lambda k: tried[k])
        if tried[best] > cur * (1 - min_gain):
            stop = f"nothing lowers the error by {min_gain:.0%} (best {best}: {tried[best]:.3e} vs {cur:.3e})"
            steps.append({"step": step, "kept": list(kept), "error": cur, "metrics": metrics, "tried": tried,
                          "chosen": None})
            break
        kept.append(best)
        nodes |= set(remaining.pop(best))
        metrics = results[best]
        if step == 1:  # prune groups that did not help at all
            remaining = {k: v for k, v in remaining.items() if tried[k] < cur}
        steps.append({"step": step, "kept": list(kept), "error": tried[best], "metrics": metrics, "tried": tried,
                      "chosen": best})
        logger.info(f"{label}: step {step} keeps {best} -> error {tried[best]:.3e}")
    if not meets(metrics) and not remaining and stop == "tolerance met":
        stop = "no candidates left"
    return SearchResult(kept, sorted(nodes), metrics, meets(metrics), stop, steps, n_eval,
                        round(time.perf_counter() - t0, 2))
