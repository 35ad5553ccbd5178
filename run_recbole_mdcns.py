"""Train and test a RecBole sequential model with a recbole-mdcns negative sampler.

    python run_recbole_mdcns.py --model=SASRec --sampler=MDCNS --dataset=ml-100k --config_files=quick --baseline=uniform

The same as `python -m recbole_mdcns ...`; `--help` lists the options (recbole_mdcns/cli.py).
"""
import sys

from recbole_mdcns.cli import main

if __name__ == "__main__":
    sys.exit(main())
