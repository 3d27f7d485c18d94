"""Config rendering: one all-fields fixture per template, parsed by Triton's own schema."""

from repo_gen.triton.config import EnsembleStep, ModelConfigSpec, TensorSpec, WarmupSpec
from repo_gen.triton.render import parse_config, render_config


def all_fields(template: str) -> ModelConfigSpec:
    inp = TensorSpec("input", "TYPE_FP32", [3, 256, 256])
    return ModelConfigSpec(
        name="m_all",
        template=template,
        max_batch_size=32,
        inputs=[inp],
        outputs=[TensorSpec("logits", "TYPE_FP32", [1000], label_filename="labels.txt")],
        max_queue_delay_us=250,
        preferred_batch_sizes=[8, 32],
        instance_count=3,
        instance_kind="KIND_CPU",
        num_versions=2,
        warmup=[WarmupSpec("w1", 1, [inp]), WarmupSpec("w32", 32, [inp], kind="zero_data")],
        parameters={"intra_op_threads": "2", "b": "x"},
        ensemble_steps=[EnsembleStep("a", -1, {"x": "y"}, {"z": "w"})],
    )


def test_onnxruntime_all_fields():
    cfg = parse_config(render_config(all_fields("onnxruntime")))
    assert cfg.backend == "onnxruntime" and cfg.max_batch_size == 32
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert cfg.instance_group[0].count == 3
    assert cfg.version_policy.latest.num_versions == 2
    assert [w.batch_size for w in cfg.model_warmup] == [1, 32]
    assert cfg.model_warmup[1].inputs["input"].zero_data
    assert cfg.output[0].label_filename == "labels.txt"
    assert cfg.parameters["intra_op_threads"].string_value == "2"


def test_python_all_fields():
    cfg = parse_config(render_config(all_fields("python")))
    assert cfg.backend == "python"
    assert list(cfg.input[0].dims) == [3, 256, 256]


def test_no_dynamic_batching_when_delay_is_none():
    spec = all_fields("python")
    spec.max_queue_delay_us = None
    cfg = parse_config(render_config(spec))
    assert not cfg.HasField("dynamic_batching")
