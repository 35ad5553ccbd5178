"""Turn (model, batch) into a sequence representation and score any item set with it.

Every supported RecBole sequential model scores an item as a dot product
`<h_b, E[i]>` between the sequence representation `h` [B, d] (one encoder pass)
and a row of an item table `E` [N+1, d]. A `Backbone` says, for one model class,
how to get both. Candidates are scored by gathering their rows of `E`; the encoder
never runs per candidate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from recbole.data.interaction import Interaction
from torch import Tensor, nn

from recbole_mdcns.history import TARGET_INDEX_FIELD
from recbole_mdcns.layout import every_position, positions
from recbole_mdcns.params import ConfigError


@dataclass(frozen=True)
class Backbone:
    """How one model class encodes a batch and which item table scores it."""

    encode: Callable[[nn.Module, Interaction], Tensor]
    item_table: Callable[[nn.Module], Tensor]


def _encode_seq_and_len(model: nn.Module, inter: Interaction) -> Tensor:
    return model.forward(inter[model.ITEM_SEQ], inter[model.ITEM_SEQ_LEN])


def _item_embedding(model: nn.Module) -> Tensor:
    return model.item_embedding.weight


def _fpmc_encode(model: nn.Module, inter: Interaction) -> Tensor:
    # FPMC's score <U_u, IU_i> + <LI_last, IL_i> is one dot product over concatenations.
    last = inter[model.ITEM_SEQ].gather(1, (inter[model.ITEM_SEQ_LEN] - 1).unsqueeze(1)).squeeze(1)
    return torch.cat([model.UI_emb(inter[model.USER_ID]), model.LI_emb(last)], dim=-1)


_FAST_PATH = Backbone(_encode_seq_and_len, _item_embedding)

BACKBONES: dict[str, Backbone] = {
    **{
        name: _FAST_PATH
        for name in (
            "SASRec", "GRU4Rec", "NARM", "STAMP", "SRGNN", "GCSAN", "LightSANs",
            "SINE", "FDSA", "SASRecF", "GRU4RecF", "FEARec",
        )
    },
    "Caser": Backbone(lambda m, x: m.forward(x[m.USER_ID], x[m.ITEM_SEQ]), _item_embedding),
    "FOSSIL": Backbone(
        lambda m, x: m.forward(x[m.ITEM_SEQ], x[m.ITEM_SEQ_LEN], x[m.USER_ID]), _item_embedding
    ),
    "HRM": Backbone(
        lambda m, x: m.forward(x[m.ITEM_SEQ], x[m.USER_ID], x[m.ITEM_SEQ_LEN]), _item_embedding
    ),
    "NPE": Backbone(
        lambda m, x: m.forward(x[m.ITEM_SEQ], x[m.USER_ID]),
        lambda m: torch.relu(m.item_embedding.weight),
    ),
    "NextItNet": Backbone(lambda m, x: m.forward(x[m.ITEM_SEQ]), _item_embedding),
    "HGN": Backbone(
        lambda m, x: m.forward(x[m.ITEM_SEQ], x[m.USER_ID]),
        lambda m: m.item_embedding_for_prediction.weight,
    ),
    "FPMC": Backbone(_fpmc_encode, lambda m: torch.cat([m.IU_emb.weight, m.IL_emb.weight], dim=-1)),
}

UNSUPPORTED: dict[str, str] = {
    "BERT4Rec": "trains by masked-item prediction over the whole sequence",
    "S3Rec": "pre-trains with self-supervised objectives before fine-tuning",
    "CORE": "trains with its own normalised, temperature-scaled softmax",
    "RepeatNet": "outputs a repeat/explore mixture of probabilities, not item scores",
    "GRU4RecCPR": "uses a softmax-CPR output layer with several item tables",
    "SASRecCPR": "uses a softmax-CPR output layer with several item tables",
    "DIN": "is a click-through-rate model that scores one item with an MLP",
    "DIEN": "is a click-through-rate model that scores one item with an MLP",
    "TransRec": "scores by a translation distance, which is not a dot product",
    "SHAN": "reads an inverse item sequence that RecBole's loaders do not build",
    "KSR": "needs a knowledge graph",
    "GRU4RecKG": "needs a knowledge graph",
}


def backbone_for(model_name: str) -> Backbone:
    """The backbone of a supported model, or a ConfigError naming the supported ones."""
    if model_name in BACKBONES:
        return BACKBONES[model_name]
    why = f" ({model_name} {UNSUPPORTED[model_name]})" if model_name in UNSUPPORTED else ""
    raise ConfigError(
        [
            f"model = {model_name!r} is not supported by the negative samplers{why}; "
            f"supported models: {', '.join(sorted(BACKBONES))} "
            "(or use sampler: none for RecBole's own training)"
        ]
    )


@dataclass
class EncodedBatch:
    """One training batch after a single encoder pass of one model: B training rows (under
    train_layout: sequence, every position of the batch's rows is a row here)."""

    seq_emb: Tensor  # h [B, d], carries gradient
    item_table: Tensor  # E [N+1, d], carries gradient
    pos_items: Tensor  # [B]
    users: Tensor  # [B]
    target_index: Tensor  # [B] the target's index in its user's training sequence
    item_seq: Tensor  # [R, L] the batch's rows as RecBole holds them, right-padded with 0
    seq_row: Tensor  # [B] the row of item_seq that each training row reads
    seq_len: Tensor  # [B] how many of that row's items it reads

    def held_items(self, rows: slice) -> Tensor:
        """The prefix items that training rows `rows` read [r, L], 0 beyond (RecBole's truncated view)."""
        seq = self.item_seq.index_select(0, self.seq_row[rows])
        beyond = torch.arange(seq.shape[1], device=seq.device) >= self.seq_len[rows].unsqueeze(1)
        return seq.masked_fill(beyond, 0)

    @property
    def size(self) -> int:
        return self.pos_items.shape[0]

    def item_rows(self, items: Tensor) -> Tensor:
        """Rows of E for ids of any shape: [..., d] (index_select is the fastest gather)."""
        return self.item_table.index_select(0, items.reshape(-1)).view(*items.shape, -1)

    def score(self, items: Tensor) -> Tensor:
        """Scores <h_b, E[items[b, j]]> of ids [B, n], with gradient: [B, n]."""
        return self.score_embeddings(self.item_rows(items))

    def score_shared(self, items: Tensor) -> Tensor:
        """Scores of ids [n] that every row scores, with gradient: [B, n], one matrix product."""
        return self.seq_emb @ self.item_rows(items).T

    def score_embeddings(self, item_emb: Tensor) -> Tensor:
        """Scores <h_b, v[b, j]> of embeddings [B, n, d]: [B, n]."""
        return torch.bmm(item_emb, self.seq_emb.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def score_detached(self, items: Tensor) -> Tensor:
        """Scores of ids [B, n] for selection: no gradient."""
        return self.score(items)

    def pos_score(self) -> Tensor:
        """Scores of the targets, with gradient: [B]."""
        return (self.seq_emb * self.item_rows(self.pos_items)).sum(-1)


def encode_batch(model: nn.Module, interaction: Interaction, layout: str = "prefix") -> EncodedBatch:
    """Run `model`'s encoder once on a batch (of `layout`'s rows, which carry their
    TARGET_INDEX_FIELD) and return what the samplers score with."""
    backbone = backbone_for(type(model).__name__)
    users = interaction[model.USER_ID]
    if layout == "sequence":
        at = positions(interaction, model)
        hidden = every_position(model, interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
        return EncodedBatch(seq_emb=hidden[at.row, at.column], item_table=backbone.item_table(model),
                            pos_items=at.target, users=users[at.row], target_index=at.target_index,
                            item_seq=interaction[model.ITEM_SEQ], seq_row=at.row, seq_len=at.column + 1)
    seq = interaction[model.ITEM_SEQ]
    return EncodedBatch(seq_emb=backbone.encode(model, interaction), item_table=backbone.item_table(model),
                        pos_items=interaction[model.ITEM_ID], users=users,
                        target_index=interaction[TARGET_INDEX_FIELD], item_seq=seq,
                        seq_row=torch.arange(len(seq), device=seq.device), seq_len=interaction[model.ITEM_SEQ_LEN])
