"""The `lrpseg` command. Each subcommand lives in its own module, imported on use."""

from __future__ import annotations

import argparse
import importlib
import sys

from pydantic import ValidationError

# subcommand -> module exposing `add_arguments(parser)` and `run(args) -> int`
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("lrpseg.training.cli", "train the shipped models on generated data"),
    "serve": ("service.serve", "start Redis (embedded unless REDIS_URL), workers and the API"),
    "api": ("service.serve_api", "run only the HTTP API"),
    "worker": ("workers.cli", "run only an RQ worker"),
    "explain": ("service.client", "submit an image to a running service and save the artifacts"),
    "keys": ("service.auth", "make an API key (printed once) and the line that configures its hash"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lrpseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    args, _rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    cmd_parser = argparse.ArgumentParser(prog=f"lrpseg {args.command}", description=COMMANDS[args.command][1])
    module.add_arguments(cmd_parser)
    parsed = cmd_parser.parse_args(argv[1:])
    try:
        return int(module.run(parsed) or 0)
    except ValidationError as exc:  # Settings refused the environment: say what, without a traceback
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"lrpseg {args.command}: invalid settings\n{problems}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
