"""A config rendered by the build's templates parses back into the spec that renders it again,
byte for byte: tune and the benchmarks write configs through the same templates as the build."""

import pytest

from repo_gen.errors import BuildFailure
from repo_gen.tasks import CLASSIFICATION
from repo_gen.triton.config import ModelConfigSpec
from repo_gen.triton.config_spec import render_model_config, spec_from_config
from repo_gen.triton.models import warmups
from repo_gen.triton.render import parse_config, render_config

(INP,), (OUT,) = CLASSIFICATION.io(64, 10, "fp32")


def _specs():
    yield ModelConfigSpec(name="m_py_fp32", template="python", max_batch_size=16, inputs=[INP], outputs=[OUT],
                          max_queue_delay_us=100, instance_count=2, warmup=warmups(INP, [1, 16]),
                          parameters={"intra_op_threads": "0"}, default_model_filename="model.onnx")
    yield ModelConfigSpec(name="m_onnx_fp16", template="onnxruntime", max_batch_size=8, inputs=[INP], outputs=[OUT],
                          max_queue_delay_us=None, instance_kind="KIND_AUTO", num_versions=2)
    yield ModelConfigSpec(name="m_trt_fp16", template="tensorrt_plan", max_batch_size=32, inputs=[INP], outputs=[OUT],
                          max_queue_delay_us=0, preferred_batch_sizes=[8, 32], instance_kind="KIND_GPU",
                          cuda_graphs=[(1, 1), (8, 2), (32, 9)], default_model_filename="model.plan",
                          warmup=warmups(INP, [1, 32]))


@pytest.mark.parametrize("spec", list(_specs()), ids=lambda s: s.template)
def test_render_parse_render_is_identical(spec):
    text = render_config(spec)
    again = render_model_config(parse_config(text), comment_model_file=spec.default_model_filename)
    assert again == text


def test_header_lines_become_comments():
    spec = next(_specs())
    text = render_model_config(parse_config(render_config(spec)), "tuned\nby tune")
    assert text.startswith("# tuned\n# by tune\n")


def test_fields_the_templates_do_not_write_are_refused_by_name():
    cfg = parse_config(render_config(next(_specs())))
    cfg.dynamic_batching.default_queue_policy.timeout_action = 1
    with pytest.raises(BuildFailure, match="dynamic_batching"):
        render_model_config(cfg)
    cfg = parse_config(render_config(next(_specs())))
    cfg.platform, cfg.backend = "ensemble", ""
    with pytest.raises(BuildFailure, match="ensemble"):
        spec_from_config(cfg)
