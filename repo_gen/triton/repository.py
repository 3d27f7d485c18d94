"""The model repository on disk: lock, staging, atomic commit, and the manifest.

A model repository is production state, so a build never edits it in place:

1. `RepositoryTransaction` takes an exclusive lock (flock on the repository's parent directory,
   so no lock file appears inside the repository), removes staging directories left by killed
   builds, and checks up front that the output is a writable directory and that no model it
   will write exists without having been created by repo-gen (the manifest says which are ours).
2. Stages write complete model directories into a staging directory next to the repository
   (same filesystem, so `rename` is atomic, and outside it, so a polling server never sees it).
3. `commit()` swaps each model directory in with renames (old ones moved aside first, restored
   if any rename fails), then replaces the manifest atomically. Until then the repository is
   untouched; any exception, Ctrl-C or SIGTERM before that leaves it exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repo_gen.config import validate_model_name
from repo_gen.errors import BuildFailure, UserError
from repo_gen.fileio import write_atomic, write_json_atomic
from repo_gen.log import logger
from repo_gen.manifest import MANIFEST_NAME, MANIFEST_SCHEMA, ModelEntry, read_manifest

__all__ = ["MANIFEST_NAME", "ModelEntry", "RepositoryTransaction", "locked_manifest", "read_manifest"]

STAGING_PREFIX = ".repo-gen-staging-"


@contextlib.contextmanager
def _lock_dir(directory: Path, wait_s: float) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise UserError(
                        f"--output {directory}: another repo-gen build holds the lock on this directory; "
                        "wait for it to finish (or pass --lock-timeout SECONDS to wait longer)"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM/SIGHUP raise KeyboardInterrupt, so the staging cleanup runs as on Ctrl-C."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    old = {}
    try:
        for s in (signal.SIGTERM, signal.SIGHUP):
            old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
        old = {}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class RepositoryTransaction:
    """Stage models, then swap them into the repository all together (see module docstring).

    Usage:
        with RepositoryTransaction(out, models=["a_onnx_fp32", ...]) as tx:
            d = tx.model_dir("a_onnx_fp32")    # write the whole model there
            tx.add(ModelEntry(...))
            tx.commit(build_record)
    """

    def __init__(self, repo: Path, models: list[str], lock_timeout_s: float = 0.0, keep_versions: bool = True):
        # Lexically normalized: staging and the commit's renames are computed from the parent of this
        # path, which for "<repository>/<model>/1/../.." (rebuild.sh) is not the repository's parent.
        self.repo = Path(os.path.abspath(repo))
        self.planned = [validate_model_name(m) for m in models]
        self.lock_timeout_s = lock_timeout_s
        self.keep_versions = keep_versions
        self.entries: dict[str, ModelEntry] = {}
        self.root_files: dict[str, str] = {}  # name -> text, written at the repository root on commit
        self.staging: Path | None = None
        self.work: Path | None = None
        self.manifest: dict[str, Any] = {}
        self.committed = False
        self._stack = contextlib.ExitStack()

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> RepositoryTransaction:
        parent = self.repo.parent
        if self.repo.exists() and not self.repo.is_dir():
            raise UserError(f"--output {self.repo}: is a file, not a directory; pass a directory path")
        if not parent.is_dir():
            raise UserError(f"--output {self.repo}: parent directory {parent} does not exist; create it first")
        target = self.repo if self.repo.exists() else parent
        if not os.access(target, os.W_OK | os.X_OK):
            raise UserError(f"--output {self.repo}: {target} is not writable; choose a writable --output or fix its permissions")
        self._stack.enter_context(_lock_dir(parent, self.lock_timeout_s))
        self._stack.enter_context(signals_as_exceptions())
        try:
            self._remove_stale_staging(parent)
            self.manifest = read_manifest(self.repo)
            self._check_ownership()
            try:
                self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{self.repo.name}-", dir=parent))
            except OSError as e:
                raise UserError(f"--output {self.repo}: cannot create a staging directory in {parent} ({e.strerror}); free space or choose another --output") from e
            self.work = self.staging / ".work"
            self.work.mkdir()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self._stack.close()
        # A full or read-only disk mid-build is the environment, not a repo-gen bug: one line, no traceback.
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BuildFailure(
                f"--output {self.repo}: no space left on the device of {self.repo.parent} while writing "
                f"{exc.filename or 'a staged file'}; nothing was changed; free space there or choose another --output"
            ) from exc
        ours = isinstance(exc, OSError) and str(exc.filename or "").startswith(str(self.repo.parent))
        if ours and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise UserError(
                f"--output {self.repo}: cannot write {exc.filename or 'a staged file'} ({exc.strerror}); "
                "nothing was changed; choose a writable --output or fix its permissions"
            ) from exc

    def _remove_stale_staging(self, parent: Path) -> None:
        # We hold the lock, so any staging directory for this repository is from a killed build.
        for p in parent.glob(f"{STAGING_PREFIX}{self.repo.name}-*"):
            logger.info(f"removing staging directory left by an interrupted build: {p}")
            shutil.rmtree(p, ignore_errors=True)

    def _check_ownership(self) -> None:
        ours = set(self.manifest["models"])
        for name in self.planned:
            path = self.repo / name
            if path.exists() and name not in ours:
                raise UserError(
                    f"--output {self.repo}: model directory {name!r} exists but was not created by repo-gen; "
                    "move it away or choose another --output (repo-gen never overwrites models it did not create)"
                )

    # -- staging ---------------------------------------------------------------------------
    def model_dir(self, name: str) -> Path:
        """Staged directory of model `name`; existing versions of our own model are carried over."""
        assert self.staging is not None
        validate_model_name(name)
        if name not in self.planned:
            raise BuildFailure(f"model {name} was not planned for this build (repo-gen bug)")
        d = self.staging / name
        if not d.exists():
            d.mkdir()
            old = self.repo / name
            if self.keep_versions and old.is_dir() and name in self.manifest["models"]:
                for v in version_numbers(old):
                    # __pycache__: written by the python backend's stub when it imports model.py
                    # (its embedded interpreter ignores PYTHONDONTWRITEBYTECODE); not ours to carry.
                    shutil.copytree(old / str(v), d / str(v), copy_function=_link_or_copy,
                                    ignore=shutil.ignore_patterns("__pycache__"))
        return d

    def staged_versions(self, name: str, version: int) -> list[int]:
        """Versions model `name` will have after this build: `version` plus those carried over."""
        return sorted({version, *version_numbers(self.model_dir(name))})

    def add_root_file(self, name: str, text: str) -> None:
        """A report file (e.g. the fidelity table) at the repository root; Triton ignores root files."""
        if "/" in name or name.startswith(".") or name == MANIFEST_NAME:
            raise BuildFailure(f"bad root file name {name!r} (repo-gen bug)")
        self.root_files[name] = text

    def add(self, entry: ModelEntry) -> None:
        self.entries[entry.name] = entry

    # -- commit ----------------------------------------------------------------------------
    def commit(self, build_record: dict[str, Any]) -> None:
        assert self.staging is not None
        for name in self.entries:
            if not (self.staging / name).is_dir():
                raise BuildFailure(f"model {name}: nothing was staged (repo-gen bug)")
        _fix_permissions(self.staging)
        created_repo = False
        if not self.repo.exists():
            self.repo.mkdir(mode=0o755)
            created_repo = True
        moved_aside: list[tuple[Path, Path]] = []
        moved_in: list[Path] = []
        trash = self.staging / ".old"
        trash.mkdir()
        try:
            for name in self.entries:
                dst = self.repo / name
                if dst.exists():
                    aside = trash / name
                    os.rename(dst, aside)
                    moved_aside.append((aside, dst))
                os.rename(self.staging / name, dst)
                moved_in.append(dst)
            manifest = dict(self.manifest)
            models = dict(manifest.get("models", {}))
            for name, entry in self.entries.items():
                models[name] = entry.to_dict()
            manifest["models"] = dict(sorted(models.items()))
            manifest["schema"] = MANIFEST_SCHEMA
            builds = dict(manifest.get("builds", {}))
            builds[build_record["model"]] = build_record
            manifest["builds"] = dict(sorted(builds.items()))
            for fname, text in self.root_files.items():
                write_atomic(self.repo / fname, text)
            write_json_atomic(self.repo / MANIFEST_NAME, manifest, sort_keys=True)
        except BaseException:
            for d in moved_in:
                shutil.rmtree(d, ignore_errors=True)
            for aside, dst in moved_aside:
                with contextlib.suppress(OSError):
                    os.rename(aside, dst)
            if created_repo:
                shutil.rmtree(self.repo, ignore_errors=True)
            raise
        self.committed = True
        self.manifest = manifest


def version_numbers(model_dir: Path) -> list[int]:
    """Triton's version directories of a model (numeric subdirectory names), ascending."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _link_or_copy(src: str, dst: str) -> None:
    # Existing version files are immutable once written: a hard link is a free, safe copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fix_permissions(root: Path) -> None:
    """Generated files: 0644, directories 0755 (never world-writable, whatever the umask)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            mode = 0o755 if f.endswith(".sh") else 0o644
            os.chmod(p, mode)


@contextlib.contextmanager
def locked_manifest(repo: Path, lock_timeout_s: float = 60.0) -> Iterator[dict[str, Any]]:
    """Hold the repository lock (the one builds take) and yield the manifest to edit in place.

    On a clean exit the manifest is written back atomically (`write_json_atomic`); on an
    exception it is left as it was. For small in-place edits after a build (e.g. `repo-gen tune`
    recording a tuned config); builds use `RepositoryTransaction`.
    """
    repo = Path(repo).absolute()
    with _lock_dir(repo.parent, lock_timeout_s):
        manifest = read_manifest(repo)
        yield manifest
        write_json_atomic(repo / MANIFEST_NAME, manifest, sort_keys=True)
