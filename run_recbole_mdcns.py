"""Train and test a RecBole sequential model with a recbole-mdcns negative sampler.

    python run_recbole_mdcns.py --model=SASRec --sampler=DNS --config_files=yaml/quick.yaml

Every other `--key=value` reaches RecBole's Config, as with RecBole's run_recbole.py.
"""
import argparse

from recbole_mdcns.quick_start import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default="SASRec", help="RecBole model name")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name (ml-100k ships with RecBole)")
    parser.add_argument("--sampler", type=str, default=None, help="negative sampler (default MDCNS; none = RecBole's own training)")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated yaml files")
    parser.add_argument("--resume", type=str, default=None, help="a *-resume.pth training state to continue")
    parser.add_argument("--nproc", type=int, default=1, help="processes for torch.distributed (gloo on CPU)")
    parser.add_argument("--ip", type=str, default="localhost", help="the master address of a multi-process run")
    parser.add_argument("--port", type=str, default="5678", help="the master port of a multi-process run")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes over all nodes")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this node")
    args, _ = parser.parse_known_args()

    run(
        model=args.model,
        dataset=args.dataset,
        config_file_list=args.config_files.strip().split(" ") if args.config_files else None,
        config_dict={"sampler": args.sampler} if args.sampler else None,
        nproc=args.nproc,
        world_size=args.world_size,
        ip=args.ip,
        port=args.port,
        group_offset=args.group_offset,
        resume=args.resume,
    )
