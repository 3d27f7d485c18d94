"""The tritonserver command line: one function for every place repo-gen runs a server.

`repo-gen serve` (through `TritonServer`), bench, tune, the tests and the Kubernetes / KServe
manifests of `repo-gen deploy` all take their argv from `tritonserver_argv`, so a flag that one of
them needs (the tensorrt plugin list, strict readiness, explicit model control) is never missing
from another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerOptions:
    """What differs between a local server and a cluster pod.

    Attributes:
        backend_directory: None leaves tritonserver's own default (/opt/tritonserver/backends in
            the NGC image); the pytriton wheel's server needs its own directory named.
        models: models loaded at start under explicit model control; None loads none by name
            (poll mode loads everything it finds).
        poll_secs: repository poll interval in poll mode.
        shm_prefix: prefix of the python backend's /dev/shm regions, so leftovers of a killed
            server can be told apart and removed (None keeps Triton's default).
    """

    repository: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_control: str = "explicit"
    models: tuple[str, ...] | None = None
    exit_on_error: bool = True
    poll_secs: int = 2
    backend_directory: str | None = None
    shm_prefix: str | None = None


def tritonserver_argv(binary: str, opts: ServerOptions, plan_args: Sequence[str] = (),
                      extra_args: Sequence[str] = ()) -> list[str]:
    """argv (no shell) that starts tritonserver on `opts.repository`.

    Args:
        plan_args: what the repository's plan models need (`repo_gen.trt.serve.tensorrt_server_args`).
        extra_args: appended last, so a caller can override an earlier flag.
    """
    args = [binary, f"--model-repository={opts.repository}"]
    if opts.backend_directory is not None:
        args.append(f"--backend-directory={opts.backend_directory}")
    args += [
        f"--http-address={opts.host}",
        f"--grpc-address={opts.host}",
        f"--metrics-address={opts.host}",
        f"--http-port={opts.http_port}",
        f"--grpc-port={opts.grpc_port}",
        f"--metrics-port={opts.metrics_port}",
        f"--model-control-mode={opts.model_control}",
        f"--exit-on-error={'true' if opts.exit_on_error else 'false'}",
        # Ready only when every loaded model is ready: the readiness probe and load balancers rely on it.
        "--strict-readiness=true",
        "--log-verbose=0",
    ]
    if opts.shm_prefix is not None:
        args.append(f"--backend-config=python,shm-region-prefix-name={opts.shm_prefix}")
    if opts.model_control == "poll":
        args.append(f"--repository-poll-secs={opts.poll_secs}")
    elif opts.models is not None:
        args += [f"--load-model={m}" for m in opts.models]
    return args + list(plan_args) + list(extra_args)
