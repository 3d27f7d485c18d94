"""`repo-gen deploy`: Kubernetes / KServe manifests for a built repository.

values  (manifest + repository files -> one typed `DeployValues`; every decision is made here)
render  (`DeployValues` -> plain dicts per Kubernetes object, dumped as YAML)
write   (all files rendered first, then written atomically: bad input writes nothing)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def deploy(repo: Path, output: Path, **options: Any):
    """Decide the values, render every file, then write them. Returns (paths written, values)."""
    from repo_gen.deploy.render import render_files
    from repo_gen.deploy.values import make_values
    from repo_gen.deploy.write import check_output, write_files

    check_output(output)  # before the repository is read: a bad --output fails fast
    values = make_values(Path(repo), **options)
    files = render_files(values)
    return write_files(output, files), values
