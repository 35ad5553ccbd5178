"""The sampler interface, the registry by name, and the shared candidate pool.

A sampler turns an `EncodedBatch` into a training loss. The default loss is `neg_loss`
(BPR, BCE, SSM or gBCE) of the target against K negatives; a sampler usually only says which negatives
(`sample`, ids [B, K]) or, for synthetic negatives, which embeddings
(`negative_embeddings`, [B, K, d]). Selection runs without gradient; the loss
re-scores what was selected with gradient.
"""
from __future__ import annotations

import copy
import difflib
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Optional, Union

import torch
from recbole.data.dataset import Dataset
from torch import Tensor, nn

from recbole_mdcns.losses import LOSSES, RankingLoss, mixed_log_mass
from recbole_mdcns.params import ConfigError, Param, validate_params
from recbole_mdcns.history import LaterItems
from recbole_mdcns.samplers.exclusion import ExclusionSets, false_negative_share
from recbole_mdcns.scoring import EncodedBatch

Loss = Union[Tensor, tuple[Tensor, ...]]

SAMPLERS: dict[str, type["NegativeSampler"]] = {}
NO_CO_BATCHES: Mapping[str, EncodedBatch] = MappingProxyType({})
# rows of a batch whose chosen negatives the false-negative diagnostic checks (evenly spaced)
FALSE_NEGATIVE_ROWS = 1024

SHARED_PARAMS = (
    Param("neg_loss", str, "BPR", "the loss over each row's positive and K negatives: BPR, BCE, SSM (sampled "
          "softmax) or gBCE (gSASRec's calibrated BCE)", choices=LOSSES),
    Param("neg_num", int, 1, "K, negatives per training row; K <= M for the samplers with a top-M (DNS, MDCNS, "
          "MixGCF, GNNO); DivNS: 1 (one synthetic negative per row); gBCE: K <= N - 1", minimum=1),
    Param("neg_temperature", float, 1.0, "SSM's temperature T: scores are divided by it", minimum=0,
          minimum_exclusive=True),
    Param("neg_logq", bool, False, "SSM subtracts log(K Q) of each negative, Q its proposal probability (uniform, "
          "popularity and GenNi know it; the others select by score, have none and refuse it)"),
    Param("neg_shared", bool, False, "the K negatives are drawn once per batch and scored by every row as one "
          "[B, K] product; a row's excluded ids are masked out of its loss (uniform and popularity; gBCE "
          "learns little from shared negatives: see the README's departures). DNS and MixGCF share their C "
          "candidates instead, each row picking its own among those it does not exclude"),
    Param("neg_mix_num", int, 0, "S, uniform negatives drawn once per batch that join every row's SSM beside its "
          "own K, each corrected by log(S / N) (mixed negative sampling; not with neg_logq); a row's excluded ids "
          "are masked out; 0 = none", minimum=0),
    Param("neg_gbce_t", float, 0.75, "gBCE's calibration t in [0, 1]: beta = 1 - t (1 - K / (N - 1)); 0 is BCE "
          "with summed negatives", minimum=0, maximum=1),
    Param("neg_exclude", str, "history", "`history`: never the row's target nor any item its user had before it "
          "(the whole prefix, beyond MAX_ITEM_LIST_LENGTH); `user`: nor any training item of the user; `window`: "
          "only the target and the prefix items the row holds (RecBole's truncated view, to measure the difference); "
          "`target`: only the target, as full-softmax CE counts every other item as a negative",
          choices=("history", "user", "window", "target")),
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


def uniform_ids(n_items: int, num: int, device: torch.device) -> Tensor:
    """`num` ids uniform over 1..n_items, with replacement: [num]."""
    return torch.randint(1, n_items + 1, (num,), device=device)


def register(name: str) -> Callable[[type["NegativeSampler"]], type["NegativeSampler"]]:
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


def other_samplers_keys(sampler: str, keys: Any) -> dict[str, list[str]]:
    """Of `keys`, those that `sampler` (a name, or none) does not read but other samplers
    do: each with the names of the samplers that read it."""
    reads = {cls.name: {p.key for p in cls.all_params()} for cls in SAMPLERS.values()}
    own = reads[sampler_class(sampler).name] if str(sampler).lower() != "none" else set()
    owners = {key: [name for name, read in reads.items() if key in read] for key in sorted(keys) if key not in own}
    return {key: names for key, names in owners.items() if names}


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
    shares_candidates: ClassVar[bool] = False  # under neg_shared its C candidates are one pool for the batch

    def __init__(self, config: Any, dataset: Dataset):
        self.config = config
        self.neg_num: int = config["neg_num"]
        self.ranking_loss = RankingLoss.from_config(config, dataset.item_num - 1)
        self.log_q: bool = config["neg_logq"]
        self.shared: bool = config["neg_shared"]
        self.mix_num: int = config["neg_mix_num"]
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
        """Shared negatives need a sampler whose draw ignores the row, or one that shares
        its candidate pool; mixed negatives need SSM without the logQ correction; the
        correction needs SSM and a sampler that knows its proposal."""
        problems = []
        if config["neg_shared"] is True and not (cls.can_share or cls.shares_candidates):
            known = ", ".join(c.name for c in SAMPLERS.values() if c.can_share)
            pools = ", ".join(c.name for c in SAMPLERS.values() if c.shares_candidates)
            problems.append(f"neg_shared = true: {cls.name}'s negatives depend on the row; samplers that can share "
                            f"theirs: {known} (GenNi shares its subsample with genni_item_ratio below 1); samplers "
                            f"that share their candidate pool instead: {pools}")
        mix_num = config["neg_mix_num"]
        mixing = isinstance(mix_num, int) and mix_num > 0  # a wrong value is reported by its type check
        if mixing and config["neg_loss"] != "SSM":
            problems.append(f"neg_mix_num = {mix_num}: mixed negatives join the sampled softmax, so they need "
                            f"neg_loss SSM, not {config['neg_loss']!r}")
        elif mixing and config["neg_logq"] is True:
            problems.append(f"neg_mix_num = {mix_num} with neg_logq = true: the corrected K already estimate the whole "
                            "catalogue, so the mixed ones would count it twice; use one of the two")
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
        """Constraints that need the dataset: the pool must fit in the catalogue, and so must
        gBCE's K (its sampling rate K / (N - 1) is at most 1)."""
        problems = []
        if self.ranking_loss.kind == "gBCE" and self.neg_num > self.n_items - 1:
            problems.append(
                f"neg_num = {self.neg_num} with neg_loss gBCE: its sampling rate K / (N - 1) must be at most 1, so K "
                f"at most {self.n_items - 1} for the {self.n_items} items of dataset {self.config['dataset']!r}"
            )
        if self.uses_candidate_pool and self.candidate_num >= self.n_items:
            problems.append(
                f"neg_candidate_num = {self.candidate_num}: must be below the number of items "
                f"({self.n_items}) of dataset {self.config['dataset']!r}"
            )
        if self.n_items - self.exclusion.max_excluded < 1:
            problems.append(
                f"neg_exclude = {self.config['neg_exclude']!r}: some training rows may exclude all {self.n_items} items "
                "(a user had every item), so no negative could be drawn; drop such users "
                "(user_inter_num_interval), or use neg_exclude: target, or neg_exclude: window with a MAX_ITEM_LIST_LENGTH "
                "below the number of items"
            )
        return problems

    # ----- per batch ----------------------------------------------------------------
    def sample(self, batch: EncodedBatch) -> Tensor:
        """Negative ids [B, K]. Called once per batch: a sampler with per-row state (SRNS,
        AdaSIR) updates it here."""
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
        if self.shared and self.can_share:
            negatives, log_q = self.sample_shared(batch)
            neg_score = batch.score_shared(negatives)
            valid = ~self.exclusion.contains_shared(batch, negatives)
            log_q = log_q.expand_as(neg_score) if self.log_q else None
            self.chose(batch, negatives.expand(batch.size, -1), valid)
        elif self.log_q:
            negatives, log_q = self.sample_with_log_q(batch)
            neg_score = batch.score(negatives)
            self.chose(batch, negatives)
        else:
            log_q, neg_score = None, batch.score_embeddings(self.negative_embeddings(batch))
        self.record("neg_score", neg_score.detach().mean())
        (mixed,) = self.mixed_log_masses(batch)
        return self.ranking_loss(batch.pos_score(), neg_score, log_q, valid, mixed)

    def mixed_log_masses(self, batch: EncodedBatch, *co_batches: EncodedBatch) -> tuple[Optional[Tensor], ...]:
        """S = `neg_mix_num` ids uniform over 1..N, drawn once for the batch, and their log
        mass in each row's softmax [B] as self's encoding scores them and as each of
        `co_batches` (other models' encodings of the same rows) does, in that order; Nones
        when S is 0."""
        encodings = (batch, *co_batches)
        if self.mix_num == 0:
            return (None,) * len(encodings)
        ids = uniform_ids(self.n_items, self.mix_num, self.device)
        valid = ~self.exclusion.contains_shared(batch, ids)
        log_count = math.log(self.mix_num / self.n_items)
        temperature = self.ranking_loss.temperature
        return tuple(mixed_log_mass(encoded.score_shared(ids), log_count, valid, temperature) for encoded in encodings)

    def candidate_pool(self, batch: EncodedBatch, num: Optional[int] = None) -> Tensor:
        """`num` (default C) ids per row, uniform over the items not excluded for it: [B, num]."""
        return self.exclusion.draw(batch, self.candidate_num if num is None else num)

    def shared_candidates(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """C distinct ids [C] for the whole batch, uniform over 1..N, and which of them each
        row excludes [B, C] (`shares_candidates` under neg_shared)."""
        ids = torch.randperm(self.n_items, device=self.device)[: self.candidate_num] + 1
        return ids, self.exclusion.contains_shared(batch, ids)

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

