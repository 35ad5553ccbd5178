"""`python -m recbole_mdcns --model=SASRec --sampler=MDCNS --dataset=ml-100k`: the command line from any folder."""
import sys

from recbole_mdcns.cli import main

sys.exit(main())
