"""The project's exceptions: one type per kind of failure, so triage starts from the type.

The CLI maps them to exit codes: `UserError` -> 2 (the input was bad; the message names it
and the fix), `BuildFailure` -> 1 (a step failed on good input: a server error, a check
that did not pass), anything else -> 1 with a traceback, because it is a bug of ours.
"""

from __future__ import annotations


class RepoGenError(Exception):
    """Base of every error repo-gen raises on purpose."""

    exit_code = 1


class UserError(RepoGenError):
    """Bad input: a flag, a path, a file. The message is one line naming the input and the fix."""

    exit_code = 2


class BuildFailure(RepoGenError):
    """A step failed although the input was acceptable (export check, server, perf_analyzer)."""

    exit_code = 1


class MissingDependency(RepoGenError):
    """A tool or package is absent on this machine; the message says how to get it."""

    exit_code = 1
