"""`repo-gen deploy`: every object checked against Kubernetes 1.32's own OpenAPI schemas, the
tritonserver argv of the Deployment started for real, bad input refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import TEST_MAX_BATCH, TEST_MODEL

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (requirements.txt)")
K8S = "1.32.0"
RECORDED_IMAGE = "nvcr.io/nvidia/tritonserver:24.12-py3"


@pytest.fixture(scope="session")
def plan_repo(tmp_path_factory) -> Path:
    """py + trt runtimes in FP32 with the pipeline: a plan model (not built here: no TensorRT), python
    models and an ensemble."""
    from repo_gen.build import build
    from repo_gen.config import BuildConfig

    out = tmp_path_factory.mktemp("deploy") / "model_repository"
    build(BuildConfig(model=TEST_MODEL, output=out, max_batch=TEST_MAX_BATCH, precisions=("fp32",),
                      runtimes=("py", "trt"), pipeline=True, triton_image=RECORDED_IMAGE))
    return out


def _run(*argv: str) -> int:
    from repo_gen.cli import main

    return main(list(argv))


def _load_dir(d: Path) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(d.glob("*.yaml"))}


def _validate(obj: dict) -> None:
    kv.validate(obj, K8S, strict=True)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("url,plan_cache", [(None, "pvc"), ("s3://my-models/mobilevit/v1", "emptydir"),
                                            ("gs://my-models/repo", "pvc"), ("pvc:models-rwx", "pvc")])
def test_kubernetes_objects_validate_against_k8s_1_32(plan_repo, tmp_path, url, plan_cache):
    out = tmp_path / "k8s"
    args = ["deploy", "--model-repository", str(plan_repo), "--output", str(out), "--replicas", "2",
            "--plan-cache", plan_cache]
    assert _run(*args, *(["--repository-url", url] if url else [])) == 0
    objs = _load_dir(out)
    kinds = {o["kind"] for o in objs.values()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "PodMonitor"} <= kinds
    assert ("PersistentVolumeClaim" in kinds) == (plan_cache == "pvc")
    for obj in objs.values():
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resource: no maintained package ships its schema (README of the output says so)
        _validate(obj)  # raises ValidationError with the path of the bad field
    dep = objs["deployment.yaml"]
    fetch = [c for c in dep["spec"]["template"]["spec"]["initContainers"] if c["name"] == "fetch-repository"]
    assert bool(fetch) == bool(url and not url.startswith("pvc:"))
    if url and url.startswith("pvc:"):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in dep["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert "models-rwx" in claims


def test_strict_validation_rejects_a_misspelled_field(plan_repo, tmp_path):
    """The schema check is not a no-op: the same Deployment with one unknown field fails."""
    out = tmp_path / "k8s"
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(out)) == 0
    dep = _load_dir(out)["deployment.yaml"]
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        _validate(dep)
    dep = _load_dir(out)["deployment.yaml"]
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        _validate(dep)


def test_deployment_runs_triton_as_the_repository_needs(plan_repo, tmp_path):
    out = tmp_path / "k8s"
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(out), "--replicas", "3",
                "--triton-image", "nvcr.io/nvidia/tritonserver:25.01-py3") == 0
    objs = _load_dir(out)
    pod = objs["deployment.yaml"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
    argv = server["command"]
    assert argv[0] == "tritonserver" and "--model-repository=/models" in argv
    manifest = json.loads((plan_repo / "repo-gen.json").read_text())
    assert sorted(a.split("=", 1)[1] for a in argv if a.startswith("--load-model=")) == sorted(manifest["models"])
    assert {p["containerPort"] for p in server["ports"]} == {8000, 8001, 8002}
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    start = server["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 60
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["resources"]["requests"]["memory"].endswith("Mi")
    assert not pod.get("hostNetwork")
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    # The init step builds the plan model on the node's GPU, keyed by GPU model and TensorRT version.
    script = objs["prepare-configmap.yaml"]["data"]["prepare-repository.sh"]
    trt_models = [n for n, e in manifest["models"].items() if e["backend"] == "tensorrt"]
    assert trt_models and all(f"plan {m} 1/model.plan rebuild_engine.sh" in script for m in trt_models)
    assert 'CACHE="/plan-cache/$GPU/$TRT"' in script
    subprocess.run(["bash", "-n"], input=script.encode(), check=True)  # the script parses
    # HPA on the metric the adapter rule defines; PDB; scrape target.
    hpa = objs["hpa.yaml"]["spec"]
    rule = yaml.safe_load(objs["prometheus-adapter-rules.yaml"]["data"]["config.yaml"])["rules"][0]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and "nv_inference_request_success" in rule["metricsQuery"]
    assert hpa["minReplicas"] == 3 and hpa["maxReplicas"] == 12
    assert objs["pdb.yaml"]["spec"]["maxUnavailable"] == 1
    assert objs["podmonitor.yaml"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_image_is_the_one_the_build_recorded_unless_given(plan_repo, tmp_path):
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(tmp_path / "a")) == 0
    pod = _load_dir(tmp_path / "a")["deployment.yaml"]["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["containers"] + pod["initContainers"]} == {RECORDED_IMAGE}
    assert "(from manifest)" in (tmp_path / "a" / "README.md").read_text()


def test_gpus_per_pod_writes_per_gpu_instance_groups_in_the_deployed_copy_only(plan_repo, tmp_path):
    from repo_gen.triton.render import parse_config

    before = _tree_hash(plan_repo)
    out = tmp_path / "k8s"
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(out), "--gpus-per-pod", "4") == 0
    assert _tree_hash(plan_repo) == before  # the built repository is untouched
    objs = _load_dir(out)
    configs = objs["configs-configmap.yaml"]["data"]
    manifest = json.loads((plan_repo / "repo-gen.json").read_text())
    gpu_models = {n for n, e in manifest["models"].items() if e["backend"] == "tensorrt"}
    assert {k.removesuffix(".config.pbtxt") for k in configs} == gpu_models
    for key, text in configs.items():
        cfg = parse_config(text, key)  # Triton's own schema
        assert [list(g.gpus) for g in cfg.instance_group] == [[0], [1], [2], [3]]
        built = parse_config((plan_repo / key.removesuffix(".config.pbtxt") / "config.pbtxt").read_text())
        assert all(g.count == sum(b.count for b in built.instance_group) for g in cfg.instance_group)
        assert cfg.max_batch_size == built.max_batch_size and cfg.dynamic_batching == built.dynamic_batching
    server = objs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 4
    _validate(objs["configs-configmap.yaml"])


def test_kserve_inference_service(plan_repo, tmp_path):
    out = tmp_path / "kserve"
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(out), "--target", "kserve",
                "--repository-url", "gs://bucket/mobilevit") == 0
    isvc = _load_dir(out)["inferenceservice.yaml"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-tritonserver" and model["modelFormat"]["name"] == "triton"
    assert model["storageUri"] == "gs://bucket/mobilevit"
    assert "--model-repository=/mnt/models" in model["args"]
    # No plan can be built into KServe's read-only storage: the unbuilt plan model is left out, so
    # is the ensemble only when it needs it.
    loaded = [a.split("=", 1)[1] for a in model["args"] if a.startswith("--load-model=")]
    assert not any("_trt_" in m for m in loaded) and any("_py_" in m for m in loaded)
    # The InferenceService CRD schema ships in no maintained package here; the container part of the
    # predictor is a core/v1 Container, checked as one.
    container = {k: v for k, v in model.items() if k not in ("modelFormat", "runtime", "runtimeVersion", "storageUri")}
    _validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
               "spec": {"containers": [{"name": "kserve-container", "image": "x", **container}]}})
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(tmp_path / "k2"), "--target", "kserve",
                "--repository-url", "pvc:models") == 0
    assert _load_dir(tmp_path / "k2")["inferenceservice.yaml"]["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/"


@pytest.mark.parametrize("extra,needle", [
    (["--replicas", "0"], "--replicas 0"),
    (["--gpus-per-pod", "-1"], "--gpus-per-pod -1"),
    (["--target", "nomad"], "--target nomad"),
    (["--repository-url", "ftp://host/repo"], "--repository-url ftp://host/repo"),
    (["--repository-url", "s3://bucket/a b"], "--repository-url s3://bucket/a b"),
    (["--gpus-per-pod", "0"], "--gpus-per-pod 0"),  # plan models need a GPU
    (["--target", "kserve", "--gpus-per-pod", "2"], "--gpus-per-pod 2"),
])
def test_bad_input_one_line_nothing_written(plan_repo, tmp_path, capsys, extra, needle):
    out = tmp_path / "k8s"
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(out), *extra) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_repository_or_output(plan_repo, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "m").mkdir()
    assert _run("deploy", "--model-repository", str(bare), "--output", str(tmp_path / "o1")) == 2
    assert "repo-gen.json" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(afile)) == 2
    assert "is a file" in capsys.readouterr().err and afile.read_text() == "x"


@pytest.mark.server
def test_deployment_argv_starts_the_real_tritonserver(plan_repo, tmp_path):
    """The Deployment's command, run here by the real tritonserver: only the binary path, the
    repository path, the addresses/ports and the wheel's backend directory are replaced. The plan
    model is removed first, as this CPU server has no tensorrt backend (GPU-only, like
    --backend-config=tensorrt)."""
    from tests.conftest import _need_tritonserver

    inst = _need_tritonserver()
    from repo_gen.triton.repository import locked_manifest
    from repo_gen.triton.server import TritonServer, free_ports

    repo = tmp_path / "model_repository"
    shutil.copytree(plan_repo, repo)
    with locked_manifest(repo) as manifest:
        for name in [n for n, e in manifest["models"].items() if e["backend"] == "tensorrt"]:
            del manifest["models"][name]
            shutil.rmtree(repo / name)
    out = tmp_path / "k8s"
    assert _run("deploy", "--model-repository", str(repo), "--output", str(out)) == 0
    argv = _load_dir(out)["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"]
    ports = free_ports()
    local = {"tritonserver": str(inst.binary), "--model-repository=/models": f"--model-repository={repo}",
             "--http-address=0.0.0.0": "--http-address=127.0.0.1", "--grpc-address=0.0.0.0": "--grpc-address=127.0.0.1",
             "--metrics-address=0.0.0.0": "--metrics-address=127.0.0.1", "--http-port=8000": f"--http-port={ports.http}",
             "--grpc-port=8001": f"--grpc-port={ports.grpc}", "--metrics-port=8002": f"--metrics-port={ports.metrics}"}
    assert set(local) <= set(argv)
    run_argv = [local.get(a, a) for a in argv] + [f"--backend-directory={inst.backend_dir}"]
    server = TritonServer(repo, ports=ports, install=inst, log_path=tmp_path / "tritonserver.log")
    env = dict(os.environ, **inst.env)
    with open(server.log_path, "ab") as log:
        server.proc = subprocess.Popen(run_argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        server.wait_ready(240)
        loaded = {a.split("=", 1)[1] for a in argv if a.startswith("--load-model=")}
        index = {m["name"]: m.get("state") for m in server.repository_index()}
        assert loaded and all(index.get(m) == "READY" for m in loaded), index
        assert any(i["name"].endswith("_pipeline") for i in server.repository_index())
    finally:
        server.stop()


def test_plugin_libraries_reach_the_deployment_argv(plan_repo, tmp_path):
    """Plan models built with our plugins: the Deployment passes --backend-config=tensorrt,plugins=
    with the libraries at their path inside the image (not the build machine's)."""
    from repo_gen.triton.repository import locked_manifest

    repo = tmp_path / "model_repository"
    shutil.copytree(plan_repo, repo)
    with locked_manifest(repo) as manifest:
        for e in manifest["models"].values():
            if e["backend"] == "tensorrt":
                e["extra"]["plugin_libs"] = ["/home/me/plugins/build/libmobilevit_plugins.so"]
    assert _run("deploy", "--model-repository", str(repo), "--output", str(tmp_path / "k8s")) == 0
    argv = _load_dir(tmp_path / "k8s")["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--backend-config=tensorrt,plugins=/opt/repo-gen/plugins/libmobilevit_plugins.so" in argv
    assert _run("deploy", "--model-repository", str(plan_repo), "--output", str(tmp_path / "k2")) == 0
    argv = _load_dir(tmp_path / "k2")["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert not any(a.startswith("--backend-config=tensorrt") for a in argv)


def test_pod_sizing_counts_each_torch_gpu_stub_on_every_gpu(tmp_path):
    """A torch-runtime model on a GPU: its instance group (count 2, no `gpus` list) runs on every GPU of
    the pod, each stub measured at TORCH_GPU_STUB_MIB plus twice its files (weights and precompiled
    buckets), not the 300 MiB of an onnxruntime stub."""
    from repo_gen.deploy.values import TORCH_GPU_STUB_MIB, size_pod
    from repo_gen.manifest import Manifest, ModelEntry

    name = "mobilevit_xxs_torch_fp16"
    (tmp_path / name / "1").mkdir(parents=True)
    (tmp_path / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\ninstance_group [{{ count: 2, kind: KIND_GPU }}]\n')
    files = {"weights.pt": 10, "compiled_b8.bin": 20, "model.py": 0}
    for f, mib in files.items():
        with open(tmp_path / name / "1" / f, "wb") as out:
            out.truncate(mib * 2**20)
    entry = ModelEntry(name=name, base_model="mobilevit_xxs", runtime="torch", backend="python", precision="fp16",
                       versions=[1], files=[f"{name}/1/{f}" for f in files])
    manifest = Manifest(models={name: entry})
    per_stub = TORCH_GPU_STUB_MIB + 2 * 30
    for gpus, stubs in ((1, 2), (2, 4)):
        sizing = size_pod(tmp_path, manifest, [name], gpus=gpus)
        assert sizing.memory_request == f"{-(-(1024 + stubs * per_stub) // 256) * 256}Mi", sizing.explanation
        assert sizing.cpu_request == str(1 + stubs)
        assert f"{stubs} instance(s), 30.0 MiB torch files" in "\n".join(sizing.explanation)
    # No GPU in the pod: refused with the fix named, nothing written.
    from repo_gen.deploy.values import make_values
    from repo_gen.errors import UserError
    from repo_gen.manifest import MANIFEST_NAME, MANIFEST_SCHEMA

    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema": MANIFEST_SCHEMA, "models": {name: entry.to_dict()},
                                                      "builds": {}}))
    before = _tree_hash(tmp_path)
    with pytest.raises(UserError, match=f"--gpus-per-pod 0: torch-runtime model\\(s\\) {name} were compiled for a GPU"):
        make_values(tmp_path, gpus_per_pod=0)
    assert _tree_hash(tmp_path) == before
