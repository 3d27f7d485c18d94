"""`repo-gen` command line. Each subcommand lives in `repo_gen/commands/<name>.py`, declares
its own arguments and calls one library function; this file only dispatches and maps errors to
exit codes: 0 ok, 2 bad input, 1 failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from repo_gen import __version__

COMMANDS = ("build", "serve", "doctor", "bench", "tune", "classify", "detect", "deploy")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repo-gen",
        description="Build Triton Inference Server model repositories from vision models "
        "(ONNX, FP16/INT8 variants, TensorRT plans), serve them and measure them.",
        epilog="Exit codes: 0 ok, 1 failure, 2 bad input, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"repo-gen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"repo_gen.commands.{name}")
        except ImportError:  # a command whose module is not part of this build
            continue
        module.add_parser(sub)
    from repo_gen.commands.helpformat import use_everywhere

    use_everywhere(parser)  # every option states its real default once
    return parser


def main(argv: list[str] | None = None) -> int:
    from repo_gen import log
    from repo_gen.errors import RepoGenError

    parser = make_parser()
    args = parser.parse_args(argv)
    log.setup(verbose=args.verbose, quiet=args.quiet)
    from repo_gen.triton.repository import signals_as_exceptions

    try:
        # SIGTERM (docker stop, systemd, a test harness) and SIGHUP are handled like Ctrl-C, so every
        # command stops what it started (tritonserver, perf_analyzer) before it exits.
        with signals_as_exceptions():
            return int(args.func(args) or 0)
    except RepoGenError as e:
        log.console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        log.console.print("[bold red]interrupted[/]; nothing was changed that was not complete")
        return 130


if __name__ == "__main__":
    sys.exit(main())
