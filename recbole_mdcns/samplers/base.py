"""The sampler interface, the registry by name, and the shared candidate pool.

A sampler turns an `EncodedBatch` into a training loss. The default loss is BPR or
BCE of the target against K negatives; a sampler usually only says which negatives
(`sample`, ids [B, K]) or, for synthetic negatives, which embeddings
(`negative_embeddings`, [B, K, d]). Selection runs without gradient; the loss
re-scores what was selected with gradient.
"""
from __future__ import annotations

import copy
import difflib
import math
import re
import weakref
from collections import defaultdict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Union

import torch
from recbole.data.dataset import Dataset
from torch import Tensor, nn

from recbole_mdcns.losses import LOSSES, RankingLoss
from recbole_mdcns.params import ConfigError, Param, validate_params
from recbole_mdcns.history import LaterItems, UserHistory
from recbole_mdcns.scoring import EncodedBatch

Loss = Union[Tensor, tuple[Tensor, ...]]

SAMPLERS: dict[str, type["NegativeSampler"]] = {}
NO_CO_BATCHES: Mapping[str, EncodedBatch] = MappingProxyType({})

SHARED_PARAMS = (
    Param("neg_loss", str, "BPR", "the loss over each row's positive and K negatives: BPR, BCE, SSM (sampled "
          "softmax) or gBCE (gSASRec's calibrated BCE)", choices=LOSSES),
    Param("neg_num", int, 1, "K, negatives per training row", minimum=1),
    Param("neg_temperature", float, 1.0, "SSM's temperature T: scores are divided by it", minimum=0,
          minimum_exclusive=True),
    Param("neg_logq", bool, False, "SSM subtracts log(K Q) of each negative, Q its proposal probability (uniform, "
          "popularity and GenNi know it)"),
    Param("neg_shared", bool, False, "the K negatives are drawn once per batch and scored by every row as one "
          "[B, K] product; a row's excluded ids are masked out of its loss (uniform and popularity)"),
    Param("neg_gbce_t", float, 0.75, "gBCE's calibration t in [0, 1]: beta = 1 - t (1 - K / (N - 1)); 0 is BCE "
          "with summed negatives", minimum=0, maximum=1),
    Param("neg_exclude", str, "history", "`history`: never the row's target nor any item its user had before it "
          "(the whole prefix, beyond MAX_ITEM_LIST_LENGTH); `user`: nor any training item of the user; `window`: "
          "only the target and the prefix items the row holds (RecBole's truncated view, to measure the difference)",
          choices=("history", "user", "window")),
)
CANDIDATE_PARAM = Param("neg_candidate_num", int, 100, "C, candidates scored per row; must be below the number of items",
                        minimum=1)


def ordered(config: Any, small: str, large: str, strict: bool = False, why: str = "") -> list[str]:
    """The problem if `small` exceeds `large` (or equals it, when `strict`); nothing when
    either is not a number (its own type check reports that)."""
    a, b = config[small], config[large]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return []
    if a < b or (a == b and not strict):
        return []
    return [f"{small} = {a}: must be {'below' if strict else '<='} {large} ({b}){why}"]


def occurrence_index(keys: Tensor) -> Tensor:
    """For each position, how many earlier positions hold the same key: [n]."""
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    positions = torch.arange(len(keys), device=keys.device)
    starts = torch.ones_like(sorted_keys, dtype=torch.bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    rank_sorted = positions - torch.cummax(torch.where(starts, positions, 0), dim=0).values
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


def register(name: str):
    """Class decorator: make a sampler available as `sampler: <name>` (any case)."""

    def add(cls: type["NegativeSampler"]) -> type["NegativeSampler"]:
        cls.name = name
        SAMPLERS[name.lower()] = cls
        return cls

    return add


def sampler_class(name: str) -> type["NegativeSampler"]:
    """The sampler registered under `name` (case-insensitive), or a ConfigError."""
    try:
        return SAMPLERS[str(name).lower()]
    except KeyError:
        raise ConfigError([f"sampler = {name!r} is unknown; valid samplers: {', '.join(sampler_names())}"]) from None


def known_keys() -> set[str]:
    """Every plugin key of every registered sampler."""
    return {"sampler"} | {p.key for cls in SAMPLERS.values() for p in cls.all_params()}


def closest_key_problem(key: str, known: Any, what: str) -> str:
    """"<key> is not <what> (did you mean <the closest known key>?)"."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "see the README's config keys"
    return f"{key} is not {what} ({hint})"


def key_prefixes() -> tuple[str, ...]:
    """The prefixes of the registered samplers' keys (`neg_`, `dns_`, ...): a user key with
    one of them that no sampler declares is a typo."""
    return tuple(sorted({p.key.split("_")[0] + "_" for cls in SAMPLERS.values() for p in cls.all_params()}))


def sampler_names() -> list[str]:
    return ["none"] + sorted((cls.name for cls in SAMPLERS.values()), key=str.lower)


@dataclass(frozen=True)
class CoTrained:
    """A model a sampler trains beside self (MDCNS's peer). The trainer encodes it once per
    batch, builds its optimiser from `config` (learner, learning_rate, weight_decay,
    clip_grad_norm), scales, clips and steps it with self's, syncs it under DDP and
    checkpoints it with its optimiser."""

    model: nn.Module
    config: Any


class NegativeSampler:
    """Base class: config keys, the exclusion sets, the candidate pool and the default loss.

    Subclasses set `params` (their own keys, with their defaults) and
    `uses_candidate_pool`, read their keys in `__init__`, and implement `sample` or
    `negative_embeddings` (or the whole `loss`); samplers with state also override
    `on_epoch_end`, `state_dict` and `load_state_dict`; a sampler whose loss trains other
    models declares them in `co_trained`.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    uses_candidate_pool: ClassVar[bool] = False
    has_proposal: ClassVar[bool] = False  # implements sample_with_log_q (the logQ correction)
    can_share: ClassVar[bool] = False  # implements sample_shared (neg_shared): its draw ignores the row

    def __init__(self, config: Any, dataset: Dataset):
        self.config = config
        self.neg_num: int = config["neg_num"]
        self.ranking_loss = RankingLoss.from_config(config, dataset.item_num - 1)
        self.log_q: bool = config["neg_logq"]
        self.shared: bool = config["neg_shared"]
        self.candidate_num: int = config["neg_candidate_num"] if self.uses_candidate_pool else 0
        self.device = config["device"]
        self.n_items = dataset.item_num - 1  # ids 1..N; 0 is padding
        self.exclusion = ExclusionSets(config, dataset)
        self.co_trained: dict[str, CoTrained] = {}
        self.later_items: Optional[LaterItems] = None  # the false-negative diagnostic, when watched
        self._sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        self._counts: dict[str, int] = defaultdict(int)
        problems = self.check_dataset()
        if problems:
            raise ConfigError(problems)

    # ----- configuration ---------------------------------------------------------
    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        """The shared keys, the pool's when it has one, then its own (which may redeclare a
        shared key with another default)."""
        declared = SHARED_PARAMS + ((CANDIDATE_PARAM,) if cls.uses_candidate_pool else ()) + cls.params
        return tuple({p.key: p for p in declared}.values())

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """This sampler's keys with their declared defaults."""
        return {p.key: copy.deepcopy(p.default) for p in cls.all_params()}

    @classmethod
    def check_config(cls, config: Any) -> list[str]:
        """Cross-key constraints of this sampler (keys are already type-checked)."""
        return []

    @classmethod
    def check_loss(cls, config: Any) -> list[str]:
        """Shared negatives need a sampler whose draw ignores the row; the logQ correction
        needs SSM and a sampler that knows its proposal."""
        problems = []
        if config["neg_shared"] is True and not cls.can_share:
            known = ", ".join(c.name for c in SAMPLERS.values() if c.can_share)
            problems.append(f"neg_shared = true: {cls.name}'s negatives depend on the row; samplers that can share "
                            f"theirs: {known} (GenNi shares its subsample with genni_item_ratio below 1)")
        if config["neg_logq"] is not True:  # false, or not a boolean (reported by its type check)
            return problems
        if config["neg_loss"] != "SSM":
            return problems + [f"neg_logq = true: the logQ correction applies to neg_loss SSM, not {config['neg_loss']!r}"]
        if not cls.has_proposal:
            known = ", ".join(c.name for c in SAMPLERS.values() if c.has_proposal)
            return problems + [f"neg_logq = true: {cls.name} selects its negatives by their scores, so they have no "
                               f"proposal probability to correct for; samplers with one: {known}"]
        return problems

    @classmethod
    def co_trained_models(cls, config: Any) -> dict[str, str]:
        """The models this sampler will train beside self, {config key: model name}."""
        return {}

    @classmethod
    def validate(cls, config: Any) -> list[str]:
        """Type-check every key of this sampler in place (canonical types and spellings),
        then its cross-key constraints, less those that name a key whose own value is wrong
        (their message would only restate it); return every problem found."""
        problems = validate_params(config, cls.all_params())
        wrong = [p.key for p in cls.all_params() if any(problem.startswith((f"{p.key} = ", f"{p.key} is missing"))
                                                        for problem in problems)]
        cross = cls.check_config(config) + cls.check_loss(config)
        return problems + [c for c in cross if not any(re.search(rf"\b{key}\b", c) for key in wrong)]

    @classmethod
    def build(cls, config: Any, dataset: Dataset, **keys: Any) -> "NegativeSampler":
        """This sampler for a RecBole `Config` built elsewhere: `keys` over the keys the user
        set in the config over the sampler's defaults, validated as at start-up."""
        defaults, user_set = cls.defaults(), getattr(config, "external_config_dict", {})
        problems = [closest_key_problem(key, defaults, f"a key of {cls.name}") for key in sorted(set(keys) - set(defaults))]
        merged = copy.copy(config)
        merged.final_config_dict = {**config.final_config_dict, **defaults,
                                    **{k: v for k, v in user_set.items() if k in defaults}, **keys}
        merged["sampler"] = cls.name
        problems += cls.validate(merged)
        if problems:
            raise ConfigError(problems)
        return cls(merged, dataset)

    def check_dataset(self) -> list[str]:
        """Constraints that need the dataset: the pool must fit in the catalogue."""
        problems = []
        if self.uses_candidate_pool and self.candidate_num >= self.n_items:
            problems.append(
                f"neg_candidate_num = {self.candidate_num}: must be below the number of items "
                f"({self.n_items}) of dataset {self.config['dataset']!r}"
            )
        if self.n_items - self.exclusion.max_excluded < 1:
            problems.append(
                f"neg_exclude = {self.config['neg_exclude']!r}: some training rows may exclude all {self.n_items} items "
                "(a user had every item), so no negative could be drawn; drop such users "
                "(user_inter_num_interval) or use neg_exclude: window with a MAX_ITEM_LIST_LENGTH below the number of items"
            )
        return problems

    # ----- per batch ----------------------------------------------------------------
    def sample(self, batch: EncodedBatch) -> Tensor:
        """Negative ids [B, K]."""
        raise NotImplementedError

    def sample_with_log_q(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """Negative ids [B, K] and the log of each one's proposal probability [B, K]
        (samplers with `has_proposal`)."""
        raise NotImplementedError

    def sample_shared(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """K ids [K] for the whole batch and the log of each one's proposal probability [K]
        (samplers with `can_share`)."""
        raise NotImplementedError

    def negative_embeddings(self, batch: EncodedBatch) -> Tensor:
        """Negative item embeddings [B, K, d], with gradient."""
        negatives = self.sample(batch)
        self.chose(batch, negatives)
        return batch.item_rows(negatives)

    def loss(self, batch: EncodedBatch, co_batches: Mapping[str, EncodedBatch] = NO_CO_BATCHES) -> Loss:
        """The training loss of one batch (a tuple is logged part by part), from self's
        encoding and, by name, those of the `co_trained` models."""
        valid = None
        if self.shared:
            negatives, log_q = self.sample_shared(batch)
            neg_score = batch.seq_emb @ batch.item_rows(negatives).T  # [B, K]: one product for the batch
            valid = ~self.exclusion.contains(batch, negatives.expand(batch.size, -1))
            log_q = log_q.expand_as(neg_score) if self.log_q else None
            self.chose(batch, negatives.expand(batch.size, -1), valid)
        elif self.log_q:
            negatives, log_q = self.sample_with_log_q(batch)
            neg_score = batch.score(negatives)
            self.chose(batch, negatives)
        else:
            log_q, neg_score = None, batch.score_embeddings(self.negative_embeddings(batch))
        self.record("neg_score", neg_score.detach().mean())
        return self.ranking_loss(batch.pos_score(), neg_score, log_q, valid)

    def candidate_pool(self, batch: EncodedBatch, num: Optional[int] = None) -> Tensor:
        """`num` (default C) ids per row, uniform over the items not excluded for it: [B, num]."""
        return self.exclusion.draw(batch, num or self.candidate_num)

    # ----- hooks -------------------------------------------------------------------
    def on_epoch_end(self, epoch: int) -> None:
        """Called after the last batch of each training epoch."""

    def state_dict(self) -> dict[str, Any]:
        """Training state to checkpoint (tensors, numbers and plain containers only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    # ----- diagnostics -------------------------------------------------------------
    def watch_false_negatives(self, later_items: LaterItems) -> None:
        """Log `false_negatives` each epoch: the share of the chosen negatives that their
        row's user has later (a later training item, the validation or the test item)."""
        self.later_items = later_items.to(self.device)

    def chose(self, batch: EncodedBatch, ids: Tensor, counted: Optional[Tensor] = None) -> None:
        """Note the negative ids [B, K] chosen for the batch's rows (those `counted` [B, K]
        marks): their false-negative share, when watched, measured on an evenly spaced
        sample of at most FALSE_NEGATIVE_ROWS rows. A sampler that builds synthetic negatives
        notes the items it builds them from."""
        if self.later_items is None:
            return
        rows = slice(None, None, math.ceil(batch.size / FALSE_NEGATIVE_ROWS))
        self.record("false_negatives", false_negative_share(
            self.later_items, batch.users[rows], batch.target_index[rows], ids[rows],
            None if counted is None else counted[rows]))

    def record(self, name: str, value: Tensor) -> None:
        """Add a per-batch figure (a 0-d tensor, no sync) to this epoch's means."""
        self._sums[name] = self._sums[name] + value
        self._counts[name] += 1

    def pop_diagnostics(self) -> dict[str, float]:
        """This epoch's mean of each recorded figure; resets them."""
        means = {k: (v / self._counts[k]).item() for k, v in self._sums.items()}
        self._sums.clear()
        self._counts.clear()
        return means


# rows of a batch whose chosen negatives the false-negative diagnostic checks (evenly spaced)
FALSE_NEGATIVE_ROWS = 1024
# [rows, W] entries per piece of a batch's exclusions: rows are taken in pieces of at most
# this many entries, so memory stays bounded when W (the most items one user has) is large
EXCLUSION_PIECE_ENTRIES = 2**22


class ExclusionSets:
    """The items a training row may not draw: under `history`, every item its user had up
    to and including its target (the whole prefix, not only RecBole's truncated window);
    under `user`, every training item of its user; under `window`, the target and the
    prefix items the row holds.

    `history` and `user` read the user's sorted distinct items (`UserHistory`) with a
    per-row mask of those that count, so draws and membership tests need no sort per
    batch; `window` sorts the row's own ids. A batch is handled in pieces of rows whose
    [rows, W] tensors hold at most EXCLUSION_PIECE_ENTRIES entries.
    """

    def __init__(self, config: Any, dataset: Dataset):
        self.mode: str = config["neg_exclude"]
        self.n_items = dataset.item_num - 1
        self.pad = self.n_items + 1
        if self.mode == "window":
            self.history = None
            self.width = config["MAX_ITEM_LIST_LENGTH"] + 1
            self.max_excluded = self.width
        else:
            self.history = UserHistory(config, dataset, self.pad).to(config["device"])
            self.width = self.history.items.shape[1]
            # a user's last row excludes all the user's items under either mode
            self.max_excluded = int(self.history.counts.max()) if len(self.history.counts) else 0
        self.piece_rows = max(1, EXCLUSION_PIECE_ENTRIES // self.width)
        # the latest batch's exclusions by row slice: a sampler that draws and then tests
        # membership (DivNS, popularity's redraws) builds them once per batch. A weak
        # reference: holding the batch would keep its autograd graph alive into the next step
        self._latest: tuple[Callable[[], Optional[EncodedBatch]], dict[tuple[int, int], RowExclusions]] = (
            lambda: None, {})

    def for_rows(self, batch: EncodedBatch, rows: slice) -> "RowExclusions":
        """The exclusions of the batch's training rows `rows`."""
        if self._latest[0]() is not batch:
            self._latest = (weakref.ref(batch), {})
        cached = self._latest[1]
        key = (rows.start, rows.stop)
        if key not in cached:
            cached[key] = self._build(batch, rows)
        return cached[key]

    def _build(self, batch: EncodedBatch, rows: slice) -> "RowExclusions":
        if self.history is None:
            held = torch.cat([batch.pos_items[rows].unsqueeze(1), batch.held_items(rows)], 1)
            return RowExclusions.of_ids(held, self.n_items)
        users = batch.users[rows]
        items = self.history.items.index_select(0, users)  # index_select: the fastest row gather
        if self.mode == "user":
            return RowExclusions(items, items < self.pad, self.n_items)
        first = self.history.first.index_select(0, users)
        return RowExclusions(items, first <= batch.target_index[rows].unsqueeze(1), self.n_items)

    def pieces(self, batch: EncodedBatch, piece_rows: Optional[int] = None) -> Iterator[tuple[slice, "RowExclusions"]]:
        """The batch's rows in pieces of at most `piece_rows` (default: the memory bound), with their exclusions."""
        step = min(piece_rows or self.piece_rows, self.piece_rows)
        for start in range(0, batch.size, step):
            rows = slice(start, start + step)
            yield rows, self.for_rows(batch, rows)

    def draw(self, batch: EncodedBatch, num: int) -> Tensor:
        """`num` ids per row [B, num], uniform with replacement over the ids the row does not exclude."""
        return torch.cat([exclusions.draw(num) for _, exclusions in self.pieces(batch)])

    def free(self, batch: EncodedBatch) -> Tensor:
        """How many ids each row may draw: [B]."""
        return torch.cat([self.n_items - exclusions.excluded.sum(1) for _, exclusions in self.pieces(batch)])

    def excluded_mass(self, batch: EncodedBatch, probs: Tensor) -> Tensor:
        """The total of `probs` [N+1] over each row's excluded ids: [B]."""
        return torch.cat([(probs[exclusions.items.long().clamp(max=self.n_items)] * exclusions.excluded).sum(1)
                          for _, exclusions in self.pieces(batch)])

    def contains(self, batch: EncodedBatch, ids: Tensor) -> Tensor:
        """Whether each of the ids [B, n] is excluded for its row: [B, n] bool."""
        return torch.cat([exclusions.contains(ids[rows]) for rows, exclusions in self.pieces(batch)])


def false_negative_share(later_items: LaterItems, users: Tensor, target_index: Tensor, ids: Tensor,
                         counted: Optional[Tensor] = None) -> Tensor:
    """The share (0-d) of the ids [B, K] that the rows' users [B] have after the rows'
    target indices [B], among the entries `counted` [B, K] marks (default: all). Rows are
    taken in pieces whose [rows, W] tables hold at most EXCLUSION_PIECE_ENTRIES entries."""
    items, last = later_items.history.items, later_items.history.last
    step = max(1, EXCLUSION_PIECE_ENTRIES // items.shape[1])
    later = []
    for start in range(0, len(users), step):
        rows = slice(start, start + step)
        is_later = last.index_select(0, users[rows]) > target_index[rows].unsqueeze(1)
        user_items = items.index_select(0, users[rows])
        later.append(RowExclusions(user_items, is_later, later_items.n_items).contains(ids[rows]))
    marked = torch.cat(later)
    counted = torch.ones_like(marked) if counted is None else counted
    return (marked & counted).sum() / counted.sum().clamp(min=1)


@dataclass
class RowExclusions:
    """Per row: its user's sorted items [B, W] (padded with N+1) and which of them the row excludes [B, W]."""

    items: Tensor
    excluded: Tensor
    n_items: int

    @classmethod
    def of_ids(cls, ids: Tensor, n_items: int) -> "RowExclusions":
        """Exclusions of the ids [B, W] of each row (0 is padding; repeats allowed): one sort."""
        items = ids.masked_fill(ids == 0, n_items + 1).int().sort(dim=1).values
        excluded = items <= n_items
        excluded[:, 1:] &= items[:, 1:] != items[:, :-1]  # a repeat is marked once
        return cls(items, excluded, n_items)

    def ids(self, shift: int = 0) -> Tensor:
        """The excluded ids of each row plus `shift` [B, W] (int64), padded with N+1+shift."""
        return torch.where(self.excluded, self.items + shift, self.n_items + 1 + shift).long()

    def contains(self, ids: Tensor) -> Tensor:
        """Whether each of the ids [B, n] is excluded for its row: [B, n] bool."""
        pos = torch.searchsorted(self.items, ids.int()).clamp(max=self.items.shape[1] - 1)
        return (self.items.gather(1, pos.long()) == ids) & self.excluded.gather(1, pos.long())

    def draw(self, num: int) -> Tensor:
        """`num` ids per row [B, num], uniform with replacement over the ids the row does not exclude."""
        return draw_from_sorted_complement(self.items, self.excluded, num, self.n_items)


def draw_from_sorted_complement(items: Tensor, excluded: Tensor, num: int, n_items: int) -> Tensor:
    """Draw `num` ids per row uniformly (with replacement) from 1..n_items minus the ids of
    `items` [B, W] (ascending, padding above n_items at the end) that `excluded` [B, W]
    marks, each id marked at most once (a repeat unmarked). Exact, loop-free, no sort.
    A row must keep a free id (`check_dataset` ensures it).

    Draw a rank r among the row's free ids and map it to an id: with c_i the number of
    marked ids among items_0..items_i, g_i = items_i - c_i is non-decreasing, and the
    marked ids below the answer are c at the last i with g_i <= r, so
    id = r + 1 + c_{j-1} with j = #{i : g_i <= r}.
    """
    counted = torch.cumsum(excluded, dim=1, dtype=torch.int32)  # c_i
    gaps = items.int() - counted  # g_i (int32: half the cost of int64 here)
    free = n_items - counted[:, -1:]  # [B, 1]
    rank = (torch.rand(items.shape[0], num, device=items.device) * free).int()
    rank = torch.minimum(rank, free - 1)  # float rounding can reach `free`
    j = torch.searchsorted(gaps, rank, right=True, out_int32=True)
    below = torch.cat([torch.zeros_like(counted[:, :1]), counted], dim=1).gather(1, j.long())
    return (rank + 1 + below).long()
