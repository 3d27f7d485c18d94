"""`repo-gen serve`: run tritonserver on a model repository until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model repository with tritonserver",
        description="Start tritonserver (from PATH or the nvidia-pytriton wheel) on a repository, loading every "
        "model this server can serve (by repo-gen's manifest and the backends found; explicit model control), "
        "say which are left out and why, wait until ready and print the URLs. Ctrl-C stops the server.",
    )
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"), metavar="DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-control", default="explicit", choices=["explicit", "poll"],
                   help="poll: watch the repository and load new versions as they appear")
    p.add_argument("--allow-inaccurate", action="store_true", help="also serve variants that missed their tolerance")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds to wait for the server to be ready")
    p.add_argument("--gpus", default=None, metavar="LIST",
                   help="GPU indices for the GPU models' instances, e.g. 0,1 (default: as built); the repository is not changed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from repo_gen.errors import UserError
    from repo_gen.log import console, logger
    from repo_gen.tools import find_tritonserver
    from repo_gen.triton.server import ServerPorts, TritonServer, choose_models

    repo: Path = args.model_repository
    for flag, port in (("--http-port", args.http_port), ("--grpc-port", args.grpc_port), ("--metrics-port", args.metrics_port)):
        if not 1 <= port <= 65535:
            raise UserError(f"{flag} {port}: must be from 1 to 65535")
    gpus = None
    if args.gpus is not None:
        from repo_gen.torch.runtime import parse_gpus, resolve_gpus

        gpus = resolve_gpus(parse_gpus(args.gpus))  # bad list: one line, before anything starts
    inst = find_tritonserver()
    choices = choose_models(repo, inst.backends, args.allow_inaccurate)
    serve = [c.name for c in choices if c.serve]
    if not serve:
        raise UserError(f"--model-repository {repo}: this tritonserver can serve none of its models (backends here: {', '.join(inst.backends)})")
    left_out = [c for c in choices if not c.serve]
    if args.model_control == "poll" and left_out:
        # Poll mode loads every model directory and cannot skip any: the server would exit at start.
        raise UserError(
            f"--model-control poll: Triton loads every model of {repo} in poll mode, and this server cannot serve "
            + "; ".join(f"{c.name} ({c.reason})" for c in left_out)
            + "; use --model-control explicit, or build only servable runtimes (e.g. --runtimes py) into their own --output"
        )
    from repo_gen.manifest import load_manifest
    from repo_gen.trt.serve import serve_problems

    # Problems of models that are served are real (a plan whose plugin library is missing); those of
    # models left out anyway repeat why they are left out, which the summary below already says.
    manifest = load_manifest(repo)
    served_manifest = replace(manifest, models={k: v for k, v in manifest.models.items() if k in serve})
    for problem in serve_problems(repo, served_manifest, inst.backend_dir):
        logger.warning(problem)
    server = TritonServer(
        repo,
        host=args.host,
        ports=ServerPorts(args.http_port, args.grpc_port, args.metrics_port),
        models=None if args.model_control == "poll" else ([] if gpus else serve),
        model_control=args.model_control,
        install=inst,
    )

    from repo_gen.triton.repository import signals_as_exceptions

    # `docker stop` / systemd send SIGTERM: handled as Ctrl-C, so tritonserver is stopped too.
    with signals_as_exceptions():
        try:
            server.start(timeout_s=args.timeout)
        except BaseException:
            server.stop()  # interrupted or failed while starting: never leave tritonserver running behind us
            raise
        try:
            if gpus:
                load_on_gpus(server, repo, serve, gpus)
            # A signal while the start summary checks each model's answer is a stop like any later one.
            print_started(server, args.host, serve, left_out)
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping tritonserver ...")
            server.stop()
            return 0
        except BaseException:
            server.stop()
            raise
        code = server.proc.returncode if server.proc else 1
        server.stop()  # a crashed server's python-backend stubs live on; they are stopped here
        console.print(f"[bold red]tritonserver exited with code {code}[/]: {server.log_tail(3)}")
        return 1


def load_on_gpus(server, repo: Path, models: list[str], gpus: tuple[int, ...]) -> None:
    """Load `models` into the running server, KIND_GPU instance groups placed on `gpus` (load API override)."""
    from repo_gen.errors import BuildFailure
    from repo_gen.torch.runtime import gpu_config_override

    for name in models:
        override = gpu_config_override((repo / name / "config.pbtxt").read_text(), gpus)
        status, text = server.load_model(name, override)
        if status != 200:
            server.stop()
            raise BuildFailure(f"loading {name} on GPUs {','.join(map(str, gpus))} failed: {text[:300]}")


def print_started(server, host: str, serve: list[str], left_out: list) -> None:
    """What a user needs after a healthy start: where to send requests, which models are ready, what
    was left out and why (one line per reason), where the server's own log is. A model that Triton
    did not make READY is a real error and says so."""
    from repo_gen.log import console, logger

    states = {m["name"]: m for m in server.repository_index()}
    ready = [m for m in serve if states.get(m, {}).get("state") == "READY"]
    for m in serve:
        if m not in ready:
            logger.error(f"{m} is not ready: {states.get(m, {}).get('state', 'unknown')} "
                         f"{states.get(m, {}).get('reason', '')} (server log: {server.log_path})")
    console.print(f"ready: {len(ready)} model(s): {', '.join(ready)}")
    from repo_gen.perf.answer_check import check_answers

    for m in ready:  # one request each: a model answering empty is named now, not by its users
        try:
            wrong = check_answers(server.grpc_url, "grpc", m, timeout_s=30)
        except Exception as e:  # the check must never stop a healthy server
            wrong = f"{m}: could not check an answer ({type(e).__name__}: {str(e)[:120]})"
        if wrong:
            logger.error(wrong)
    reasons: dict[str, list[str]] = {}
    for c in left_out:
        reasons.setdefault(c.reason, []).append(c.name)
    for reason, names in reasons.items():
        console.print(f"not served here: {', '.join(names)} ({reason})", soft_wrap=True)
    console.print(f"HTTP    http://{host}:{server.ports.http}/v2/health/ready\n"
                  f"gRPC    {host}:{server.ports.grpc}\nmetrics http://{host}:{server.ports.metrics}/metrics")
    console.print(f"server log: {server.log_path}\nCtrl-C to stop")
