"""Render config.pbtxt and generated code from the jinja2 templates in `templates/`, and check
every config against Triton's own schema (`model_config_pb2`) before it is written.

StrictUndefined: a missing value is an error at build time, never an empty string in a config.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from repo_gen.errors import BuildFailure
from repo_gen.triton.config import ModelConfigSpec

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    if not TEMPLATES_DIR.is_dir():
        raise BuildFailure(f"templates directory not found at {TEMPLATES_DIR}; reinstall repo-gen from its source tree")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - we render protobuf text and Python, not HTML
    )


def render_template(name: str, **context: Any) -> str:
    try:
        return _env().get_template(name).render(**context)
    except jinja2.UndefinedError as e:
        raise BuildFailure(f"template {name}: {e} (bug in repo-gen: a value the template needs was not given)") from e


def parse_config(text: str, what: str = "config.pbtxt"):
    """Parse with Triton's own schema; raise BuildFailure naming the bad line."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise BuildFailure(f"{what}: does not parse as Triton's ModelConfig: {e}") from e
    return cfg


def render_config(spec: ModelConfigSpec) -> str:
    """Render `spec` with `templates/<spec.template>.pbtxt.j2` and validate it."""
    text = render_template(f"{spec.template}.pbtxt.j2", c=spec.to_context())
    text = "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"
    cfg = parse_config(text, f"config of {spec.name}")
    if cfg.name != spec.name or cfg.max_batch_size != spec.max_batch_size:
        raise BuildFailure(f"config of {spec.name}: rendered fields differ from the spec (template bug)")
    return text
