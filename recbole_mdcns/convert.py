"""Convert the common sequential-recommendation text files into RecBole atomic files.

    python -m recbole_mdcns.convert Beauty.txt --dataset Beauty --out dataset/

Input, one of:
- `sequence` (default): one user per line, `user item_1 item_2 ...` in chronological
  order (the S3-Rec / ICLRec / ELECRec files);
- `interactions`: one interaction per line, `user item [timestamp]`, chronological
  within each user when there is no timestamp.

Output: `OUT/NAME/NAME.inter` with `user_id:token item_id:token timestamp:float`, the
timestamp being the per-user position (or the given timestamp), so that RecBole's
leave-one-out split, `eval_args: {split: {LS: valid_and_test}, order: TO, group_by:
user, mode: full}`, is the standard protocol of those files. The command line also
writes `OUT/NAME/NAME.yaml`, the keys that run on it (`--config_files=` that file).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import yaml

HEADER = "user_id:token\titem_id:token\ttimestamp:float"
RUN_KEYS = ("load_col: {inter: [user_id, item_id, timestamp]}\n",
            "eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}\n")
FORMATS = ("sequence", "interactions")


class ConvertError(ValueError):
    """Malformed input or refused output."""


@dataclass
class Counts:
    users: int
    items: int
    interactions: int


def read_interactions(path: str, fmt: str) -> list[tuple[str, str, float]]:
    """(user, item, timestamp) rows from `path`; ConvertError on the first malformed line."""
    rows: list[tuple[str, str, float]] = []
    position: dict[str, int] = defaultdict(int)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if fmt == "sequence":
                if len(fields) < 2:
                    raise ConvertError(f"{path}:{number}: a user with no items: {line.rstrip()!r}")
                rows += [(fields[0], item, float(t)) for t, item in enumerate(fields[1:])]
                continue
            if len(fields) not in (2, 3):
                raise ConvertError(f"{path}:{number}: expected 'user item [timestamp]', got {line.rstrip()!r}")
            user, item = fields[0], fields[1]
            if len(fields) == 3:
                try:
                    stamp = float(fields[2])
                except ValueError:
                    raise ConvertError(f"{path}:{number}: timestamp {fields[2]!r} is not a number: {line.rstrip()!r}") from None
            else:
                stamp = float(position[user])
            position[user] += 1
            rows.append((user, item, stamp))
    if not rows:
        raise ConvertError(f"{path}: no interactions")
    return rows


def convert(path: str, dataset: str, out: str, fmt: str = "sequence", force: bool = False) -> Counts:
    """Write `out/dataset/dataset.inter` from `path`; return its counts."""
    if fmt not in FORMATS:
        raise ConvertError(f"format {fmt!r}: must be one of {', '.join(FORMATS)}")
    target = os.path.join(out, dataset, f"{dataset}.inter")
    if os.path.exists(target) and not force:
        raise ConvertError(f"{target} exists; pass --force to overwrite it")
    rows = read_interactions(path, fmt)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    write_atomically(target, [HEADER + "\n", *(f"{user}\t{item}\t{stamp:g}\n" for user, item, stamp in rows)])
    return Counts(len({r[0] for r in rows}), len({r[1] for r in rows}), len(rows))


def write_run_config(dataset: str, out: str) -> str:
    """Write `out/dataset/dataset.yaml`, the keys that train on the converted file (its
    absolute data_path, the timestamp loaded, leave-one-out); return its path."""
    target = os.path.join(out, dataset, f"{dataset}.yaml")
    names = yaml.safe_dump({"dataset": dataset, "data_path": os.path.abspath(out)}, sort_keys=False)
    write_atomically(target, [names, *RUN_KEYS])
    return target


def write_atomically(target: str, lines: Iterable[str]) -> None:
    """Write `lines` to `target` through a per-process temporary file renamed into place: a
    reader never sees a half-written file, and two processes writing at once (parallel
    benchmark workers) both succeed."""
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_mdcns.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="the text file to convert")
    parser.add_argument("--dataset", required=True, help="the RecBole dataset name (output file stem)")
    parser.add_argument("--out", required=True, help="the RecBole data_path to write under")
    parser.add_argument("--format", default="sequence", choices=FORMATS, help="input layout (default: sequence)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = parser.parse_args(argv)
    try:
        counts = convert(args.input, args.dataset, args.out, args.format, args.force)
        run_config = write_run_config(args.dataset, args.out)
    except (ConvertError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {counts.users} users, {counts.items} items, {counts.interactions} interactions "
          f"-> {os.path.join(args.out, args.dataset)}")
    print(f"train on it: python run_recbole_mdcns.py --model=SASRec --config_files={run_config} "
          f"(its keys: dataset, data_path, load_col, eval_args)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
