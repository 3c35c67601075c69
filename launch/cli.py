"""The `lrpseg` console script: parse the subcommand, import its module, run it.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; the imports are
plain (no importlib) and local to `load`, so a process only loads what its command needs.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from pydantic import ValidationError

COMMANDS: dict[str, str] = {
    "train": "train the shipped models on generated data",
    "serve": "start Redis (embedded unless REDIS_URL), workers and the API",
    "api": "run only the HTTP API",
    "worker": "run only an RQ worker",
    "explain": "submit images (files or folders) to a running service and save the artifacts",
    "keys": "make an API key (printed once) and the line that configures its hash",
    "dimse": "run the DICOM C-STORE SCP that feeds received series into jobs",
}


def load(command: str) -> ModuleType:
    """The module behind a subcommand (imported here, on use)."""
    if command == "train":
        from lrpseg.training import cli as train

        return train
    if command == "serve":
        from service import serve

        return serve
    if command == "api":
        from service import serve_api

        return serve_api
    if command == "worker":
        from workers import cli as worker

        return worker
    if command == "explain":
        from launch import explain

        return explain
    if command == "keys":
        from launch import keys

        return keys
    if command == "dimse":
        from pacs import cli as dimse

        return dimse
    raise KeyError(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lrpseg", description="Segmentation + whole-output LRP explanations")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    args, _rest = parser.parse_known_args(argv[:1])
    module = load(args.command)
    cmd_parser = argparse.ArgumentParser(prog=f"lrpseg {args.command}", description=COMMANDS[args.command])
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
