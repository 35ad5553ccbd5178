"""Mutation check: would the test suite notice a wrong method?

Each entry of MUTATIONS breaks one rule of a sampler with a small, exact text
replacement in one file of the package. For every mutation selected, this script

1. copies the working tree (without .git, .venv, caches, RecBole's log/ and saved/
   folders and benchmark data) into a temporary folder,
2. replaces `old` by `new` in the mutation's file there (`old` must occur exactly once,
   in the real file as well: the whole run stops at once otherwise, so a list gone stale
   after a refactor is noticed),
3. checks that a Python started with the copy first on PYTHONPATH imports the copy's
   `recbole_mdcns` (not the editable install of the working tree) and the mutated module,
4. runs pytest on the mutation's named tests (files or node ids) inside the copy,

and prints a table: mutation, caught (yes / NO / error), the tests that failed. Before
the mutations, the union of their tests runs once on an unmutated copy: a test that fails
there would catch every mutation for the wrong reason, so the script stops.

Exit status: 0 when every selected mutation was caught, 1 when one survived or its run
went wrong (pytest exit other than 0 or 1, e.g. a named test that does not exist),
2 for a stale list or a failed baseline.

    python tests/mutate.py                 # every mutation
    python tests/mutate.py --list          # names, files and tests
    python tests/mutate.py NAME [NAME...]  # a subset
    python tests/mutate.py --full NAME     # run the whole suite on the mutant, to see every test that catches it
    python tests/mutate.py --keep NAME     # keep the temporary copies (their paths are printed)

Adding a mutation is one entry below: a name, the file (relative to the repository
root), the exact old text, the new text and the tests expected to catch it. Pick `old`
long enough to be unique and run `--list` (it checks every entry) after editing.
The file is not collected by pytest (its name does not start with test_).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # exact text, occurring once in the file
    new: str
    tests: tuple[str, ...]  # files or node ids, relative to the repository root
    why: str = ""


MUTATIONS: list[Mutation] = [
    Mutation(
        "uniform_ignores_exclusion", "recbole_mdcns/samplers/uniform.py",
        "return self.exclusion.draw(batch, self.neg_num)",
        "return batch.seq_emb.new_empty(batch.size, self.neg_num).uniform_(0, self.n_items).long() + 1",
        ("tests/test_samplers.py::test_negatives_never_hit_target_or_prefix",
         "tests/test_layout.py::test_user_exclusion_skips_the_users_later_items_too"),
        "uniform over all N items: the target and the prefix may be drawn",
    ),
    Mutation(
        "exclusion_misses_target", "recbole_mdcns/samplers/exclusion.py",
        "first <= batch.target_index[rows].unsqueeze(1)",
        "first < batch.target_index[rows].unsqueeze(1)",
        ("tests/test_samplers.py::test_negatives_never_hit_target_or_prefix",),
        "exclude: history leaves the row's own target drawable (every sampler's pool)",
    ),
    Mutation(
        "exclusion_window_only", "recbole_mdcns/samplers/exclusion.py",
        "first <= batch.target_index[rows].unsqueeze(1)",
        "(first <= batch.target_index[rows].unsqueeze(1)) & (first >= batch.target_index[rows].unsqueeze(1) - 3)",
        ("tests/test_layout.py::test_no_negative_is_an_item_the_user_had_before_the_target",),
        "exclude: history only excludes the last 3 items (the test's window), as RecBole's truncated item_seq did",
    ),
    Mutation(
        "exclusion_target_mode_excludes_all_the_prefix", "recbole_mdcns/samplers/exclusion.py",
        '            if self.mode == "window":\n',
        '            if self.mode in ("window", "target"):\n',
        ("tests/test_layout.py::test_target_exclusion_skips_only_the_target",),
        "exclude: target also excludes the row's earlier items, unlike full-softmax CE",
    ),
    Mutation(
        "exclusion_user_mode_as_history", "recbole_mdcns/samplers/exclusion.py",
        "return RowExclusions(items, items < self.pad, self.n_items)",
        "return RowExclusions(items, self.history.first.index_select(0, users) <= batch.target_index[rows].unsqueeze(1), self.n_items)",
        ("tests/test_layout.py::test_user_exclusion_skips_the_users_later_items_too",),
        "exclude: user leaves the user's later training items drawable",
    ),
    Mutation(
        "uniform_skewed", "recbole_mdcns/samplers/exclusion.py",
        "rank = (torch.rand(items.shape[0], num, device=items.device) * free).int()",
        "rank = (torch.rand(items.shape[0], num, device=items.device) ** 1.2 * free).int()",
        ("tests/test_samplers.py::test_draw_from_sorted_complement_is_uniform_over_the_free_items",
         "tests/test_samplers.py::test_uniform_negatives_are_uniform"),
        "the free items are drawn with a mild bias towards low ids",
    ),
    Mutation(
        "window_exclusion_counts_repeats_twice", "recbole_mdcns/samplers/exclusion.py",
        "        excluded[:, 1:] &= items[:, 1:] != items[:, :-1]  # a repeat is marked once\n", "",
        ("tests/test_samplers.py::test_exclusions_of_ids_with_repeats_and_padding_draw_uniformly_over_the_rest",),
        "an item the row holds twice is counted twice: the draw skips a free item and can land on an excluded one",
    ),
    Mutation(
        "divns_mixes_an_excluded_diverse_id", "recbole_mdcns/samplers/divns.py",
        "has_diverse = (diverse > 0) & ~self.exclusion.contains(batch, diverse.unsqueeze(1)).squeeze(1)",
        "has_diverse = diverse > 0",
        ("tests/test_layout.py::test_divns_never_mixes_in_an_item_the_row_excludes",),
        "DivNS mixes in a queued diverse id that its row excludes (an item the user had since)",
    ),
    Mutation(
        "ssm_log_q_added", "recbole_mdcns/losses.py",
        "neg_logits = neg_logits - (neg_log_q + math.log", "neg_logits = neg_logits + (neg_log_q + math.log",
        ("tests/test_losses.py::test_sampled_softmax_matches_its_formula_with_temperature_and_log_q",),
        "SSM adds log Q instead of subtracting it",
    ),
    Mutation(
        "mdcns_views_agree_across_rows", "recbole_mdcns/samplers/mdcns.py",
        "candidates.gather(1, chosen) + offset", "candidates.gather(1, chosen)",
        ("tests/test_mdcns.py::test_views_agree_counts_self_picks_every_view_made_in_any_slot",),
        "MDCNS's views_agree counts an item another view picked in another row",
    ),
    Mutation(
        "ssm_log_q_without_k", "recbole_mdcns/losses.py",
        "neg_logits - (neg_log_q + math.log(neg_score.size(1)))", "neg_logits - neg_log_q",
        ("tests/test_losses.py::test_sampled_softmax_over_every_other_item_is_full_cross_entropy",),
        "SSM corrects by log Q, not log(K Q): a margin of log K against the negatives",
    ),
    Mutation(
        "gbce_beta_ignored", "recbole_mdcns/losses.py",
        "return -(beta * F.logsigmoid(pos_score)", "return -(F.logsigmoid(pos_score)",
        ("tests/test_losses.py::test_gbce_matches_gsasrec",),
        "gBCE without its calibration: plain BCE with summed negatives",
    ),
    Mutation(
        "uniform_log_q_ignores_exclusion", "recbole_mdcns/samplers/uniform.py",
        "log_q = -torch.log(self.exclusion.free(batch).float()).unsqueeze(1)",
        "log_q = -torch.log(torch.full_like(self.exclusion.free(batch).float(), self.n_items)).unsqueeze(1)",
        ("tests/test_losses.py::test_the_reported_proposal_is_the_distribution_of_the_draws",),
        "uniform's Q is 1/N instead of 1 over the row's free items",
    ),
    Mutation(
        "shared_membership_ignores_the_mask", "recbole_mdcns/samplers/exclusion.py",
        "hit = (ascending[pos] == self.items) & self.excluded", "hit = ascending[pos] == self.items",
        ("tests/test_samplers.py::test_shared_membership_counts_only_the_marked_items",),
        "a shared id is excluded for a row when it is among its user's items, even those after the row's target",
    ),
    Mutation(
        "genni_log_q_without_normaliser", "recbole_mdcns/samplers/genni.py",
        "log_q = self.alpha * batch.score_detached(draws) - log_norm.unsqueeze(1)",
        "log_q = self.alpha * batch.score_detached(draws)",
        ("tests/test_losses.py::test_the_reported_proposal_is_the_distribution_of_the_draws",),
        "GenNi's Q is its unnormalised score",
    ),
    Mutation(
        "shared_negatives_unmasked", "recbole_mdcns/samplers/base.py",
        "valid = ~self.exclusion.contains_shared(batch, negatives)", "valid = None",
        ("tests/test_losses.py::test_shared_negatives_are_scored_by_every_row_and_masked_where_excluded",),
        "a shared negative that is a row's own target or prefix item counts as its negative",
    ),
    Mutation(
        "layout_target_index_off_by_one", "recbole_mdcns/layout.py",
        "start[row] + column + 1)", "start[row] + column)",
        ("tests/test_layout.py::test_training_positions_are_each_users_longest_prefix",),
        "a position's target index is its input item's: the exclusion misses the target",
    ),
    Mutation(
        "layout_target_is_the_input", "recbole_mdcns/layout.py",
        "next_items[row, column], ", "seq[row, column], ",
        ("tests/test_layout.py::test_training_positions_are_each_users_longest_prefix",
         "tests/test_layout.py::test_sampler_none_trains_recboles_ce_at_every_position"),
        "each position is trained to predict the item it has just read",
    ),
    Mutation(
        "popularity_ignores_alpha", "recbole_mdcns/samplers/popularity.py",
        'weights = counts.double().pow(config["popularity_alpha"])',
        "weights = counts.double()",
        ("tests/test_samplers.py::test_popularity_follows_count_to_the_alpha",),
        "probabilities proportional to count, whatever popularity_alpha says",
    ),
    Mutation(
        "popularity_no_uniform_fallback", "recbole_mdcns/samplers/popularity.py",
        "        return torch.where(bad, self.exclusion.draw(batch, k), draws)\n",
        "        return draws\n",
        ("tests/test_samplers.py::test_popularity_rows_whose_free_items_have_no_mass_fall_back_to_uniform",),
        "rows whose free items carry no popularity mass keep an excluded draw",
    ),
    Mutation(
        "dns_bottom_m", "recbole_mdcns/samplers/dns.py",
        "top = scores.topk(top_m, dim=1).indices",
        "top = scores.topk(top_m, dim=1, largest=False).indices",
        ("tests/test_samplers.py::test_dns_picks_higher_scored_negatives_than_uniform",
         "tests/test_samplers.py::test_draw_top_m_draws_uniformly_among_the_top_m",
         "tests/test_training.py::test_hardness_is_logged_per_epoch"),
        "the lowest-scored M candidates instead of the highest",
    ),
    Mutation(
        "shared_dns_ignores_exclusion", "recbole_mdcns/samplers/dns.py",
        "scores = batch.score_shared(candidates).masked_fill(excluded, -math.inf)",
        "scores = batch.score_shared(candidates)",
        ("tests/test_samplers.py::test_shared_dns_takes_each_rows_top_m_of_one_pool_among_the_ids_it_may_draw",),
        "under neg_shared a row may take a candidate it excludes (its target, an item it had)",
    ),
    Mutation(
        "shared_dns_pool_with_repeats", "recbole_mdcns/samplers/base.py",
        "ids = torch.randperm(self.n_items, device=self.device)[: self.candidate_num] + 1",
        "ids = torch.randint(1, self.n_items + 1, (self.candidate_num,), device=self.device)",
        ("tests/test_samplers.py::test_shared_dns_takes_each_rows_top_m_of_one_pool_among_the_ids_it_may_draw",),
        "the shared pool drawn with replacement: a row could take one item twice, and fewer than M free",
    ),
    Mutation(
        "shared_dns_short_rows_keep_excluded", "recbole_mdcns/samplers/dns.py",
        "if short.any() else chosen",
        "if False else chosen",
        ("tests/test_samplers.py::test_shared_dns_rows_left_with_fewer_than_m_candidates_fill_up_with_free_ids",),
        "a row left with fewer than M free candidates takes excluded ones",
    ),
    Mutation(
        "mixed_uncorrected", "recbole_mdcns/losses.py",
        "(score / temperature - log_count).masked_fill",
        "(score / temperature).masked_fill",
        ("tests/test_losses.py::test_mixed_negatives_join_the_softmax_corrected_by_their_expected_count",),
        "mixed negatives without their log(S / N): the shared sum no longer estimates the catalogue's",
    ),
    Mutation(
        "mixed_ignores_temperature", "recbole_mdcns/losses.py",
        "(score / temperature - log_count).masked_fill",
        "(score - log_count).masked_fill",
        ("tests/test_losses.py::test_mixed_negatives_join_the_softmax_corrected_by_their_expected_count",),
        "the mixed negatives' scores are not divided by the temperature",
    ),
    Mutation(
        "mixed_ids_include_padding", "recbole_mdcns/samplers/base.py",
        "torch.randint(1, n_items + 1, (num,), device=device)",
        "torch.randint(0, n_items, (num,), device=device)",
        ("tests/test_losses.py::test_uniform_ids_cover_every_item_and_never_the_padding",),
        "uniform ids drawn over 0..N-1: the padding id, never the last item",
    ),
    Mutation(
        "mixed_ignores_exclusion", "recbole_mdcns/samplers/base.py",
        "mixed_log_mass(encoded.score_shared(ids), log_count, valid, temperature)",
        "mixed_log_mass(encoded.score_shared(ids), log_count, torch.ones_like(valid), temperature)",
        ("tests/test_losses.py::test_mixed_negatives_are_one_uniform_draw_for_the_batch_scored_by_each_model",),
        "a row's target and earlier items count among its mixed negatives",
    ),
    Mutation(
        "mdcns_self_mixed_scored_by_peer", "recbole_mdcns/samplers/mdcns.py",
        'w.gamma * rank(p_self, s_self, "teacher", m_self)',
        'w.gamma * rank(p_self, s_self, "teacher", m_peer)',
        ("tests/test_mdcns.py::test_each_model_ranks_every_view_against_its_own_scores_of_the_mixed_negatives",),
        "self's teacher view holds the peer's scores of the mixed negatives",
    ),
    Mutation(
        "mixed_dropped", "recbole_mdcns/samplers/base.py",
        "neg_score, log_q, valid, mixed)",
        "neg_score, log_q, valid)",
        ("tests/test_losses.py::test_uniform_with_mixed_negatives_adds_them_to_its_own",),
        "a sampler's default loss leaves out the mixed negatives",
    ),
    Mutation(
        "mdcns_mixed_scored_by_the_wrong_models", "recbole_mdcns/samplers/mdcns.py",
        "self.mixed_log_masses(batch, peer_batch)",
        "self.mixed_log_masses(peer_batch, batch)",
        ("tests/test_mdcns.py::test_mixed_negatives_are_drawn_once_and_scored_by_self_then_the_peer",),
        "each model's views hold the other model's scores of the mixed negatives",
    ),
    Mutation(
        "genni_ignores_alpha", "recbole_mdcns/samplers/genni.py",
        "query = self.alpha * batch.seq_emb",
        "query = batch.seq_emb",
        ("tests/test_genni.py::test_frequencies_match_the_masked_softmax",
         "tests/test_genni.py::test_alpha_zero_is_uniform_and_large_alpha_is_the_top_item"),
        "softmax(z) instead of softmax(alpha * z)",
    ),
    Mutation(
        "divns_lambda_swapped", "recbole_mdcns/samplers/divns.py",
        "mixed = self.mix * negative + (1 - self.mix) * batch.item_rows(diverse)",
        "mixed = (1 - self.mix) * negative + self.mix * batch.item_rows(diverse)",
        ("tests/test_divns.py::test_second_epoch_mixes_hard_and_diverse_embeddings",),
        "lambda weighs the diverse item instead of the hard negative",
    ),
    Mutation(
        "divns_no_cache_cap", "recbole_mdcns/samplers/divns.py",
        "keep = occurrence_index(users) < self.cache_size",
        "keep = occurrence_index(users) >= 0",
        ("tests/test_divns.py::test_the_cache_cap_keeps_each_users_best_scored_distinct_ids",
         "tests/test_divns.py::test_with_a_small_cache_the_next_queue_holds_only_the_best_scored_runner_ups"),
        "every distinct cached id enters the k-DPP, whatever divns_cache_size says",
    ),
    Mutation(
        "divns_k_counts_users", "recbole_mdcns/samplers/divns.py",
        "k = torch.minimum(rows[group], cache_len[group])",
        "k = torch.minimum(rows[group].clamp(max=1), cache_len[group])",
        ("tests/test_layout.py::test_divns_queues_count_positions_not_users",),
        "k_u is one per user seen, not the user's rows (positions) of the epoch",
    ),
    Mutation(
        "divns_no_penalty", "recbole_mdcns/samplers/divns.py",
        "quality = 1 / (1 + self.penalty * mean_cos).clamp(min=1e-3)",
        "quality = torch.ones_like(mean_cos)",
        ("tests/test_divns.py::test_penalty_lowers_the_chance_of_items_like_the_hard_negatives",),
        "the kernel is not penalised against the epoch's hard negatives",
    ),
    # ----- MDCNS: the co-training rules (issue 18's list) -----
    Mutation(
        "mdcns_self_views_swapped", "recbole_mdcns/samplers/mdcns.py",
        'w.beta * rank(p_self, s_self, "peer", m_self)\n                     + w.gamma * rank(p_self, s_self, "teacher", m_self)',
        'w.beta * rank(p_self, s_self, "teacher", m_self)\n                     + w.gamma * rank(p_self, s_self, "peer", m_self)',
        ("tests/test_mdcns.py::test_each_model_is_ranked_on_every_view_with_its_weight",),
        "self's loss weighs the teacher's view by beta and the peer's by gamma",
    ),
    Mutation(
        "mdcns_peer_on_its_own_view", "recbole_mdcns/samplers/mdcns.py",
        'w.beta * rank(p_peer, s_peer, "self", m_peer)',
        'w.beta * rank(p_peer, s_peer, "peer", m_peer)',
        ("tests/test_mdcns.py::test_each_model_is_ranked_on_every_view_with_its_weight",),
        "the peer is trained on its own view instead of self's",
    ),
    Mutation(
        "mdcns_kd_with_positive_inverted", "recbole_mdcns/samplers/mdcns.py",
        "if w.kd_with_positive:",
        "if not w.kd_with_positive:",
        ("tests/test_mdcns.py::test_distillation_covers_the_positive_only_when_asked",),
        "distillation over [positive, candidates] when asked for the candidates alone, and back",
    ),
    Mutation(
        "mdcns_kd_reduction_ignored", "recbole_mdcns/samplers/mdcns.py",
        "consensus_distillation(z_self, z_peer, w.tau, w.kd_reduction)",
        "consensus_distillation(z_self, z_peer, w.tau)",
        ("tests/test_mdcns.py::test_distillation_covers_the_positive_only_when_asked",),
        "mdcns_kd_reduction: sum still averages the KL over the rows",
    ),
    Mutation(
        "mdcns_kd_sum_is_mean", "recbole_mdcns/samplers/mdcns.py",
        'reduction="sum" if reduction == "sum" else "batchmean"',
        'reduction="batchmean"',
        ("tests/test_mdcns.py::test_distillation_sums_over_rows_as_the_official_code_when_asked",),
        "the official batch sum of the KL computed as a mean",
    ),
    Mutation(
        "false_negatives_include_the_target", "recbole_mdcns/samplers/exclusion.py",
        "last.index_select(0, users[rows]) > target_index[rows]",
        "last.index_select(0, users[rows]) >= target_index[rows]",
        ("tests/test_false_negatives.py::test_a_hand_counted_case",),
        "the row's own target counted as a later item",
    ),
    Mutation(
        "false_negatives_by_first_visit", "recbole_mdcns/history.py",
        'table("amax", -1)',
        'table("amin", -1)',
        ("tests/test_false_negatives.py::test_a_hand_counted_case",),
        "an item the user had before and has again later is not counted as later",
    ),
    Mutation(
        "mdcns_kl_diagnostic_not_per_row", "recbole_mdcns/samplers/mdcns.py",
        'rows = batch.size if w.kd_reduction == "sum" else 1',
        'rows = 1',
        ("tests/test_mdcns.py::test_an_epoch_reports_the_three_loss_parts_and_the_diagnostics_behind_them",),
        "under mdcns_kd_reduction: sum the kl diagnostic is the batch's sum, not a row's KL",
    ),
    Mutation(
        "mdcns_peer_config_ignored", "recbole_mdcns/samplers/mdcns.py",
        "**(overrides or {}),",
        "",
        ("tests/test_mdcns.py::test_mdcns_peer_config_is_laid_over_everything",),
        "mdcns_peer_config (dict or yaml path) never reaches the peer",
    ),
    Mutation(
        "peer_config_self_defaults", "recbole_mdcns/samplers/mdcns.py",
        "self.external_config_dict = {**self._self_config.external_config_dict,",
        "self.external_config_dict = {**self._self_config.final_config_dict,",
        ("tests/test_mdcns.py::test_self_models_defaults_never_reach_the_peer",),
        "the peer starts from self's final config, so self's model defaults reach it",
    ),
    Mutation(
        "peer_gradients_not_all_reduced", "recbole_mdcns/trainer.py",
        "for part in trained.values() if part.wrapper is not None)",
        "for name, part in trained.items() if part.wrapper is not None and name == SELF)",
        ("tests/test_distributed.py::test_ranks_hold_identical_weights_of_self_and_peer_after_a_step",),
        "under DDP only self's gradients are all-reduced: the ranks' peers drift apart",
    ),
    Mutation(
        "peer_gradients_stay_scaled", "recbole_mdcns/trainer.py",
        "            scaler.step(part.optimizer)\n",
        "            scaler.step(part.optimizer) if part.model is self.model else part.optimizer.step()\n",
        ("tests/test_mdcns.py::test_the_grad_scaler_scales_and_unscales_both_models",),
        "the peer steps outside the scaler, on gradients that stay scaled (why MDCNS refused AMP before)",
    ),
    # ----- keys -----
    Mutation(
        "declared_defaults_ignored", "recbole_mdcns/config.py",
        "self.internal_config_dict.update(SAMPLERS[str(sampler).lower()].defaults())",
        "pass",
        ("tests/test_keys.py",),
        "a sampler's declared defaults never reach the Config",
    ),
    Mutation(
        "typo_check_off", "recbole_mdcns/config.py",
        "if not key.startswith(prefixes) or key in known",
        "if True or key in known",
        ("tests/test_keys.py::test_a_typo_in_a_registered_samplers_key_is_reported",),
        "a misspelt plugin key passes silently",
    ),
    Mutation(
        "recbole_keys_unchecked", "recbole_mdcns/config.py",
        "problems = validate_params(final, present) + _topk_problems(final.get(\"topk\"))",
        "problems = []",
        ("tests/test_cli.py::test_each_mistake_is_one_line_and_exit_2_with_nothing_written",),
        "RecBole's own keys reach RecBole and torch unchecked (--learning_rate=abc fails deep in Adam)",
    ),
    Mutation(
        "missing_dataset_unchecked", "recbole_mdcns/config.py",
        "if not os.path.exists(path):",
        "if False:",
        ("tests/test_cli.py::test_each_mistake_is_one_line_and_exit_2_with_nothing_written",),
        "a dataset that is nowhere gets RecBole's traceback",
    ),
    # ----- MixGCF, AHNS -----
    Mutation(
        "mixgcf_alpha_swapped", "recbole_mdcns/samplers/mixgcf.py",
        "return alpha * batch.item_rows(batch.pos_items).unsqueeze(1) + (1 - alpha) * batch.item_rows(chosen)",
        "return (1 - alpha) * batch.item_rows(batch.pos_items).unsqueeze(1) + alpha * batch.item_rows(chosen)",
        ("tests/test_baselines.py",),
        "MixGCF weighs the target by 1 - alpha and the candidate by alpha",
    ),
    Mutation(
        "mixgcf_mixes_uniform_candidates", "recbole_mdcns/samplers/mixgcf.py",
        "chosen = self.sample(batch)",
        "chosen = self.candidate_pool(batch, self.neg_num)",
        ("tests/test_baselines.py",),
        "MixGCF mixes uniform candidates instead of DNS's choice",
    ),
    Mutation(
        "ahns_exponent_p", "recbole_mdcns/samplers/ahns.py",
        "return self.beta * (pos_score + self.alpha) ** (self.p + 1)",
        "return self.beta * (pos_score + self.alpha) ** self.p",
        ("tests/test_baselines.py",),
        "AHNS's target uses base^p instead of base^(p + 1)",
    ),
    Mutation(
        "ahns_farthest", "recbole_mdcns/samplers/ahns.py",
        "return distance.topk(num, dim=1, largest=False).indices",
        "return distance.topk(num, dim=1, largest=True).indices",
        ("tests/test_baselines.py",),
        "AHNS picks the candidates farthest from its target",
    ),
    # ----- SRNS, AdaSIR, GNNO, row keys -----
    Mutation(
        "srns_sd_without_alpha", "recbole_mdcns/samplers/srns.py",
        "(current[:, : self.memory_size] + self.alpha_t() * sd)",
        "(current[:, : self.memory_size] + sd)",
        ("tests/test_baselines.py",),
        "SRNS adds the history's sd without its weight alpha_t",
    ),
    Mutation(
        "srns_sd_of_the_whole_history", "recbole_mdcns/samplers/srns.py",
        "valid = torch.arange(width, device=history.device) >= (width - count.long()).unsqueeze(-1)",
        "valid = torch.ones_like(history, dtype=torch.bool)",
        ("tests/test_baselines.py",),
        "SRNS's sd counts the empty history slots as zeros",
    ),
    Mutation(
        "srns_history_not_shifted", "recbole_mdcns/samplers/srns.py",
        "kept_history = torch.cat([kept_history[..., 1:], current.gather(1, kept).unsqueeze(-1)], -1)",
        "kept_history = torch.cat([kept_history[..., :-1], current.gather(1, kept).unsqueeze(-1)], -1)",
        ("tests/test_baselines.py",),
        "SRNS overwrites the newest past value instead of dropping the oldest",
    ),
    Mutation(
        "adasir_resamples_uniformly", "recbole_mdcns/samplers/adasir.py",
        "weights = torch.softmax(batch.score_detached(proposals).float(), dim=1)",
        "weights = torch.softmax(0 * batch.score_detached(proposals).float(), dim=1)",
        ("tests/test_baselines.py",),
        "AdaSIR resamples its proposals ignoring the model's scores",
    ),
    Mutation(
        "adasir_draws_from_the_refreshed_pool", "recbole_mdcns/samplers/adasir.py",
        "negatives = pool.gather(1, slots)\n",
        "negatives = self.resample(batch)[0].gather(1, slots)\n",
        ("tests/test_baselines.py",),
        "AdaSIR draws from a fresh resample instead of the pool its last visit left",
    ),
    Mutation(
        "gnno_overlap_over_the_smaller_neighbourhood", "recbole_mdcns/samplers/gnno.py",
        "union = degree[common.row] + degree[common.col] - common.data",
        "union = np.minimum(degree[common.row], degree[common.col])",
        ("tests/test_baselines.py",),
        "GNNO's overlap divides by the smaller neighbourhood, not the union",
    ),
    Mutation(
        "gnno_ignores_the_hardness", "recbole_mdcns/samplers/gnno.py",
        "weight = eligible_weight(overlap, threshold, shift=threshold)",
        "weight = (overlap - threshold).exp().clamp(max=1)",
        ("tests/test_baselines.py",),
        "GNNO draws graph negatives above the epoch's hardness",
    ),
    Mutation(
        "gnno_dense_draw_ignores_the_hardness", "recbole_mdcns/samplers/gnno.py",
        "weights[:, :-1] = eligible_weight(overlap, threshold)",
        "weights[:, :-1] = overlap.exp()",
        ("tests/test_baselines.py",),
        "GNNO's dense fallback (rows with few eligible ids) draws above the epoch's hardness",
    ),
    Mutation(
        "gnno_dense_draw_keeps_the_excluded_ids", "recbole_mdcns/samplers/gnno.py",
        "        weights.scatter_(1, exclusions.ids()[chosen], 0)  # the pad N+1 stands for \"not excluded\"\n",
        "",
        ("tests/test_baselines.py",),
        "GNNO's dense fallback draws the row's history",
    ),
    Mutation(
        "srns_unbiased_sd", "recbole_mdcns/samplers/srns.py",
        "var = (((history - mean.unsqueeze(-1)) * valid) ** 2).sum(-1) / n",
        "var = (((history - mean.unsqueeze(-1)) * valid) ** 2).sum(-1) / (n - 1).clamp(min=1)",
        ("tests/test_baselines.py",),
        "SRNS's sd is the unbiased one (the port's), not the population sd",
    ),
    Mutation(
        "srns_no_warm_up", "recbole_mdcns/samplers/srns.py",
        "return self.alpha * (min(1.0, self.epoch / self.warmup) if self.warmup else 1.0)",
        "return self.alpha",
        ("tests/test_baselines.py",),
        "SRNS's alpha_t does not warm up",
    ),
    Mutation(
        "gnno_sparse_rows_shifted", "recbole_mdcns/samplers/gnno.py",
        "dense[where, self.keys[index] - rows[where] * self.n] = self.values[index]",
        "dense[where, (self.keys[index] - rows[where] * self.n + 1) % self.n] = self.values[index]",
        ("tests/test_baselines.py",),
        "GNNO's sparse overlap puts each row's entries one column off",
    ),
    Mutation(
        "gnno_accepts_every_eligible_id_alike", "recbole_mdcns/samplers/gnno.py",
        "weight = eligible_weight(overlap, threshold, shift=threshold)",
        "weight = (overlap <= threshold + TOLERANCE).float()",
        ("tests/test_baselines.py",),
        "GNNO's graph negatives are uniform over the eligible ids, not weighted by exp(J)",
    ),
    Mutation(
        "row_keys_by_user_only", "recbole_mdcns/samplers/rowstate.py",
        "return batch.users if self.start is None else self.start[batch.users] + batch.target_index",
        "return batch.users if self.start is None else self.start[batch.users]",
        ("tests/test_baselines.py",),
        "every row of a user shares one state slot",
    ),
    # ----- evaluation -----
    Mutation(
        "eval_mask_without_the_prefix", "recbole_mdcns/evaluation.py",
        "earlier = torch.cat([self.user_items[users], interaction[self.seq_field].to(scores.device)], dim=1)",
        "earlier = self.user_items[users]",
        ("tests/test_evaluation.py",),
        "a test row's validation item (the end of its prefix) stays ranked",
    ),
    Mutation(
        "eval_mask_always_keeps_the_target", "recbole_mdcns/evaluation.py",
        "        if self.keep_target:\n",
        "        if True:\n",
        ("tests/test_evaluation.py",),
        "a target the user had before is never masked (not the anchors' protocol)",
    ),
]

# what the copy leaves out: at the root, and by name anywhere below it
SKIP_AT_ROOT = {".git", ".venv", ".pytest_cache", "log", "log_tensorboard", "saved", "build", "dist"}
SKIP_ANYWHERE = {"__pycache__"}
SKIP_PATHS = {Path("benchmarks/data"), Path("benchmarks/results/unfinished")}


def copy_tree(destination: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).relative_to(ROOT)
        skipped = {n for n in names if n in SKIP_ANYWHERE or here / n in SKIP_PATHS}
        if here == Path("."):
            skipped |= {n for n in names if n in SKIP_AT_ROOT or n.endswith(".egg-info")}
        return skipped

    shutil.copytree(ROOT, destination, ignore=ignore, symlinks=True)


def check_current(mutations: list[Mutation]) -> list[str]:
    """Problems of entries whose old text is not in the real file exactly once."""
    problems = []
    for m in mutations:
        file = ROOT / m.path
        if not file.is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        count = file.read_text(encoding="utf-8").count(m.old)
        if count != 1:
            problems.append(f"{m.name}: the old text occurs {count} times in {m.path} (must be once): {m.old!r}")
    return problems


def apply(mutation: Mutation, copy: Path) -> None:
    file = copy / mutation.path
    text = file.read_text(encoding="utf-8")
    if text.count(mutation.old) != 1:  # checked on the real file already; the copy must agree
        raise SystemExit(f"{mutation.name}: the old text is not in the copy exactly once")
    file.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_the_copy(copy: Path, mutation: Mutation | None) -> None:
    """Fail unless a fresh Python imports the package (and the mutated module) from `copy`."""
    modules = ["recbole_mdcns"]
    if mutation is not None and mutation.path.endswith(".py"):
        modules.append(mutation.path.removesuffix(".py").replace("/", ".").removesuffix(".__init__"))
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    print(importlib.import_module(name).__file__)"
    out = subprocess.run([sys.executable, "-c", code, *modules], cwd=copy, env=environment(copy),
                         capture_output=True, text=True, timeout=300)
    files = out.stdout.split()
    if out.returncode != 0 or len(files) != len(modules) or not all(Path(f).resolve().is_relative_to(copy.resolve()) for f in files):
        raise SystemExit(f"the copy's package is not the one imported ({modules} -> {files or out.stderr[-2000:]})")
    if mutation is not None and mutation.new and mutation.new not in Path(files[-1]).read_text(encoding="utf-8"):
        raise SystemExit(f"{mutation.name}: the imported {files[-1]} does not hold the mutation")


def run_pytest(copy: Path, tests: list[str], timeout: int) -> tuple[int, list[str], str]:
    """pytest on `tests` inside `copy`: (exit status, failed or erroring node ids, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-W", "ignore", *tests]
    try:
        out = subprocess.run(cmd, cwd=copy, env=environment(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, [], f"timed out after {timeout} s"
    output = out.stdout + out.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)
    return out.returncode, sorted(set(failed)), output[-3000:]


def select(names: list[str]) -> list[Mutation]:
    by_name = {m.name: m for m in MUTATIONS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown mutation(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names] if names else list(MUTATIONS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and check that each still applies")
    parser.add_argument("--full", action="store_true", help="run the whole tests/ folder on each mutant")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on an unmutated copy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per pytest run")
    args = parser.parse_args(argv)

    if len({m.name for m in MUTATIONS}) != len(MUTATIONS):
        raise SystemExit("two mutations share a name")
    mutations = select(args.names)
    problems = check_current(mutations)
    if args.list:
        for m in mutations:
            print(f"{m.name}\n    {m.path}: {m.why}\n    tests: {' '.join(m.tests)}")
    if problems:
        print("stale mutation list:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.list:
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="mutate-"))
    try:
        if not args.no_baseline:
            tests = ["tests"] if args.full else sorted({t for m in mutations for t in m.tests})
            copy = workdir / "baseline"
            copy_tree(copy)
            check_imports_the_copy(copy, None)
            start = time.perf_counter()
            status, failed, tail = run_pytest(copy, tests, args.timeout)
            if status != 0:
                print(f"baseline: the tests fail without any mutation (pytest exit {status}):\n{tail}", file=sys.stderr)
                return 2
            print(f"baseline: {len(tests)} test targets pass unmutated ({time.perf_counter() - start:.0f} s)", flush=True)

        rows = []
        for m in mutations:
            copy = workdir / m.name
            copy_tree(copy)
            apply(m, copy)
            check_imports_the_copy(copy, m)
            start = time.perf_counter()
            status, failed, tail = run_pytest(copy, ["tests"] if args.full else list(m.tests), args.timeout)
            verdict = {0: "NO", 1: "yes"}.get(status, "error")
            if verdict == "error":
                print(f"{m.name}: pytest exit {status}\n{tail}", file=sys.stderr)
            rows.append((m.name, verdict, failed))
            print(f"{m.name}: caught {verdict} ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"copies kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    width = max(len("mutation"), *(len(name) for name, _, _ in rows))
    print(f"\n{'mutation':<{width}}  caught  by")
    for name, verdict, failed in rows:
        shown = ", ".join(f.removeprefix("tests/") for f in failed) or "-"
        print(f"{name:<{width}}  {verdict:<6}  {shown}")
    return 0 if all(verdict == "yes" for _, verdict, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
