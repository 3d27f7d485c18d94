"""A parsed config.pbtxt back into the `ModelConfigSpec` the build renders it from.

So that every config.pbtxt repo-gen writes (build, tune, benchmark variants) comes out of the same
templates through `render_config`: a command that edits a config parses it, edits the fields it
owns, and re-renders. `spec_from_config` refuses a config that the templates cannot reproduce
field for field (for example one edited by hand with fields repo-gen never writes), instead of
dropping those fields silently.
"""

from __future__ import annotations

from typing import Any

from repo_gen.errors import BuildFailure
from repo_gen.triton.config import ModelConfigSpec, TensorSpec, WarmupSpec
from repo_gen.triton.render import parse_config, render_config

# backend / platform -> template; ensembles are not edited after the build.
_TEMPLATE_OF = {("backend", "python"): "python", ("backend", "onnxruntime"): "onnxruntime",
                ("platform", "tensorrt_plan"): "tensorrt_plan", ("platform", "onnxruntime_onnx"): "onnxruntime"}


def _enum_name(msg: Any, field_name: str) -> str:
    value = getattr(msg, field_name)
    return msg.DESCRIPTOR.fields_by_name[field_name].enum_type.values_by_number[value].name


def _format(t: Any) -> str | None:
    """ModelInput.format's name, None for FORMAT_NONE or an output (outputs have no format)."""
    if "format" not in t.DESCRIPTOR.fields_by_name:
        return None
    name = _enum_name(t, "format")
    return None if name == "FORMAT_NONE" else name


def _tensors(items: Any) -> list[TensorSpec]:
    return [TensorSpec(t.name, _enum_name(t, "data_type"), [int(d) for d in t.dims],
                       label_filename=getattr(t, "label_filename", "") or None,
                       optional=bool(getattr(t, "optional", False)), format=_format(t)) for t in items]


def spec_from_config(cfg: Any, comment_model_file: str | None = None) -> ModelConfigSpec:
    """The spec whose rendering parses to `cfg`.

    Args:
        cfg: a parsed `model_config_pb2.ModelConfig`.
        comment_model_file: python backend only: the model file its header comment names (the python
            template has no default_model_filename field); None: the config's own field.

    Raises:
        BuildFailure: the config uses fields the templates do not write (names them).
    """
    key = ("backend", cfg.backend) if cfg.backend else ("platform", cfg.platform)
    template = _TEMPLATE_OF.get(key)
    if template is None:
        raise BuildFailure(f"config of {cfg.name}: {key[0]} {key[1]!r} is not one repo-gen's templates write")
    groups = list(cfg.instance_group)
    if len(groups) > 1:
        raise BuildFailure(f"config of {cfg.name}: {len(groups)} instance groups; repo-gen's templates write one")
    has_db = cfg.HasField("dynamic_batching")
    warmup = []
    for w in cfg.model_warmup:
        kinds = {("zero_data" if v.zero_data else "random_data") for v in w.inputs.values()}
        inputs = [TensorSpec(k, _enum_name(v, "data_type"), [int(d) for d in v.dims]) for k, v in w.inputs.items()]
        warmup.append(WarmupSpec(w.name, int(w.batch_size), inputs, kind=kinds.pop() if len(kinds) == 1 else "random_data"))
    graphs = []
    for g in cfg.optimization.cuda.graph_spec:
        lower = int(g.graph_lower_bound.batch_size) if g.HasField("graph_lower_bound") else int(g.batch_size)
        graphs.append((int(g.batch_size), lower))
    spec = ModelConfigSpec(
        name=cfg.name,
        template=template,
        max_batch_size=int(cfg.max_batch_size),
        inputs=_tensors(cfg.input),
        outputs=_tensors(cfg.output),
        max_queue_delay_us=int(cfg.dynamic_batching.max_queue_delay_microseconds) if has_db else None,
        preferred_batch_sizes=[int(b) for b in cfg.dynamic_batching.preferred_batch_size] if has_db else [],
        instance_count=int(groups[0].count) if groups else 1,
        instance_kind=_enum_name(groups[0], "kind") if groups else "KIND_CPU",
        num_versions=int(cfg.version_policy.latest.num_versions) if cfg.version_policy.HasField("latest") else 1,
        warmup=warmup,
        parameters={k: v.string_value for k, v in cfg.parameters.items()},
        cuda_graphs=graphs,
        default_model_filename=(comment_model_file if template == "python" else None) or cfg.default_model_filename or None,
    )
    return spec


def render_model_config(cfg: Any, header: str = "", comment_model_file: str | None = None) -> str:
    """config.pbtxt text for `cfg`, rendered by the build's templates, `header` lines first as
    comments; checked to parse back to exactly `cfg`.

    Raises:
        BuildFailure: the templates cannot express `cfg` (the differing fields are named).
    """
    spec = spec_from_config(cfg, comment_model_file)
    text = render_config(spec)
    back = parse_config(text, f"config of {cfg.name}")
    if back != cfg:
        ours = {f.name for f, _ in back.ListFields()}
        theirs = {f.name for f, _ in cfg.ListFields()}
        differ = sorted((ours ^ theirs) | {n for n in ours & theirs if getattr(back, n) != getattr(cfg, n)})
        raise BuildFailure(f"config of {cfg.name}: fields {', '.join(differ)} cannot be written by repo-gen's templates "
                           "(edited by hand?); edit config.pbtxt by hand or rebuild the model")
    return "".join(f"# {line}\n" for line in header.splitlines()) + text
