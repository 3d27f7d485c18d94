"""The repository says what its python-backend models need from the serving image, and how to get it."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

from packaging.requirements import Requirement

from repo_gen.triton.python_env import NGC_PIP_LINE, REQUIREMENTS_NAME

# Import name -> distribution name, for what the generated model code imports.
DIST_OF = {"PIL": "pillow", "onnxruntime": "onnxruntime", "numpy": "numpy"}
PROVIDED_BY_TRITON = {"triton_python_backend_utils"}


def _requirements(repo: Path) -> dict[str, Requirement]:
    lines = [ln for ln in (repo / REQUIREMENTS_NAME).read_text().splitlines() if ln and not ln.startswith("#")]
    reqs = [Requirement(ln) for ln in lines]
    return {r.name.lower(): r for r in reqs}


def _third_party_imports(py_file: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(py_file.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m not in PROVIDED_BY_TRITON and m != "__future__"}


def test_requirements_cover_every_import_of_every_python_model(pipeline_repo):
    import json

    reqs = _requirements(pipeline_repo)
    manifest = json.loads((pipeline_repo / "repo-gen.json").read_text())
    python_models = [n for n, e in manifest["models"].items() if e["backend"] == "python"]
    assert len(python_models) >= 2  # the classifier and the preprocess model
    text = (pipeline_repo / REQUIREMENTS_NAME).read_text()
    for name in python_models:
        assert f"#   {name}\n" in text
        imports = set()
        for py in (pipeline_repo / name).rglob("*.py"):
            imports |= _third_party_imports(py)
        assert imports, name
        for mod in imports:
            assert DIST_OF.get(mod, mod).lower() in reqs, f"{name} imports {mod}, missing from {REQUIREMENTS_NAME}"
    # Pinned to what the build ran with (the fidelity figures were measured with that onnxruntime).
    for dist in ("onnxruntime", "pillow"):
        assert str(reqs[dist].specifier) == f"=={importlib.metadata.version(dist)}"
    assert NGC_PIP_LINE in text


def test_readme_ngc_section_installs_them():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Serving in the NGC Triton image (GPU)", 1)[1].split("\n## ", 1)[0]
    assert NGC_PIP_LINE in section and "tritonserver --model-repository" in section
    # The plain start line must not name a plugin library a default build does not use.
    plain = [ln for ln in section.splitlines() if ln.startswith("tritonserver ")]
    assert plain and all("plugins=" not in ln for ln in plain)
