"""Masked full-ranking evaluation (`eval_mask`), the protocol of the published anchors.

RecBole ranks a sequential model's validation and test target against every item, the
user's earlier ones included. The anchors (SASRec's and S3-Rec's code, the MDCNS
paper) give -inf to every item the user had before the target, so early stopping, the
best checkpoint and the reported metrics all follow that protocol here too.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from torch import Tensor

from recbole_mdcns.params import Param
from recbole_mdcns.history import UserHistory

EVAL_MASKS = ("none", "history", "history_keep_target")
EVAL_PARAMS = (
    Param("eval_mask", str, "none", "full-sort validation and test rank the target among items the user did not "
          "have before it: `history` (the anchors' protocol) or `history_keep_target` (a target the user had "
          "before stays ranked); `none` is RecBole's", choices=EVAL_MASKS),
)


def check_eval_mask(config: Any) -> list[str]:
    """The eval_mask problems that need other keys: a time-ordered, full-sort evaluation."""
    if config["eval_mask"] == "none":
        return []
    problems = []
    args = config["eval_args"]
    if args.get("order") != "TO":
        problems.append(f"eval_mask = {config['eval_mask']!r} needs eval_args order TO (the training items come "
                        f"before the evaluated target), not {args.get('order')!r}")
    modes = args.get("mode")
    modes = set(modes.values()) if isinstance(modes, dict) else {modes}
    if modes != {"full"}:
        problems.append(f"eval_mask = {config['eval_mask']!r} applies to full-sort evaluation: set eval_args mode "
                        f"full, not {args.get('mode')!r}")
    return problems


class HistoryMask:
    """Gives -inf to the items a row's user had before its target: every item of the
    user's training rows, and the row's own prefix (for a test row, it ends with the
    validation item). One gather and one scatter per batch, no loop over users."""

    def __init__(self, config: Any, train_dataset: Dataset):
        self.keep_target: bool = config["eval_mask"] == "history_keep_target"
        self.user_field = config["USER_ID_FIELD"]
        self.seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        # padded with 0, the padding item, whose score is already -inf
        self.user_items = UserHistory(config, train_dataset, pad=0, index="none").items.long().to(config["device"])

    def apply(self, interaction: Interaction, scores: Tensor, positive_u: Tensor, positive_i: Tensor) -> None:
        """Mask `scores` [B, N+1] in place; the targets are (positive_u, positive_i)."""
        users = interaction[self.user_field].to(scores.device)
        earlier = torch.cat([self.user_items[users], interaction[self.seq_field].to(scores.device)], dim=1)
        target_scores = scores[positive_u, positive_i]
        scores.scatter_(1, earlier, -math.inf)
        if self.keep_target:
            scores[positive_u, positive_i] = target_scores
