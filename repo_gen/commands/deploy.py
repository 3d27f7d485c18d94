"""`repo-gen deploy`: Kubernetes / KServe manifests that serve a built repository on a cluster."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from repo_gen.deploy.values import DEFAULT_TRITON_IMAGE, TARGETS

    p = sub.add_parser(
        "deploy",
        help="write Kubernetes / KServe manifests for a model repository",
        description="Write the manifests a cluster needs to serve a repository repo-gen built: for kubernetes a "
        "Deployment (init step that builds each plan on the node's GPU with a plan cache, probes, GPU/CPU/memory "
        "sized from the repository), Service, HPA on Triton's queue time, PodDisruptionBudget and scrape target; "
        "for kserve an InferenceService on KServe's Triton runtime. Reads only the repository and its manifest.",
    )
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"), metavar="DIR",
                   help="repository repo-gen built (default: model_repository)")
    p.add_argument("--target", default="kubernetes", help=f"one of: {', '.join(TARGETS)} (default: kubernetes)")
    p.add_argument("--output", type=Path, default=Path("deploy"), metavar="DIR", help="directory for the manifests (default: deploy)")
    p.add_argument("--replicas", type=int, default=1, metavar="N", help="pods, the HPA's minimum (default: 1)")
    p.add_argument("--max-replicas", type=int, default=None, metavar="N", help="HPA maximum (default: 4x --replicas)")
    p.add_argument("--gpus-per-pod", type=int, default=1, metavar="N",
                   help="nvidia.com/gpu per pod; >1 writes per-GPU instance groups into the deployed configs (default: 1)")
    p.add_argument("--triton-image", default=None, metavar="IMAGE",
                   help=f"tritonserver image (default: the one the build recorded, else {DEFAULT_TRITON_IMAGE})")
    p.add_argument("--repository-url", default=None, metavar="URL",
                   help="s3://BUCKET/PATH, gs://BUCKET/PATH or pvc:CLAIM (default: pvc:<name>-model-repository)")
    p.add_argument("--name", default=None, help="Kubernetes object name (default: <model>-triton)")
    p.add_argument("--queue-target-us", type=int, default=10000, metavar="US",
                   help="HPA target: average queue time per request in microseconds (default: 10000)")
    p.add_argument("--plan-cache", default="pvc", choices=["pvc", "emptydir"],
                   help="where built plans are cached: a shared ReadWriteMany claim, or per pod (default: pvc)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from repo_gen.deploy import deploy
    from repo_gen.log import console

    written, values = deploy(
        args.model_repository, args.output, target=args.target, replicas=args.replicas,
        max_replicas=args.max_replicas, gpus_per_pod=args.gpus_per_pod, triton_image=args.triton_image,
        repository_url=args.repository_url, name=args.name, queue_target_us=args.queue_target_us,
        plan_cache=args.plan_cache,
    )
    console.print(f"wrote {len(written)} files for {values.target} into {args.output}: {', '.join(p.name for p in written)}")
    console.print(f"image {values.image} ({values.image_source}); models: {', '.join(values.models)}")
    for model, why in values.left_out:
        console.print(f"not deployed: {model}: {why}")
    return 0
