"""Security: checkpoints are data, names and paths stay inside the repository, no shell, loopback by
default, generated code never evaluates what clients send, generated files are not world-writable."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
from pathlib import Path

import pytest

from repo_gen.errors import UserError
from tests.conftest import TEST_MODEL
from tests.reliability.helpers import (
    BUILD_ARGS,
    REPO_GEN,
    cli,
    listening_addresses,
    tree_state,
    write_malicious_checkpoint,
)

PKG = Path(__file__).resolve().parents[2] / "repo_gen"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _py_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    # a method called on an expression (`model.float().eval()`) is not the builtin of that name
    parts.append(f.id if isinstance(f, ast.Name) else "<expr>")
    return ".".join(reversed(parts))


# -- checkpoints are data ---------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_malicious_checkpoint_is_refused_not_executed(tmp_path, legacy):
    from repo_gen.models import get_model_spec
    from repo_gen.torch.loader import load_model

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    write_malicious_checkpoint(path, marker, legacy=legacy)
    with pytest.raises(UserError, match=r"refused by the safe loader .* not executed") as e:
        load_model(get_model_spec(TEST_MODEL), weights=path)
    assert e.value.exit_code == 2
    assert "weights_only=False" not in str(e.value)  # never advise the unsafe load
    assert not marker.exists(), "the checkpoint's payload ran"


@pytest.mark.slow  # a CLI subprocess that imports torch
def test_malicious_checkpoint_through_cli(tmp_path):
    marker = tmp_path / "PWNED"
    write_malicious_checkpoint(tmp_path / "evil.pth", marker)
    r = cli(["build", *BUILD_ARGS, "--weights", str(tmp_path / "evil.pth"), "--output", str(tmp_path / "repo")])
    assert r.returncode == 2, r.stderr[-2000:]
    assert "refused by the safe loader" in r.stderr and not marker.exists()
    assert not (tmp_path / "repo").exists()


def test_every_torch_load_is_weights_only():
    calls = []
    for f in _py_files(PKG):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call) and _call_name(node).endswith("torch.load"):
                kw = {k.arg: k.value for k in node.keywords}
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{f.relative_to(PKG)}:{node.lineno}", safe))
    assert calls, "no torch.load found: the scan is broken"
    assert all(safe for _, safe in calls), [c for c, safe in calls if not safe]


# -- names and paths --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", "x/../../y", "a\\b", "", "a\x00b", "-flag", ".hidden", "a b"])
def test_model_names_cannot_escape(name):
    from repo_gen.config import validate_model_name

    with pytest.raises(UserError, match="only letters, digits"):
        validate_model_name(name)


def test_planned_model_with_traversal_is_refused(tmp_path):
    from repo_gen.triton.repository import RepositoryTransaction

    with pytest.raises(UserError), RepositoryTransaction(tmp_path / "repo", ["../escape"]):
        pass
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("entry", [
    {"../evil": {"files": []}},
    {"a/b": {"files": []}},
    {"ok": {"files": ["../../etc/passwd"]}},
    {"ok": {"files": ["/etc/passwd"]}},
    {"ok": {"files": ["ok/../../x"]}},
], ids=["name-dotdot", "name-slash", "file-dotdot", "file-absolute", "file-inner-dotdot"])
def test_tampered_manifest_is_refused(tmp_path, entry):
    import json

    from repo_gen.triton.repository import read_manifest

    (tmp_path / "repo-gen.json").write_text(json.dumps({"schema": 1, "models": entry, "builds": {}}))
    with pytest.raises(UserError, match="(escapes the repository|only letters, digits)"):
        read_manifest(tmp_path)


def test_cli_model_name_with_path_is_refused(tmp_path):
    r = cli(["build", "--model", "../../etc", "--output", str(tmp_path / "repo")])
    assert r.returncode == 2 and "unknown model" in r.stderr
    assert not (tmp_path / "repo").exists()


# -- no shell ---------------------------------------------------------------------------------------

SHELL_CALLS = {"os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.execv", "os.execvp", "os.spawnl",
               "os.spawnlp", "os.spawnv", "os.spawnvp", "pty.spawn", "commands.getoutput", "subprocess.getoutput",
               "subprocess.getstatusoutput"}
EVAL_CALLS = {"eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "marshal.loads", "yaml.load",
              "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads"}


def test_no_user_string_reaches_a_shell():
    found = []
    for f in _py_files(PKG):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            where = f"{f.relative_to(PKG)}:{node.lineno} {name}"
            if name in SHELL_CALLS or name in EVAL_CALLS:
                found.append(where)
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(where + " shell=...")
            if name.startswith("subprocess.") and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                found.append(where + " with a command string")  # argv lists only
    assert not found, found


def test_rebuild_script_quotes_every_path(tmp_path):
    """Paths with spaces, quotes, $() and ; survive the generated bash script as single words, unexpanded."""
    trtexec = pytest.importorskip("repo_gen.trt.trtexec", reason="repo_gen/trt/trtexec.py not in this build")
    from repo_gen.trt.profile import ProfileShapes

    marker = tmp_path / "PWNED"
    nasty = str(tmp_path / f"dir with space/$(touch {marker})/`touch {marker}`;touch {marker};'q'\"d\"/lib$HOME.so")
    spec = trtexec.RebuildSpec(profile=ProfileShapes("input", (1, 3, 256, 256), (4, 3, 256, 256), (8, 3, 256, 256)),
                               version=1, plugin_libs=(nasty,), timing_cache=nasty + ".cache")
    script = trtexec.render_rebuild_script(spec, "m_trt_fp32")
    words = trtexec.script_words(spec)
    here = str(tmp_path / "model dir")
    # Let bash itself expand exactly those words (printf instead of trtexec: nothing is built here).
    prog = f"HERE={trtexec.shlex.quote(here)}; printf '%s\\0' " + " ".join(words)
    out = subprocess.run(["bash", "-c", prog], capture_output=True, timeout=30, check=True)  # noqa: S603, S607
    assert out.stdout.decode().split("\0")[:-1] == trtexec.trtexec_argv(spec, here)[1:]
    lib_checks = [ln for ln in script.splitlines() if ln.startswith("if [[ ! -f ")]
    for ln in lib_checks:  # the plugin-library existence checks: run them, the path must stay one word
        subprocess.run(["bash", "-c", ln + " echo missing; fi"], capture_output=True, timeout=30)  # noqa: S603, S607
    assert not marker.exists(), "a path in the rebuild script was executed"


# -- serving surface --------------------------------------------------------------------------------

def test_serve_defaults_to_loopback():
    from repo_gen.cli import make_parser
    from repo_gen.triton.server import TritonServer

    args = make_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    argv = TritonServer(Path("/nonexistent")).argv()
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in argv


@pytest.mark.server
def test_server_listens_on_loopback_only(triton):
    for port in (triton.ports.http, triton.ports.grpc, triton.ports.metrics):
        assert listening_addresses(port) == {"127.0.0.1"}, (port, listening_addresses(port))


FORBIDDEN_IN_MODEL_CODE = EVAL_CALLS | SHELL_CALLS | {"subprocess.run", "subprocess.Popen", "subprocess.call",
                                                      "subprocess.check_output"}
FORBIDDEN_IMPORTS = {"pickle", "marshal", "subprocess", "dill", "cloudpickle", "shelve", "yaml"}
DYNAMIC_IMPORTS = {"importlib.import_module", "importlib.util.spec_from_file_location"}


def _model_code_problems(source: str, where: str) -> list[str]:
    """What in generated python-backend code could turn request data into code, a command or a path.

    A dynamic import is allowed only of a file fixed at generation time: inside a function that
    takes no arguments (so no request can reach it) and builds the path from `__file__`.
    """
    tree = ast.parse(source, where)
    problems = []
    fixed_path_funcs = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and not (fn.args.args or fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs):
            if any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(fn)):
                fixed_path_funcs |= {id(n) for n in ast.walk(fn)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in FORBIDDEN_IN_MODEL_CODE:
                problems.append(f"{where}:{node.lineno} calls {name}")
            if name in DYNAMIC_IMPORTS and id(node) not in fixed_path_funcs:
                problems.append(f"{where}:{node.lineno} imports code from a path that is not fixed ({name})")
            if name == "open" and id(node) not in fixed_path_funcs:
                problems.append(f"{where}:{node.lineno} opens a file (request data must never become a path)")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            problems += [f"{where}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] in FORBIDDEN_IMPORTS]
    return problems


def test_generated_model_code_never_evaluates_request_data(fp32_repo):
    files = sorted(fp32_repo.rglob("*.py"))
    assert files, "no generated model.py found"
    problems = []
    for f in files:
        problems += _model_code_problems(f.read_text(), str(f.relative_to(fp32_repo)))
    # Every python-backend template, also those of models this build did not write (preprocess, ensemble steps).
    from repo_gen.triton.render import _env

    for t in sorted(TEMPLATES.glob("*.py.j2")):
        src = (TEMPLATES / t.name).read_text()
        try:
            rendered = _env().get_template(t.name).render(**_template_defaults(src))
        except Exception:  # noqa: BLE001 - a template needing richer context: scan its text instead
            rendered = None
        if rendered is not None:
            problems += _model_code_problems(rendered, t.name)
        else:
            problems += [f"{t.name}: mentions {w}" for w in ("eval(", "exec(", "pickle", "subprocess", "os.system")
                         if w in src]
    assert not problems, problems


def _template_defaults(src: str) -> dict:
    import re

    names = set(re.findall(r"{{\s*([a-zA-Z_]\w*)", src))
    return {n: "x" for n in names}


@pytest.mark.slow  # a full MobileViT build in a subprocess
def test_generated_files_are_not_world_writable(tmp_path):
    """Build under umask 000: the repository still gets 0644 files and 0755 directories."""
    out = tmp_path / "repo"
    r = subprocess.run([REPO_GEN, "build", *BUILD_ARGS, "--output", str(out)],  # noqa: S603
                       capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0))  # noqa: PLW1509
    assert r.returncode == 0, r.stderr[-3000:]
    bad = {}
    for rel, (mode, kind) in tree_state(out).items():
        if mode & stat.S_IWOTH or mode & stat.S_IWGRP:
            bad[rel] = oct(mode)
        expected = 0o755 if kind == "dir" or rel.endswith(".sh") else 0o644
        if stat.S_IMODE(mode) != expected:
            bad[rel] = oct(mode)
    assert not bad, bad
    assert stat.S_IMODE(out.stat().st_mode) & 0o022 == 0


def test_an_output_path_with_dot_dot_is_the_directory_it_names(tmp_path):
    """`--output <repo>/<model>/1/../..` (what a torch model's rebuild.sh passes) stages next to the
    repository, not inside it: the commit's renames failed with EINVAL before."""
    from repo_gen.triton.repository import RepositoryTransaction

    (tmp_path / "repo" / "m" / "1").mkdir(parents=True)
    tx = RepositoryTransaction(tmp_path / "repo" / "m" / "1" / ".." / "..", [])
    assert tx.repo == tmp_path / "repo"
