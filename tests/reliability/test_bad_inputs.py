"""Bad-input matrix: every bad input to build / serve / bench / tune, through the installed `repo-gen`.

For each case: the exit code, exactly one error line that names the input and the fix, the
repository byte-identical before and after (every file's bytes and mode, every directory's mode),
the model repo-gen did not create untouched, and no staging directory left behind. Interrupted and
concurrent builds are in the matrix too; after a SIGKILL the next build must remove what the killed
one left.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import TEST_MODEL
from tests.reliability.helpers import (
    BUILD_ARGS,
    FOREIGN,
    PY_ONLY,
    StderrWatch,
    add_foreign_model,
    can_mount,
    cli,
    diff_trees,
    error_lines,
    kill_quietly,
    mount,
    popen_cli,
    staging_dirs,
    tree_state,
    umount,
    write_malicious_checkpoint,
)


@dataclass
class Ctx:
    """What a case works on: the protected repository (a copy of the session's build plus a foreign model)."""

    repo: Path
    tmp: Path
    files: Path
    extra: dict = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Case:
    id: str
    command: str
    args: Callable[[Ctx], list[str]]
    rc: int
    message: str  # regex the single error line must match: the input and the fix
    setup: Callable[[Ctx], None] | None = None
    driver: str = "plain"  # plain | sigint | sigterm | sigkill | concurrent | concurrent_wait
    slow: bool = False


def build_args(ctx: Ctx, *more: str, output: Path | None = None) -> list[str]:
    return ["build", *BUILD_ARGS, "--output", str(output or ctx.repo), *more]


# -- setups -------------------------------------------------------------------------------------------

def _read_only(ctx: Ctx) -> None:
    if not can_mount():
        pytest.skip("needs root and mount(8) for a read-only bind mount (root ignores permission bits)")
    parent = ctx.tmp / "ro"
    parent.mkdir()
    shutil.move(str(ctx.repo), parent / "model_repository")
    ctx.repo = parent / "model_repository"
    r = mount(["--bind", str(parent), str(parent)])
    if r.returncode != 0:
        pytest.skip(f"bind mount not permitted here: {r.stderr.strip()}")
    ctx.cleanups.append(lambda: umount(parent))
    r = mount(["-o", "remount,ro,bind", str(parent)])
    if r.returncode != 0:
        pytest.skip(f"read-only remount not permitted here: {r.stderr.strip()}")


def _tiny_fs(ctx: Ctx) -> None:
    if not can_mount():
        pytest.skip("needs root and mount(8) for a size-limited tmpfs")
    used = sum(p.stat().st_size for p in ctx.repo.rglob("*") if p.is_file())
    mb = used // (1 << 20) + 2  # room for the repository as it is, not for a second copy of a model
    parent = ctx.tmp / "tiny"
    parent.mkdir()
    r = mount(["-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(parent)])
    if r.returncode != 0:
        pytest.skip(f"tmpfs mount not permitted here: {r.stderr.strip()}")
    ctx.cleanups.append(lambda: umount(parent))
    shutil.copytree(ctx.repo, parent / "model_repository", symlinks=True, copy_function=shutil.copy2)
    shutil.rmtree(ctx.repo)
    ctx.repo = parent / "model_repository"


def _port_in_use(ctx: Ctx) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    ctx.extra["port"] = s.getsockname()[1]
    from repo_gen.triton.server import free_port

    ctx.extra["free"] = [str(free_port()), str(free_port())]
    ctx.cleanups.append(s.close)


def _tamper_manifest(text: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        (ctx.repo / "repo-gen.json").write_text(text)

    return setup


def _traversal_manifest(ctx: Ctx) -> None:
    import json

    m = json.loads((ctx.repo / "repo-gen.json").read_text())
    entry = next(iter(m["models"].values()))
    entry["files"].append("../../etc/passwd")
    (ctx.repo / "repo-gen.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _need(module: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:  # noqa: ARG001
        if importlib.util.find_spec(f"repo_gen.commands.{module}") is None:
            pytest.skip(f"`repo-gen {module}` is not part of this build yet (repo_gen/commands/{module}.py missing)")

    return setup


W = "--weights"
CASES = [
    # ---- build: model and weights
    Case("build-unknown-model", "build", lambda c: ["build", "--model", "nope", "--output", str(c.repo)], 2,
         r"--model 'nope'.*choose one of"),
    Case("build-weights-missing", "build", lambda c: build_args(c, W, str(c.files / "absent.pth")), 2,
         r"--weights .*absent\.pth: no such file; pass"),
    Case("build-weights-empty", "build", lambda c: build_args(c, W, str(c.files / "empty.pth")), 2,
         r"--weights .*empty\.pth: is empty.*pass a \.pth/\.pt checkpoint"),
    Case("build-weights-not-a-checkpoint", "build", lambda c: build_args(c, W, str(c.files / "text.pth")), 2,
         r"--weights .*text\.pth: is not a PyTorch checkpoint.*pass a \.pth/\.pt checkpoint"),
    Case("build-weights-truncated", "build", lambda c: build_args(c, W, str(c.files / "truncated.pth")), 2,
         r"--weights .*truncated\.pth: the checkpoint is corrupt or truncated.*pass an uncorrupted"),
    Case("build-weights-corrupt-bytes", "build", lambda c: build_args(c, W, str(c.files / "flipped.pth")), 2,
         r"--weights .*flipped\.pth: the checkpoint is corrupt or truncated \(Bad CRC-32.*pass an uncorrupted"),
    Case("build-weights-no-state-dict", "build", lambda c: build_args(c, W, str(c.files / "list.pth")), 2,
         r"--weights .*list\.pth: holds no state dict.*pass a model checkpoint"),
    Case("build-weights-other-model", "build", lambda c: build_args(c, W, str(c.files / "mobilevit_xs.pth")), 2,
         rf"--weights .*mobilevit_xs\.pth: keys do not match {TEST_MODEL}.*choose the matching --model"),
    Case("build-weights-malicious-pickle", "build", lambda c: build_args(c, W, str(c.files / "evil.pth")), 2,
         r"--weights .*evil\.pth: refused by the safe loader.*not executed.*re-save"),
    # ---- build: labels, heads, cvnets, data config (issue 15)
    Case("build-labels-missing", "build", lambda c: build_args(c, "--labels", str(c.files / "absent.txt")), 2,
         r"--labels .*absent\.txt: no such file; pass a UTF-8 text file"),
    Case("build-labels-not-utf8", "build", lambda c: build_args(c, "--labels", str(c.files / "latin1.txt")), 2,
         r"--labels .*latin1\.txt: not UTF-8 text.*save it as UTF-8"),
    Case("build-labels-empty", "build", lambda c: build_args(c, "--labels", str(c.files / "empty.txt")), 2,
         r"--labels .*empty\.txt: the file is empty; write one class name per line"),
    Case("build-labels-blank-line", "build", lambda c: build_args(c, "--labels", str(c.files / "blank.txt")), 2,
         r"--labels .*blank\.txt: line 2 is blank"),
    Case("build-labels-duplicate", "build", lambda c: build_args(c, "--labels", str(c.files / "dup.txt")), 2,
         r"--labels .*dup\.txt: 'cat' appears on lines 1 and 3; class names must be unique"),
    Case("build-labels-count", "build", lambda c: build_args(c, "--labels", str(c.files / "three.txt")), 2,
         r"--labels .*three\.txt: 3 names, but the model's classifier head has 1000 outputs; give exactly 1000"),
    Case("build-eval-folders-disagree", "build", lambda c: build_args(c, "--eval-dir", str(c.files / "pets")), 2,
         r"--eval-dir .*pets: class folders cat, dog match none of the model's 1000 classes.*--labels FILE"),
    Case("build-head-one-output", "build", lambda c: build_args(c, W, str(c.files / "one_output.pth")), 2,
         r"--weights .*one_output\.pth: the classifier head has 1 output; a classifier needs at least 2 classes"),
    Case("build-head-none", "build", lambda c: build_args(c, W, str(c.files / "backbone.pth")), 2,
         r"--weights .*backbone\.pth: no classifier head.*not a backbone"),
    Case("build-cvnets-unknown-architecture", "build", lambda c: build_args(c, W, str(c.files / "cvnets_v2.pth")), 2,
         r"--weights .*cvnets_v2\.pth: an ml-cvnets checkpoint of an architecture repo-gen cannot map.*MobileViT v1"),
    Case("build-std-zero", "build", lambda c: build_args(c, "--std", "0.2,0,0.2"), 2,
         r"--std 0\.2,0\.0,0\.2: every channel's std must be a finite non-zero number"),
    Case("build-crop-pct-out-of-range", "build", lambda c: build_args(c, "--crop-pct", "1.5"), 2,
         r"--crop-pct 1\.5: must be in \(0, 1\]"),
    # ---- build: data, precision, batch sizes, other numbers
    Case("build-calib-dir-empty", "build",
         lambda c: build_args(c, "--calib-dir", str(c.files / "calib_empty")), 2,
         r"--calib-dir .*calib_empty: no image files.*put images there or leave --calib-dir out"),
    Case("build-calib-dir-unreadable", "build",
         lambda c: build_args(c, "--calib-dir", str(c.files / "calib_garbage")), 2,
         r"--calib-dir .*calib_garbage: none of the 3 image files could be decoded.*pass readable"),
    Case("build-calib-dir-is-file", "build",
         lambda c: build_args(c, "--calib-dir", str(c.files / "text.pth")), 2,
         r"--calib-dir .*: not a directory; pass a folder"),
    Case("build-unknown-precision", "build", lambda c: build_args(c, "--precisions", "fp32,fp8"), 2,
         r"--precisions '?fp8'?: unknown value; choose from fp32,fp16,int8"),
    Case("build-unknown-runtime", "build", lambda c: build_args(c, "--runtimes", "tflite"), 2,
         r"--runtimes '?tflite'?: unknown value; choose from"),
    Case("build-max-batch-zero", "build", lambda c: build_args(c, "--max-batch", "0"), 2,
         r"--max-batch 0: must be an integer from 1 to 4096"),
    Case("build-max-batch-huge", "build", lambda c: build_args(c, "--max-batch", "100000"), 2,
         r"--max-batch 100000: must be an integer from 1 to 4096"),
    Case("build-max-batch-not-int", "build", lambda c: build_args(c, "--max-batch", "eight"), 2,
         r"argument --max-batch: invalid int value: 'eight'"),
    Case("build-opt-batch-above-max", "build", lambda c: build_args(c, "--opt-batch", "64"), 2,
         r"--opt-batch 64: must be between 1 and --max-batch"),
    Case("build-image-size", "build", lambda c: build_args(c, "--image-size", "100"), 2,
         r"--image-size 100: .*needs a multiple of \d+ .*\(e\.g\. \d+\)"),
    Case("build-version-zero", "build", lambda c: build_args(c, "--version", "0"), 2,
         r"--version 0: Triton model versions start at 1"),
    Case("build-opset-old", "build", lambda c: build_args(c, "--opset", "13"), 2, r"--opset 13: must be >= 17"),
    # ---- build: the output
    Case("build-output-is-file", "build", lambda c: build_args(c, output=c.repo / "repo-gen.json"), 2,
         r"--output .*repo-gen\.json: is a file, not a directory; pass a directory path"),
    Case("build-output-parent-missing", "build", lambda c: build_args(c, output=c.tmp / "no" / "such" / "repo"), 2,
         r"--output .*: parent directory .* does not exist; create it first"),
    Case("build-output-read-only", "build", build_args, 2,
         r"--output .*model_repository: .* is not writable; choose a writable --output", setup=_read_only),
    Case("build-disk-full", "build", build_args, 1,
         r"--output .*: no space left on the device.*nothing was changed; free space there or choose another --output",
         setup=_tiny_fs),
    Case("build-foreign-model-in-the-way", "build",
         lambda c: ["build", *PY_ONLY, "--output", str(c.extra["foreign_repo"])], 2,
         r"model directory '.*_py_fp32' exists but was not created by repo-gen; move it away or choose another --output",
         setup=lambda c: c.extra.update(foreign_repo=_foreign_only_repo(c))),
    Case("build-manifest-corrupt", "build", build_args, 2,
         r"repo-gen\.json: unreadable manifest.*restore it or build into a new --output",
         setup=_tamper_manifest("{not json")),
    Case("build-manifest-traversal", "build", build_args, 2,
         r"file path '\.\./\.\./etc/passwd' escapes the repository; the manifest was tampered with",
         setup=_traversal_manifest),
    # ---- build: interrupted and concurrent
    Case("build-sigint-mid-build", "build", lambda c: build_args(c, "--no-cache"), 130, r"^interrupted; nothing was changed",
         driver="sigint", slow=True),
    Case("build-sigterm-mid-build", "build", lambda c: build_args(c, "--no-cache"), 130, r"^interrupted; nothing was changed",
         driver="sigterm", slow=True),
    Case("build-sigkill-mid-build", "build", lambda c: build_args(c, "--no-cache"), -signal.SIGKILL, "",
         driver="sigkill"),
    Case("build-concurrent-no-wait", "build", build_args, 2,
         r"--output .*: another repo-gen build holds the lock.*pass --lock-timeout SECONDS", driver="concurrent"),
    Case("build-concurrent-waits", "build", lambda c: build_args(c, "--lock-timeout", "300"), 0, "",
         driver="concurrent_wait"),
    # ---- serve
    Case("serve-missing-repository", "serve", lambda c: ["serve", "--model-repository", str(c.tmp / "nowhere")], 2,
         r"--model-repository .*nowhere: no such directory; run `repo-gen build --output"),
    Case("serve-empty-repository", "serve",
         lambda c: ["serve", "--model-repository", str(c.extra["empty"])], 2,
         r"--model-repository .*: holds no models; run `repo-gen build",
         setup=lambda c: c.extra.update(empty=_mkdir(c.tmp / "empty_repo"))),
    Case("serve-port-out-of-range", "serve", lambda c: ["serve", "--model-repository", str(c.repo), "--http-port", "70000"],
         2, r"--http-port 70000: must be from 1 to 65535"),
    Case("serve-port-in-use", "serve", lambda c: ["serve", "--model-repository", str(c.repo), "--grpc-port",
                                                  str(c.extra["port"]), "--http-port", c.extra["free"][0],
                                                  "--metrics-port", c.extra["free"][1]],
         2, r"--grpc-port \d+: port already in use on 127\.0\.0\.1.*pass a free port with --grpc-port", setup=_port_in_use),
    Case("serve-poll-with-unservable-models", "serve",
         lambda c: ["serve", "--model-repository", str(c.repo), "--model-control", "poll"], 2,
         r"--model-control poll: .*cannot serve .*_onnx_fp32.*use --model-control explicit, or build only servable runtimes"),
    Case("serve-manifest-corrupt", "serve", lambda c: ["serve", "--model-repository", str(c.repo)], 2,
         r"repo-gen\.json: unreadable manifest.*restore it", setup=_tamper_manifest("[1, 2")),
    Case("serve-manifest-traversal", "serve", lambda c: ["serve", "--model-repository", str(c.repo)], 2,
         r"escapes the repository; the manifest was tampered with", setup=_traversal_manifest),
    # ---- bench / tune (skipped, with the reason, where the command is not part of this build)
    Case("bench-missing-repository", "bench", lambda c: ["bench", "--model-repository", str(c.tmp / "nowhere")], 2,
         r"--model-repository .*nowhere: no such directory", setup=_need("bench")),
    Case("bench-unknown-model", "bench", lambda c: ["bench", "--model-repository", str(c.repo), "--models", "nope"], 2,
         r"--models nope: not in .*; choose from", setup=_need("bench")),
    Case("bench-concurrency-zero", "bench",
         lambda c: ["bench", "--model-repository", str(c.repo), "--concurrency", "0"], 2,
         r"--concurrency.*(>= 1|must be)", setup=_need("bench")),
    Case("bench-batch-size-zero", "bench",
         lambda c: ["bench", "--model-repository", str(c.repo), "--batch-sizes", "0"], 2,
         r"--batch-sizes.*(>= 1|must be)", setup=_need("bench")),
    Case("tune-unknown-model", "tune", lambda c: ["tune", "--model-repository", str(c.repo), "--model", "nope"], 2,
         r"--model nope: no such model in .*; choose from", setup=_need("tune")),
    Case("tune-instance-counts-zero", "tune",
         lambda c: ["tune", "--model-repository", str(c.repo), "--model", f"{TEST_MODEL}_py_fp32", "--instance-counts", "0"],
         2, r"--instance-counts.*values must be from 1 to 64", setup=_need("tune")),
    Case("tune-negative-budget", "tune",
         lambda c: ["tune", "--model-repository", str(c.repo), "--model", f"{TEST_MODEL}_py_fp32",
                    "--latency-budget-ms", "-5"], 2, r"--latency-budget-ms -5(\.0)?: must be > 0", setup=_need("tune")),
]


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _foreign_only_repo(ctx: Ctx) -> Path:
    """A repository holding someone else's model under the name repo-gen would write: the build must refuse."""
    repo = ctx.tmp / "foreign_repo"
    d = repo / f"{TEST_MODEL}_py_fp32"
    (d / "1").mkdir(parents=True)
    (d / "config.pbtxt").write_text(f'name: "{TEST_MODEL}_py_fp32"\nbackend: "python"\n')
    (d / "1" / "model.py").write_text("# not ours\n")
    ctx.extra["protect"] = repo
    return repo


# -- bad files, made once -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    import timm
    import torch

    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "empty.pth").write_bytes(b"")
    (d / "text.pth").write_text("this is not a checkpoint\n")
    good = timm.create_model(TEST_MODEL).state_dict()
    torch.save(good, d / "good.pth")
    data = (d / "good.pth").read_bytes()
    (d / "truncated.pth").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    for i in range(len(flipped) // 3, len(flipped) // 3 + 4096):  # a burst of corrupted bytes mid-file
        flipped[i] ^= 0xFF
    (d / "flipped.pth").write_bytes(bytes(flipped))
    torch.save([1, 2, 3], d / "list.pth")
    torch.save({"state_dict": timm.create_model("mobilevit_xs").state_dict()}, d / "mobilevit_xs.pth")
    write_malicious_checkpoint(d / "evil.pth", d / "PWNED")
    (d / "calib_empty").mkdir()
    (d / "calib_empty" / "notes.txt").write_text("no images here\n")
    (d / "latin1.txt").write_bytes("caf\xe9\nth\xe9\n".encode("latin-1"))
    (d / "empty.txt").write_bytes(b"")
    (d / "blank.txt").write_text("cat\n\ndog\n")
    (d / "dup.txt").write_text("cat\ndog\ncat\n")
    (d / "three.txt").write_text("cat\ndog\nbird\n")
    from PIL import Image

    for cls in ("cat", "dog"):
        (d / "pets" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32), (200, 100, 50)).save(d / "pets" / cls / "x.png")
    torch.save(timm.create_model(TEST_MODEL, num_classes=1).state_dict(), d / "one_output.pth")
    torch.save({k: v for k, v in good.items() if not k.startswith("head.")}, d / "backbone.pth")
    cvnets = torch.load(Path(__file__).resolve().parents[1] / "fixtures" / "cvnets" / "mobilevit_xxs_cvnets.pth",
                        weights_only=True)
    torch.save({k.replace("pre_norm_mha", "pre_norm_attn"): v for k, v in cvnets.items()}, d / "cvnets_v2.pth")
    g = d / "calib_garbage"
    (g / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "sub/c.webp"):
        (g / name).write_bytes(b"\x00garbage, not an image" * 10)
    return d


# -- drivers ------------------------------------------------------------------------------------------

def _run_interrupted(case: Case, ctx: Ctx, sig: int) -> tuple[int, str]:
    """Start a real build (no cache, so it spends seconds in PyTorch) and signal it mid-export."""
    proc = popen_cli(case.args(ctx))
    watch = StderrWatch(proc)
    try:
        assert watch.wait_for(r"\[export onnx\] \.\.\.", 180), "build never reached export:\n" + watch.text
        time.sleep(0.5)
        proc.send_signal(sig)
        return watch.finish()
    finally:
        kill_quietly(proc, signal.SIGKILL)


def _run_concurrent(case: Case, ctx: Ctx, wait: bool) -> tuple[int, str]:
    """Build A holds the repository's lock; build B (the case) starts meanwhile."""
    # A also builds INT8 (calibration and its search on random weights take minutes), so it still
    # holds the lock when B, which may start slowly on a busy machine, tries to take it.
    first = popen_cli(build_args(ctx, "--no-cache", "--precisions", "fp32,fp16,int8"))
    watch_a = StderrWatch(first)
    try:
        assert watch_a.wait_for(r"\[load model\] \.\.\.", 180), "first build never took the lock:\n" + watch_a.text
        if not wait:
            second = cli(case.args(ctx), timeout=120)
            first.send_signal(signal.SIGINT)
            rc_a, err_a = watch_a.finish()
            assert rc_a == 130, err_a[-2000:]
            return second.returncode, second.stderr
        second = popen_cli(case.args(ctx))
        watch_b = StderrWatch(second)
        time.sleep(2.0)
        assert second.poll() is None, "second build did not wait for the lock:\n" + watch_b.text
        first.send_signal(signal.SIGINT)
        rc_a, err_a = watch_a.finish()
        assert rc_a == 130, err_a[-2000:]
        return watch_b.finish(240)
    finally:
        kill_quietly(first, signal.SIGKILL)


def _model_files(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "repo-gen.json"}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input(case: Case, fp32_repo, bad_files, tmp_path):
    ctx = Ctx(repo=tmp_path / "parent" / "model_repository", tmp=tmp_path, files=bad_files)
    ctx.repo.parent.mkdir()
    shutil.copytree(fp32_repo, ctx.repo)
    add_foreign_model(ctx.repo)
    try:
        if case.setup:
            case.setup(ctx)
        protect = ctx.extra.get("protect", ctx.repo)
        before = tree_state(protect)
        foreign_before = tree_state(protect / FOREIGN) if (protect / FOREIGN).exists() else None

        if case.driver == "plain":
            proc = cli(case.args(ctx), timeout=300)
            rc, stderr = proc.returncode, proc.stderr
        elif case.driver in ("sigint", "sigterm"):
            rc, stderr = _run_interrupted(case, ctx, signal.SIGINT if case.driver == "sigint" else signal.SIGTERM)
        elif case.driver == "sigkill":
            rc, stderr = _run_interrupted(case, ctx, signal.SIGKILL)
        else:
            rc, stderr = _run_concurrent(case, ctx, wait=case.driver == "concurrent_wait")

        assert rc == case.rc, f"exit code {rc}, expected {case.rc}; stderr:\n{stderr[-3000:]}"
        assert "Traceback" not in stderr, stderr[-3000:]
        after = tree_state(protect)
        if case.rc != 0 and case.driver != "sigkill":
            lines = error_lines(stderr)
            assert len(lines) == 1, f"expected one error line, got {lines}\n{stderr[-2000:]}"
            import re

            assert re.search(case.message, lines[0]), f"{lines[0]!r} does not match {case.message!r}"
        if case.rc == 0:
            # A build that succeeded rebuilt the same inputs: every model file is byte-identical.
            assert not diff_trees(_model_files(before), _model_files(after))
        else:
            assert not diff_trees(before, after), f"repository changed: {diff_trees(before, after)}"
        if foreign_before is not None:
            assert tree_state(protect / FOREIGN) == foreign_before
        left = staging_dirs(protect.parent)
        if case.driver == "sigkill":
            # SIGKILL cannot be caught: the killed build's staging directory stays, outside the
            # repository, until the next build on this repository removes it.
            assert left, "expected the killed build's staging directory"
            nxt = cli(build_args(ctx), timeout=300)
            assert nxt.returncode == 0, nxt.stderr[-3000:]
            assert "removing staging directory left by an interrupted build" in nxt.stderr
            assert not staging_dirs(protect.parent)
            assert not diff_trees(_model_files(before), _model_files(tree_state(protect)))
            assert tree_state(protect / FOREIGN) == foreign_before
        else:
            assert not left, f"staging directories left behind: {left}"
        if case.id == "build-weights-malicious-pickle":
            assert not (bad_files / "PWNED").exists(), "the pickle's payload ran"
    finally:
        for fn in reversed(ctx.cleanups):
            fn()


def test_matrix_is_large_enough():
    commands = {c.command for c in CASES}
    assert len(CASES) >= 15 and commands == {"build", "serve", "bench", "tune"}
