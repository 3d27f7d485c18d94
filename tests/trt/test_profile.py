"""Profiles, batcher sizes, CUDA-graph sizes and warm-ups: the numbers every artifact shares."""

from __future__ import annotations

import pytest

from repo_gen.errors import UserError
from repo_gen.trt import profile as p


def test_profile_is_min1_opt_max():
    prof = p.profile_shapes("input", (3, 256, 256), 16, 64)
    assert prof.min == (1, 3, 256, 256)
    assert prof.opt == (16, 3, 256, 256)
    assert prof.max == (64, 3, 256, 256)
    assert (prof.opt_batch, prof.max_batch) == (16, 64)
    assert p.shape_arg(prof, "max") == "input:64x3x256x256"


@pytest.mark.parametrize("opt,mx", [(0, 8), (9, 8), (-1, 8), (1, 0)])
def test_bad_batches_name_the_flag(opt, mx):
    with pytest.raises(UserError, match="--opt-batch|--max-batch"):
        p.profile_shapes("input", (3, 64, 64), opt, mx)


def test_bad_dims_rejected():
    with pytest.raises(UserError, match="positive"):
        p.profile_shapes("input", (3, 0, 64), 1, 8)


@pytest.mark.parametrize(
    "opt,mx,want",
    [
        (16, 64, [2, 4, 8, 16, 32, 64]),
        (12, 64, [2, 4, 8, 12, 16, 32, 64]),
        (1, 1, []),
        (1, 2, [2]),
        (5, 6, [2, 4, 5, 6]),
        (64, 64, [2, 4, 8, 16, 32, 64]),
    ],
)
def test_preferred_sizes(opt, mx, want):
    assert p.preferred_batch_sizes(opt, mx) == want


@pytest.mark.parametrize("opt,mx", [(16, 64), (12, 100), (1, 1), (3, 3), (7, 4096)])
def test_graph_sizes_match_the_batcher(opt, mx):
    preferred = p.preferred_batch_sizes(opt, mx)
    graphs = p.cuda_graph_batch_sizes(preferred, mx)
    # Triton's own default when dynamic batching is on: 1, the preferred sizes, the max
    assert graphs == sorted({1, *preferred, mx})
    assert set(preferred) <= set(graphs) and graphs[0] == 1 and graphs[-1] == mx
    ranges = p.graph_ranges(graphs)
    covered = [b for r in ranges for b in range(r.lower_bound, r.batch_size + 1)]
    assert covered == list(range(1, mx + 1))  # every batch size has exactly one graph


def test_graph_sizes_reject_out_of_range():
    with pytest.raises(UserError):
        p.cuda_graph_batch_sizes([128], 64)
    with pytest.raises(UserError):
        p.graph_ranges([])


def test_warmups():
    assert p.warmup_batch_sizes(64) == [1, 64]
    assert p.warmup_batch_sizes(1) == [1]
