"""Write the rendered files: everything is rendered before the first byte is written, and a new
output directory appears only complete (staged beside it, then renamed)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from repo_gen.errors import UserError
from repo_gen.fileio import write_atomic


def check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: is a file; pass a directory (new or existing)")
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: parent directory {output.parent} does not exist; create it first")


def write_files(output: Path, files: dict[str, str]) -> list[Path]:
    """Write `files` (name -> text) into `output`; returns the paths written."""
    check_output(output)
    if output.is_dir():
        for name, text in files.items():
            write_atomic(output / name, text)
        return [output / n for n in files]
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for name, text in files.items():
            (staging / name).write_text(text)
        staging.chmod(0o755)
        staging.rename(output)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return [output / n for n in files]
