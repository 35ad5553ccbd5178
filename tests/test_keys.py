"""Each key is declared once: its default, validation, typo check and README row come from it,
and a sampler registered outside the package gets all of them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from torch import Tensor

from recbole_mdcns import ConfigError, NegativeSampler, register, run_recbole_mdcns
from recbole_mdcns.config import Config, key_table
from recbole_mdcns.params import Param
from recbole_mdcns.samplers import SAMPLERS
from recbole_mdcns.scoring import EncodedBatch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recbole_mdcns"


def readme_key_rows() -> list[str]:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| all | `sampler`"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def test_readme_key_table_is_the_declarations():
    assert readme_key_rows() == key_table()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_declared_default_passes_its_own_validation(name):
    for param in SAMPLERS[name].all_params():
        assert param.coerce(param.default)[1] is None, param.key


def test_a_config_holds_the_chosen_samplers_declared_defaults(tiny_config):
    config = Config("SASRec", config_dict={k: v for k, v in tiny_config.items() if k != "neg_candidate_num"}
                    | {"sampler": "DivNS"})
    assert config["neg_candidate_num"] == 10 and config["divns_cache_size"] == 256  # DivNS's own default of C
    config = Config("SASRec", config_dict={k: v for k, v in tiny_config.items() if k != "neg_candidate_num"}
                    | {"sampler": "DNS"})
    assert config["neg_candidate_num"] == 100 and "divns_cache_size" not in config


def _imports(path: Path) -> set[str]:
    """The recbole_mdcns modules a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recbole_mdcns"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("recbole_mdcns")}
    return found


def test_the_package_has_no_import_cycle():
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}
    modules = {name.removesuffix(".__init__"): path for name, path in modules.items()}
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()
             if not name.endswith("__init__") and path.name != "__init__.py"}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cycles = [name for name in graph if reaches(name, name, set())]
    assert not cycles, cycles


@pytest.fixture
def my_sampler():
    """A sampler written in a user's module, registered as `Reversed`; unregistered after."""

    @register("Reversed")
    class ReversedSampler(NegativeSampler):
        """The K items just below the target's id (wrapping around): a deterministic toy."""

        params = (Param("reversed_offset", int, 3, "how far below the target", minimum=1),)

        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            self.offset: int = config["reversed_offset"]

        def sample(self, batch: EncodedBatch) -> Tensor:
            steps = self.offset + Tensor(range(self.neg_num)).long().to(batch.pos_items.device)
            return (batch.pos_items.unsqueeze(1) - 1 - steps) % self.n_items + 1

    yield ReversedSampler
    del SAMPLERS["reversed"]


def test_a_sampler_registered_outside_the_package_trains_with_its_defaults(tiny_config, my_sampler, monkeypatch):
    config = Config("SASRec", config_dict={**tiny_config, "sampler": "reversed"})
    assert (config["sampler"], config["reversed_offset"], config["neg_num"]) == ("Reversed", 3, 1)
    drawn = []
    monkeypatch.setattr(my_sampler, "sample", lambda self, batch, f=my_sampler.sample: drawn.append(f(self, batch))
                        or drawn[-1])
    result = run_recbole_mdcns(model="SASRec", config_dict={**tiny_config, "sampler": "Reversed", "neg_num": 2})
    assert set(result["test_result"]) == {"recall@10", "ndcg@10"}
    assert drawn and all(d.shape[1] == 2 for d in drawn)  # the run trained on this sampler's negatives


def test_a_typo_in_a_registered_samplers_key_is_reported(tiny_config, my_sampler):
    with pytest.raises(ConfigError, match="reversed_ofset is not a recbole-mdcns key \\(did you mean reversed_offset\\?\\)"):
        Config("SASRec", config_dict={**tiny_config, "sampler": "Reversed", "reversed_ofset": 2})
    with pytest.raises(ConfigError, match="reversed_offset = 0: must be an integer >= 1"):
        Config("SASRec", config_dict={**tiny_config, "sampler": "Reversed", "reversed_offset": 0})


def test_build_gives_unset_keys_the_samplers_defaults(tiny_config, data_root):
    from recbole_mdcns import build_experiment

    run = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": "none"}))
    divns = SAMPLERS["divns"].build(run.config, run.train_data._dataset, divns_lambda=0.5)
    assert (divns.mix, divns.cache_size, divns.candidate_num) == (0.5, 256, 10)  # tiny_config's C = 10 is the user's
    with pytest.raises(ConfigError, match="divns_lambda = 2: must be a number >= 0 and <= 1"):
        SAMPLERS["divns"].build(run.config, run.train_data._dataset, divns_lambda=2)


def notes_of(tiny_config, **keys) -> list[str]:
    from recbole_mdcns.config import startup_notes

    return startup_notes(Config("SASRec", config_dict={**tiny_config, **keys}))


def test_start_up_notes_say_what_the_user_might_not_expect(tiny_config):
    default = notes_of(tiny_config)
    assert any("sampler = MDCNS (the default): it trains a second model, the peer GRU4Rec" in n for n in default)
    assert any("loss_type = CE is not used" in n and "neg_loss = BPR" in n for n in default)
    assert not any("the default" in n for n in notes_of(tiny_config, sampler="MDCNS"))
    assert any("neg_candidate_num = 10 is not used by uniform (only by DNS, DivNS, MDCNS" in n
               for n in notes_of(tiny_config, sampler="uniform"))
    assert not any("neg_candidate_num" in n for n in notes_of(tiny_config, sampler="DNS"))
    # a key of another sampler is named with the samplers that read it; shared keys never are
    other = notes_of(tiny_config, sampler="DNS", dns_top_m=2, genni_alpha=2.0, neg_num=2)
    assert any("genni_alpha = 2.0 is not used by DNS (only by GenNi)" in n for n in other)
    assert not any(n.startswith(("dns_top_m", "neg_num")) for n in other)
    assert notes_of(tiny_config, sampler="none") == []
    gbce = dict(sampler="uniform", neg_loss="gBCE", neg_num=4)
    assert any("neg_loss = gBCE with neg_shared = true" in n for n in notes_of(tiny_config, neg_shared=True, **gbce))
    assert not any("neg_shared" in n for n in notes_of(tiny_config, **gbce))
    assert not any("neg_shared" in n for n in notes_of(tiny_config, sampler="uniform", neg_num=4, neg_shared=True))
    # DNS shares its candidates, not its negatives: every row still has its own K
    assert not any("neg_shared" in n for n in notes_of(tiny_config, **{**gbce, "sampler": "DNS"}, dns_top_m=4, neg_shared=True))


def test_build_reports_a_key_its_sampler_does_not_declare(tiny_config):
    from recbole_mdcns import build_experiment

    run = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": "none"}))
    with pytest.raises(ConfigError, match="dns_topm is not a key of DNS \\(did you mean dns_top_m\\?\\)"):
        SAMPLERS["dns"].build(run.config, run.train_data._dataset, dns_topm=5)


def test_build_trainer_takes_the_configs_sampler_unless_told(tiny_config):
    from recbole_mdcns import build_experiment, build_trainer

    run = build_experiment(Config("SASRec", config_dict={**tiny_config, "sampler": "DNS", "dns_top_m": 2}))
    trainer = build_trainer(run.config, run.model, run.train_data._dataset)
    assert type(trainer.sampler).__name__ == "DNSSampler" and trainer.sampler.top_m == 2
    trainer = build_trainer(run.config, run.model, run.train_data._dataset, sampler="uniform")
    assert type(trainer.sampler).__name__ == "UniformSampler"


def test_the_run_summary_names_what_trains(tiny_config):
    from recbole_mdcns.config import run_summary

    config = Config("SASRec", config_dict={**tiny_config, "sampler": "GenNi", "neg_num": 4, "neg_loss": "SSM"})
    assert run_summary(config, ["SASRec"]) == ("trains SASRec with sampler GenNi: 4 negatives per row, neg_loss SSM; "
                                               "train_layout prefix; device cpu")
    none = Config("SASRec", config_dict={**tiny_config, "sampler": "none", "train_layout": "sequence"})
    assert run_summary(none, ["SASRec"]) == ("trains SASRec with RecBole's own training (loss_type CE); "
                                             "train_layout sequence; device cpu")
