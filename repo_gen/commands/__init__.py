"""One module per `repo-gen` subcommand: `add_parser(subparsers)` and a `run(args)` function."""
