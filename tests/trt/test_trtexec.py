"""The trtexec command (argv) and the generated rebuild script (bash -n, shellcheck, quoting)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from repo_gen.trt.profile import profile_shapes
from repo_gen.trt.trtexec import RebuildSpec, docker_command, render_rebuild_script, trtexec_argv

PROFILE = profile_shapes("input", (3, 256, 256), 16, 64)
ODD_LIB = "/opt/my plugins/it's $HOME/librepo_gen_plugins.so"  # space, quote, dollar: must stay literal


def test_argv_flags():
    argv = trtexec_argv(RebuildSpec(PROFILE, version=3, opt_level=5), "/repo/m_trt_fp16")
    assert argv[0] == "trtexec"
    assert argv[1:] == [
        "--onnx=/repo/m_trt_fp16/model.onnx",
        "--stronglyTyped",
        "--minShapes=input:1x3x256x256",
        "--optShapes=input:16x3x256x256",
        "--maxShapes=input:64x3x256x256",
        "--saveEngine=/repo/m_trt_fp16/3/model.plan",
        "--timingCacheFile=/repo/m_trt_fp16/timing.cache",
        "--builderOptimizationLevel=5",
        "--profilingVerbosity=detailed",
        "--exportLayerInfo=/repo/m_trt_fp16/trt_layers.json",
        "--skipInference",
    ]


def test_argv_plugins_and_version_compatible():
    static = trtexec_argv(RebuildSpec(PROFILE, 1, plugin_libs=("/abs/lib.so",), timing_cache="/c/t.cache"), "/m")
    assert "--staticPlugins=/abs/lib.so" in static
    assert "--timingCacheFile=/c/t.cache" in static
    assert "--versionCompatible" not in static
    vc = trtexec_argv(RebuildSpec(PROFILE, 1, version_compatible=True, plugin_libs=("/abs/lib.so",)), "/m")
    assert "--versionCompatible" in vc
    # a version-compatible plan must carry its plugin library inside
    assert "--dynamicPlugins=/abs/lib.so" in vc and "--setPluginsToSerialize=/abs/lib.so" in vc
    assert not any(a.startswith("--staticPlugins") for a in vc)


def _script(tmp_path: Path, spec: RebuildSpec) -> Path:
    path = tmp_path / "m_trt_fp16" / "rebuild_engine.sh"
    path.parent.mkdir(parents=True)
    path.write_text(render_rebuild_script(spec, "m_trt_fp16"))
    path.chmod(0o755)
    return path


SPECS = {
    "plain": RebuildSpec(PROFILE, 1),
    "plugins": RebuildSpec(PROFILE, 2, plugin_libs=(ODD_LIB,), timing_cache="/tmp/a b/t.cache"),
    "vc": RebuildSpec(PROFILE, 1, version_compatible=True, plugin_libs=(ODD_LIB,)),
}


@pytest.mark.parametrize("which", sorted(SPECS))
def test_script_is_valid_bash(tmp_path, which):
    script = _script(tmp_path, SPECS[which])
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("which", sorted(SPECS))
def test_script_passes_shellcheck(tmp_path, which):
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    script = _script(tmp_path, SPECS[which])
    res = subprocess.run([exe, "-s", "bash", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_script_runs_the_exact_argv(tmp_path):
    """Run the script with a fake trtexec that prints its argv: the words arrive exactly as
    trtexec_argv says, odd characters included, and relative to wherever the script lives."""
    spec = SPECS["plugins"]
    script = _script(tmp_path, spec)
    fake = tmp_path / "fake_trtexec"
    fake.write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    lib = Path(ODD_LIB)
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"TRTEXEC": str(fake), "PATH": "/usr/bin:/bin"})
    # the plugin library does not exist here: the script stops before trtexec, naming it
    assert res.returncode == 1 and "plugin library not found" in res.stderr and str(lib) in res.stderr
    no_lib = RebuildSpec(PROFILE, 2, timing_cache="/tmp/a b/t.cache")
    script.write_text(render_rebuild_script(no_lib, "m_trt_fp16"))
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"TRTEXEC": str(fake), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == trtexec_argv(no_lib, script.parent)[1:]
    assert (script.parent / "2").is_dir()


def test_script_without_trtexec_says_where_to_run(tmp_path):
    script = _script(tmp_path, SPECS["plain"])
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                         env={"TRTEXEC": str(tmp_path / "nope"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 1 and "tritonserver image" in res.stderr


def test_docker_command_mounts_every_absolute_path(tmp_path):
    spec = RebuildSpec(PROFILE, 1, plugin_libs=("/opt/plugins/lib.so",), timing_cache="/var/cache/t.cache")
    cmd = docker_command("m_trt_fp16", spec, image="nvcr.io/nvidia/tritonserver:25.10-py3")
    assert cmd.startswith("docker run --rm --gpus all")
    # the repository is wherever the command runs: its root, mounted at its own path
    assert '-v "$PWD:$PWD" -w "$PWD"' in cmd
    assert "-v /opt/plugins:/opt/plugins" in cmd and "-v /var/cache:/var/cache" in cmd
    assert cmd.endswith("nvcr.io/nvidia/tritonserver:25.10-py3 bash m_trt_fp16/rebuild_engine.sh")
    unset = docker_command("m", RebuildSpec(PROFILE, 1))
    assert "${TRITON_IMAGE:?" in unset
    subprocess.run(["bash", "-n", "-c", unset], check=True)
