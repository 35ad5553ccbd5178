"""The training layout (`train_layout`): which rows an epoch trains on.

`prefix` is RecBole's: one row per training target, the target after its prefix, so a
user with n training targets is encoded n times per epoch. `sequence` is SASRec's own
training: one row per user, its longest training prefix, with a target and negatives at
every position, from one encoder pass. It needs a causal backbone, whose output at a
position depends only on the items up to it: that output then equals the model's
`forward` on the row's items up to there (the whole prefix when the user's training
sequence fits in MAX_ITEM_LIST_LENGTH; for a longer one, the items from the window's
start), so every position trains what evaluation scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from recbole.data.interaction import Interaction
from torch import Tensor, nn

from recbole_mdcns.history import TARGET_INDEX_FIELD
from recbole_mdcns.params import Param

TRAIN_LAYOUTS = ("prefix", "sequence")
LAYOUT_PARAMS = (
    Param("train_layout", str, "prefix", "`prefix`: RecBole's row per training target; `sequence`: one row per user, "
          "its longest training prefix, with a target and negatives at every position (SASRec's training; "
          "causal models only; `train_batch_size` then counts users)", choices=TRAIN_LAYOUTS),
)

# Causal models whose `forward` reads its encoder's output at item_seq_len - 1 through
# `gather_indexes`. Not here: NARM, STAMP, SRGNN, GCSAN, LightSANs, FEARec and SINE pool
# over the whole sequence; NextItNet reads the last slot of the padded sequence; Caser,
# HGN, HRM, NPE, FOSSIL and FPMC encode a fixed window or the user.
CAUSAL_MODELS = ("SASRec", "GRU4Rec", "SASRecF", "GRU4RecF", "FDSA")


def check_layout(config: Any, models: dict[str, str]) -> list[str]:
    """The problems of `train_layout: sequence` with the trained `models` ({key: model name})."""
    if config["train_layout"] != "sequence":
        return []
    return [f"{key} = {name!r}: train_layout = 'sequence' needs a causal model whose output at a position "
            f"depends only on earlier items; supported: {', '.join(CAUSAL_MODELS)} (or use train_layout: prefix)"
            for key, name in models.items() if name not in CAUSAL_MODELS]


def every_position(model: nn.Module, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
    """The model's output at every position [B, L, d]: its own `forward`, with the final
    gather at item_seq_len - 1 made the identity for this one call."""
    model.gather_indexes = lambda output, index: output  # shadows the method on this instance
    try:
        return model.forward(item_seq, item_seq_len)
    finally:
        del model.gather_indexes


@dataclass(frozen=True)
class Positions:
    """The training positions of a batch of longest-prefix rows, flattened: position j of
    a row of length n has the items up to j as input and item j + 1 (for the last, the
    row's target) as its target."""

    row: Tensor  # [P] the batch row
    column: Tensor  # [P] j
    target: Tensor  # [P] the target id
    target_index: Tensor  # [P] the target's index in the user's training sequence


def positions(interaction: Interaction, model: nn.Module) -> Positions:
    """Every position of every row of a longest-prefix batch."""
    seq, length = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    columns = torch.arange(seq.shape[1], device=seq.device)
    valid = columns < length.unsqueeze(1)
    next_items = torch.cat([seq[:, 1:], torch.zeros_like(seq[:, :1])], dim=1)
    next_items = next_items.scatter(1, (length - 1).unsqueeze(1), interaction[model.ITEM_ID].unsqueeze(1))
    row, column = torch.nonzero(valid, as_tuple=True)
    start = interaction[TARGET_INDEX_FIELD] - length  # index of the row's first item
    return Positions(row, column, next_items[row, column], start[row] + column + 1)
