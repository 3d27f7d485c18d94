"""How `--help` states defaults: once per option, in words a user can act on.

argparse's ArgumentDefaultsHelpFormatter prints `(default: True)` for `--no-pipeline` (the value
of its destination, not of the flag), `(default: None)` for options whose help already explains
what None means, and a second default after help texts that state their own. Here, an option
whose help mentions its default keeps it as written; a required option says so; a flag is "off" unless given; an option
without a value says "none"; every other option shows its value.
"""

from __future__ import annotations

import argparse

# argparse prints no line at all for an option without help text; such options get this
# stand-in, which the formatter replaces by the default alone.
_NO_TEXT = "\x00"


class DefaultsOnceFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = "" if action.help in (None, _NO_TEXT) else str(action.help)
        if action.help == argparse.SUPPRESS or not action.option_strings or "default" in text.lower() \
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            return action.help
        if action.required:
            return f"{text} (required)".strip()
        if action.nargs == 0:  # store_true / store_false / store_const / count
            shown = "off"
        elif action.default is None:
            shown = "none"
        elif isinstance(action.default, (list, tuple)):
            shown = ",".join(str(v) for v in action.default).replace("%", "%%")
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})".strip()


def use_everywhere(parser: argparse.ArgumentParser) -> None:
    """Give `parser` and all its subcommand parsers this formatter."""
    parser.formatter_class = DefaultsOnceFormatter
    for action in parser._actions:
        if action.option_strings and action.help is None:
            action.help = _NO_TEXT
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_everywhere(sub)
