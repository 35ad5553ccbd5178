"""The command line: `python run_recbole_mdcns.py` or, from any folder, `python -m recbole_mdcns`.

    python run_recbole_mdcns.py --model=SASRec --sampler=MDCNS --dataset=ml-100k --config_files=quick --baseline=uniform

Every other `--key=value` reaches RecBole's Config, as with RecBole's run_recbole.py. Logs go
to stderr (and RecBole's log file); stdout gets one JSON line with each run's metrics and time.
A mistake in the command or the config is one line on stderr and exit status 2, before any
training; `--debug` (or RECBOLE_MDCNS_DEBUG=1) shows its traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

import yaml

from recbole_mdcns.config import Config, resolve_config_file
from recbole_mdcns.params import ConfigError
from recbole_mdcns.quick_start import run

USAGE_ERROR = 2
DEBUG_ENV = "RECBOLE_MDCNS_DEBUG"
DEFAULT_NAMES = {"model": "SASRec", "dataset": "ml-100k"}  # where neither the command nor a config file names one


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes (`--nproc=abc`) are a ConfigError: one line, like every other."""

    def error(self, message: str):
        raise ConfigError([message])


def parser() -> argparse.ArgumentParser:
    cli = _Parser(prog="run_recbole_mdcns.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--model", "-m", default=None, help="RecBole model name (default: the config files' model, "
                     "else SASRec)")
    cli.add_argument("--dataset", "-d", default=None, help="dataset name (default: the config files' dataset, "
                     "else ml-100k, which ships with RecBole)")
    cli.add_argument("--sampler", default=None, help="negative sampler (default MDCNS; none = RecBole's own training)")
    cli.add_argument("--config_files", default=None, help="space-separated yaml files or packaged configs (quick)")
    cli.add_argument("--baseline", default=None,
                     help="a second sampler trained and tested on the same config afterwards, reported beside the first")
    cli.add_argument("--resume", default=None, help="a *-resume.pth training state to continue")
    cli.add_argument("--debug", action="store_true", help="show the traceback of a configuration error")
    cli.add_argument("--nproc", type=int, default=1, help="processes for torch.distributed (gloo on CPU)")
    cli.add_argument("--ip", default="localhost", help="the master address of a multi-process run")
    cli.add_argument("--port", default="5678", help="the master port of a multi-process run")
    cli.add_argument("--world_size", type=int, default=-1, help="total processes over all nodes")
    cli.add_argument("--group_offset", type=int, default=0, help="rank offset of this node")
    return cli


def check_command(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """The command's own mistakes: arguments RecBole would ignore, a missing resume file, and
    combinations the runner cannot do."""
    problems, i = [], 0
    while i < len(extra):
        arg, value = extra[i], extra[i + 1] if i + 1 < len(extra) else "-"
        if arg.startswith("--") and arg[2:].count("=") == 1:
            i += 1
        elif arg.startswith("--") and "=" not in arg and not value.startswith("-"):
            problems.append(f"'{arg} {value}': write RecBole keys as {arg}={value}")
            i += 2
        else:
            problems.append(f"argument {arg!r}: write RecBole keys as --key=value")
            i += 1
    if args.resume and not os.path.isfile(args.resume):
        problems.append(f"--resume={args.resume}: no such file")
    if args.baseline and (args.resume or args.nproc != 1 or args.world_size > 0):
        problems.append("--baseline trains a second run in this process: drop --resume, --nproc and --world_size")
    return problems


def config_files(args: argparse.Namespace) -> Optional[list[str]]:
    return args.config_files.split() if args.config_files else None


def resolve_names(args: argparse.Namespace) -> None:
    """Set `args.model` and `args.dataset` where the command did not: from the config files
    (the last that names one), else DEFAULT_NAMES. While a file cannot be read, a name no
    file gave is left unset: the Config reports the file."""
    named: dict[str, Any] = {}
    unread = False
    for file in config_files(args) or []:
        try:
            with open(resolve_config_file(file), encoding="utf-8") as f:
                keys = yaml.load(f, Loader=yaml.FullLoader)  # RecBole's loader
        except (ConfigError, OSError, ValueError, yaml.YAMLError):
            unread = True
            continue
        if isinstance(keys, dict):
            named.update({key: keys[key] for key in DEFAULT_NAMES if isinstance(keys.get(key), str)})
    for key, default in DEFAULT_NAMES.items():
        if getattr(args, key) is None:
            setattr(args, key, named.get(key, None if unread else default))


def run_one(args: argparse.Namespace, sampler: Optional[str]) -> dict[str, Any]:
    """Train and test one sampler; its result with the sampler's name and the wall seconds."""
    start = time.perf_counter()
    result = run(
        model=args.model, dataset=args.dataset, config_file_list=config_files(args),
        config_dict={"sampler": sampler} if sampler else None,
        nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
        group_offset=args.group_offset, resume=args.resume,
    )
    return {**result, "seconds": round(time.perf_counter() - start, 1)} if result else {}


def comparison(runs: list[dict[str, Any]]) -> str:
    """The runs' test metrics and times as a small table."""
    metrics = list(runs[0]["test_result"])
    rows = [["sampler", *(f"test {m}" for m in metrics), "seconds"]]
    rows += [[r["sampler"], *(f"{r['test_result'][m]:.4f}" for m in metrics), f"{r['seconds']:.0f}"] for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def debug_requested() -> bool:
    """Whether a configuration error should show its traceback (--debug or RECBOLE_MDCNS_DEBUG=1)."""
    return "--debug" in sys.argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report(error: ConfigError) -> int:
    """Print a configuration error's problems on stderr, one line each; the exit status."""
    for problem in error.problems:
        print(f"recbole-mdcns: error: {problem}", file=sys.stderr)
    return USAGE_ERROR


def main() -> int:
    """Parse sys.argv, train and test, print the JSON line; the exit status."""
    debug = debug_requested()
    argv = sys.argv
    try:
        args, extra = parser().parse_known_args()
        resolve_names(args)
        sys.argv = sys.argv[:1] + extra  # RecBole's Config reads the --key=value left over
        problems = check_command(args, extra)
        if problems:
            raise ConfigError(problems)
        if args.baseline:  # the baseline's mistakes, before the first run trains
            Config(args.model, args.dataset, config_files(args), {"sampler": args.baseline})
        runs = [run_one(args, args.sampler)]
        if args.baseline:
            runs.append(run_one(args, args.baseline))
    except ConfigError as error:
        if debug:
            raise
        return report(error)
    finally:
        sys.argv = argv
    runs = [r for r in runs if r]  # the ranks of a multi-process run other than 0 report nothing
    if len(runs) > 1:
        print(f"\n{args.model} on {args.dataset}, the same config and seed:\n{comparison(runs)}", file=sys.stderr)
    if runs:
        print(json.dumps({"model": args.model, "dataset": args.dataset, "runs": runs}, default=float))
    return 0
