"""Tune sampler (and any other) keys with RecBole's HyperTuning, as RecBole's run_hyper.py.

    python run_hyper_mdcns.py --model=SASRec --dataset=ml-100k --config_files=quick --params_file=yaml/hyper/mdcns.hyper \\
        --output_file=hyper_mdcns.result --algo=exhaustive

A params file has one key a line: `name choice [v1,v2,...]`, `name uniform low,high`,
`name quniform low,high,q` or `name loguniform low,high`.
"""
import argparse
import os
import sys

from recbole.utils.utils import dict2str

from recbole_mdcns.cli import debug_requested, report
from recbole_mdcns.params import ConfigError
from recbole_mdcns.tuning import HyperTuning, space_problems


def main() -> int:
    """Tune, write every trial's results and print the best; the exit status. A mistake in
    the command, the space or the fixed config is one line on stderr and exit status 2,
    before the first trial (--debug shows its traceback); one that only some trials' values
    make stops the search at that trial, the same way."""
    debug = debug_requested()
    try:
        tune()
    except ConfigError as error:
        if debug:
            raise
        return report(error)
    return 0


def tune() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_files", type=str, default=None, help="space-separated fixed yaml files")
    parser.add_argument("--params_file", type=str, required=True, help="the search space")
    parser.add_argument("--output_file", type=str, default="hyper.result", help="where every trial's results go")
    parser.add_argument("--display_file", type=str, default=None, help="an html plot of the trials")
    parser.add_argument("--algo", type=str, default="exhaustive", choices=["exhaustive", "random", "bayes"])
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random and bayes")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a configuration error")
    args, _ = parser.parse_known_args()
    if not os.path.isfile(args.params_file):
        raise ConfigError([f"--params_file={args.params_file}: no such file"])
    # the trial configs must not pick up this script's own --key=value options
    sys.argv = sys.argv[:1] + [a for a in sys.argv[1:] if a.split("=")[0].lstrip("-") not in vars(args)]

    fixed = args.config_files.strip().split(" ") if args.config_files else None
    problems = space_problems(args.params_file, fixed)
    if problems:
        raise ConfigError(problems)
    tuning = HyperTuning(
        params_file=args.params_file,
        fixed_config_file_list=fixed,
        display_file=args.display_file,
        algo=args.algo,
        max_evals=args.max_evals,
    )
    tuning.run()
    tuning.export_result(output_file=args.output_file)
    best = tuning.best_result()
    print("best params:", tuning.best_params)
    print("best valid result:\n" + dict2str(best["best_valid_result"]))
    print("test result of the best params:\n" + dict2str(best["test_result"]))


if __name__ == "__main__":
    sys.exit(main())
