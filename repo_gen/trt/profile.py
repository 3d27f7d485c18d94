"""Pure logic of a TensorRT plan model: profile shapes, batcher sizes, CUDA-graph sizes, warm-ups.

Everything here is plain arithmetic on batch sizes, so it is unit-tested on any machine; the
builder (`builder.py`), the trtexec script (`trtexec.py`) and the Triton config
(`repository.py`) all read their numbers from these functions and therefore agree.

How the numbers fit together (Triton's tensorrt backend, see GUIDE section 3):

- one optimization profile per engine: batch min 1, opt `--opt-batch`, max `--max-batch`;
  the config's `max_batch_size` equals the profile max (the backend refuses a larger one);
- the dynamic batcher prefers the batch sizes that have a CUDA graph (powers of two, the opt
  batch and the max), so under load every batch it forms replays a captured graph;
- one CUDA graph per preferred size plus batch 1. Each graph also covers the sizes between
  the previous captured size and its own (`graph_lower_bound`): a partial batch is padded up
  to the next captured size. Partial batches happen at low load, where launch overhead, not
  arithmetic, dominates, so the padded rows cost less than running without a graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from repo_gen.errors import UserError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ProfileShapes:
    """The one optimization profile of an engine: full input shapes including the batch."""

    input_name: str
    min: Shape
    opt: Shape
    max: Shape

    @property
    def max_batch(self) -> int:
        return self.max[0]

    @property
    def opt_batch(self) -> int:
        return self.opt[0]


@dataclass(frozen=True)
class GraphRange:
    """One CUDA graph: captured at `batch_size`, replayed for batches in [lower_bound, batch_size]."""

    batch_size: int
    lower_bound: int


def check_batches(opt_batch: int, max_batch: int) -> None:
    """Raise UserError naming the flag when the batch sizes cannot form a profile."""
    if not isinstance(max_batch, int) or max_batch < 1:
        raise UserError(f"--max-batch {max_batch}: must be an integer >= 1")
    if not isinstance(opt_batch, int) or not 1 <= opt_batch <= max_batch:
        raise UserError(f"--opt-batch {opt_batch}: must be between 1 and --max-batch ({max_batch})")


def profile_shapes(input_name: str, sample_dims: Shape, opt_batch: int, max_batch: int) -> ProfileShapes:
    """min 1 / opt / max batch over one input whose per-sample dims are `sample_dims` (e.g. 3,H,W)."""
    check_batches(opt_batch, max_batch)
    dims = tuple(int(d) for d in sample_dims)
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"input {input_name!r} dims {dims}: every dimension must be a positive integer")
    return ProfileShapes(input_name, (1, *dims), (opt_batch, *dims), (max_batch, *dims))


def preferred_batch_sizes(opt_batch: int, max_batch: int) -> list[int]:
    """Batch sizes the dynamic batcher should prefer: powers of two from 2, the opt batch, the max.

    Batch 1 is left out: a preferred size of 1 would make the batcher send single requests as
    soon as they arrive instead of waiting up to the queue delay to group them.
    """
    check_batches(opt_batch, max_batch)
    sizes = {opt_batch, max_batch}
    p = 2
    while p < max_batch:
        sizes.add(p)
        p *= 2
    return sorted(s for s in sizes if s > 1)


def cuda_graph_batch_sizes(preferred: list[int], max_batch: int) -> list[int]:
    """Sizes with a captured CUDA graph: batch 1, every preferred size, the max (what Triton's
    tensorrt backend itself captures by default when dynamic batching is on)."""
    bad = [b for b in preferred if not 1 <= b <= max_batch]
    if bad:
        raise UserError(f"preferred batch sizes {bad}: must be between 1 and --max-batch ({max_batch})")
    return sorted({1, *preferred, max_batch})


def graph_ranges(graph_sizes: list[int]) -> list[GraphRange]:
    """Which batch sizes each graph serves: (previous captured size, own size]; together they
    cover every batch from 1 to the largest size, with no overlap."""
    sizes = sorted(set(graph_sizes))
    if not sizes or sizes[0] < 1:
        raise UserError(f"CUDA graph batch sizes {graph_sizes}: need at least one size >= 1")
    out = []
    prev = 0
    for b in sizes:
        out.append(GraphRange(b, prev + 1))
        prev = b
    return out


def warmup_batch_sizes(max_batch: int) -> list[int]:
    """Warm-up requests at batch 1 and max: the first real request then pays for nothing."""
    return sorted({1, max_batch})


def shape_arg(profile: ProfileShapes, which: str) -> str:
    """trtexec's `name:AxBxCxD` form of one of the profile's shapes ("min", "opt" or "max")."""
    shape: Shape = {"min": profile.min, "opt": profile.opt, "max": profile.max}[which]
    return f"{profile.input_name}:" + "x".join(str(d) for d in shape)
