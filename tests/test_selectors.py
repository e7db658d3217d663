"""Selectors of the k modules to skip: planted redundancy is found, padding does not matter, k is checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eas.method import selectors
from eas.method.bandit import BanditConfig, BanditSearch
from eas.method.skip import SkipError, SkipSet
from eas.models import arch
from eas.models.mini_llava import Batch, MiniLlava, tiny_language_model

LAYERS = 6


def tiny_llava(tokenizer) -> MiniLlava:
    torch.manual_seed(0)
    return MiniLlava(tiny_language_model(seed=0, layers=LAYERS, hidden=64), tokenizer).eval()


def make_batch(seed=0, lens=(5, 9, 7)) -> Batch:
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(100, 5000, (n,), generator=g) for n in lens]
    W = max(lens)
    ids = torch.full((len(rows), W), 2)
    attn = torch.zeros(len(rows), W, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, W - len(row):], attn[b, W - len(row):] = row, 1
    return Batch(ids, attn, attn.bool())


def unpadded(batch: Batch, i: int) -> Batch:
    real = batch.attention_mask[i].bool()
    return Batch(batch.input_ids[i, real][None], batch.attention_mask[i, real][None], batch.prompt_mask[i, real][None])


@torch.no_grad()
def plant(model, o_proj=(), down_proj=()):
    layers = arch.decoder_layers(model)
    for i in o_proj:
        arch.layer_parts(layers[i]).out.weight.zero_()
    for i in down_proj:
        arch.layer_parts(layers[i]).down.weight.zero_()


def test_attention_drop_finds_a_dead_attention(tokenizer):
    model = tiny_llava(tokenizer)
    plant(model, o_proj=[3])
    sel = selectors.attention_drop(model, make_batch(), k=2)
    assert sel.scores[3] == pytest.approx(1.0, abs=1e-12)  # Attn output exactly 0: cos(x, x) = 1
    assert max(s for i, s in enumerate(sel.scores) if i != 3) < 1.0
    assert sel.ranking[0] == 3 and 3 in sel.chosen and len(sel.chosen) == 2
    assert sel.skip_set() == SkipSet(mha=sel.chosen) and sel.kind == "mha" and sel.name == "attention_drop"


def test_attention_drop_ffn_kind(tokenizer):
    model = tiny_llava(tokenizer)
    plant(model, down_proj=[4])
    sel = selectors.attention_drop(model, make_batch(), kind="ffn", k=1)
    assert sel.chosen == (4,) and sel.skip_set() == SkipSet(ffn=(4,))


def test_block_influence_finds_a_dead_block(tokenizer):
    model = tiny_llava(tokenizer)
    plant(model, o_proj=[1, 4], down_proj=[1])  # layer 1 is the identity; layer 4 only lacks attention
    sel = selectors.block_influence(model, make_batch(), k=1)
    assert sel.scores[1] == pytest.approx(0.0, abs=1e-12)
    assert sel.ranking[0] == 1 and sel.chosen == (1,) and sel.skip_set() == SkipSet(layer=(1,))
    assert all(s > 0 for i, s in enumerate(sel.scores) if i != 1)


def test_padding_does_not_change_scores(tokenizer):
    model = tiny_llava(tokenizer)
    batch = make_batch()
    singles = [unpadded(batch, i) for i in range(len(batch))]
    for fn in (selectors.attention_drop, selectors.block_influence):
        together = np.array(fn(model, batch).scores)
        apart = np.array(fn(model, singles).scores)  # token-weighted over the three 1-row batches
        np.testing.assert_allclose(together, apart, atol=1e-6)


def test_skipped_modules_score_nan_and_rank_last(tokenizer):
    from eas.method.skip import apply_skips

    model = tiny_llava(tokenizer)
    apply_skips(model, SkipSet(mha=(0,)))
    sel = selectors.attention_drop(model, make_batch(), k=2)
    assert np.isnan(sel.scores[0]) and sel.ranking[-1] == 0 and 0 not in sel.chosen


def test_random_and_last_k():
    r = selectors.random_k(10, 3, seed=1)
    assert r == selectors.random_k(10, 3, seed=1) and len(r.chosen) == 3 and len(set(r.chosen)) == 3
    last = selectors.last_k(10, 3)
    assert last.chosen == (7, 8, 9) and last.ranking[:3] == (9, 8, 7)
    assert selectors.last_k(4, 4, kind="ffn").chosen == (0, 1, 2, 3)  # FFNs can all go; attention cannot
    assert selectors.random_k(6, 2, kind="layer").skip_set().layer == selectors.random_k(6, 2, kind="layer").chosen


@pytest.mark.parametrize("make, match", [
    (lambda: selectors.last_k(4, 4), "cannot skip k=4 mha"),
    (lambda: selectors.random_k(4, 0), "k must be a positive integer"),
    (lambda: selectors.random_k(4, 5, kind="layer"), "cannot skip k=5 layer"),
    (lambda: selectors.last_k(0, 1), "n .* positive integer"),
    (lambda: selectors.random_k(4, 1, kind="head"), "unknown module kind 'head'"),
])
def test_k_bounds(make, match):
    with pytest.raises(SkipError, match=match):
        make()


def test_attention_drop_rejects_layer_kind_and_bad_k(tokenizer):
    model = tiny_llava(tokenizer)
    with pytest.raises(SkipError, match="'mha' or 'ffn'"):
        selectors.attention_drop(model, make_batch(), kind="layer")
    with pytest.raises(SkipError, match=f"k={LAYERS}"):
        selectors.block_influence(model, make_batch(), k=LAYERS)


def test_bandit_selector_wraps_the_search():
    search = BanditSearch(BanditConfig(k=2, kind="layer"), n_layers=5)
    search.s = np.array([0.3, -1.0, 0.2, -0.5, 0.9])
    sel = selectors.bandit(search)
    assert list(sel.chosen) == search.chosen() == [1, 3]
    assert sel.ranking == (1, 3, 2, 0, 4) and sel.skip_set() == SkipSet(layer=(1, 3)) and sel.name == "bandit"


def test_works_on_a_plain_causal_lm():
    from eas.models.causal_lm import CausalLMTarget

    target = CausalLMTarget(tiny_language_model(seed=0, layers=4, hidden=64))
    plant(target.model, o_proj=[2])
    sel = selectors.attention_drop(target, [make_batch(), make_batch(seed=1, lens=(4, 6))], k=1)
    assert sel.chosen == (2,) and len(sel.scores) == 4


# ----------------------------------------------------------------------------- greedy removal

def qa_examples(n=5):
    from eas.data import Example

    return [Example(str(i), f"Question {i}: what is {i} plus {i}?" + " please" * i, f"It is {2 * i}.",
                    str(2 * i), None) for i in range(n)]


def heldout_loss(model, skips, examples, batch_size=2):
    from eas.method import probe
    from eas.method.skip import apply_skips

    before = apply_skips(model, skips)
    try:
        return probe.teacher_forced_scores(model, probe.probe_batches(model, examples, batch_size, False))["loss"]
    finally:
        apply_skips(model, SkipSet())
        del before


@pytest.mark.parametrize("kind", ["mha", "ffn", "layer", "mha_or_ffn"])
def test_greedy_each_round_is_the_brute_force_best(tiny_mini_llava, kind):
    from eas.method.bandit import candidate_skip_set, num_candidates

    m, exs, n = tiny_mini_llava, qa_examples(), 4
    k = 3
    sel = selectors.greedy(m, exs, kind=kind, k=k, batch_size=2, progress=False)
    assert sel.name == "greedy" and len(sel.chosen) == k == len(set(sel.chosen)) and len(sel.trace) == k
    assert all(0 <= c < num_candidates(kind, n) for c in sel.chosen)
    assert sel.ranking[:k] == tuple(t["removed"] for t in sel.trace)
    removed = []
    for t in sel.trace:  # every round, by full forwards of every allowed candidate
        full = {}
        for c in range(num_candidates(kind, n)):
            if c in removed:
                continue
            try:
                skips = candidate_skip_set([*removed, c], kind, n)
            except SkipError:
                continue
            full[c] = heldout_loss(m, skips, exs)
        assert t["candidates"] == sorted(full)
        np.testing.assert_allclose(t["losses"], [full[c] for c in sorted(full)], rtol=1e-5, atol=1e-6)
        assert t["removed"] == min(full, key=lambda c: (full[c], c))
        removed.append(t["removed"])
    assert heldout_loss(m, sel.skip_set(), exs) == pytest.approx(sel.trace[-1]["loss"], rel=1e-5)


def test_greedy_first_pick_is_the_probe_best_and_beats_single_removal_top2(tiny_mini_llava):
    from eas.method import probe

    m, exs = tiny_mini_llava, qa_examples()
    frame = probe.removal_probe(m, exs, kinds=("mha",), batch_size=2, progress=False)
    single = frame[frame.kind == "mha"].sort_values(["loss", "layer"], kind="stable")
    sel = selectors.greedy(m, exs, kind="mha", k=2, batch_size=2, progress=False)
    assert sel.trace[0]["removed"] == int(single.layer.iloc[0])
    assert sel.trace[0]["loss_before"] == pytest.approx(float(frame.loss.iloc[0]), rel=1e-6)
    # round 2 minimises over a set that includes the second-best single removal: never worse for k=2
    top2 = SkipSet(mha=tuple(int(i) for i in single.layer.iloc[:2]))
    assert heldout_loss(m, sel.skip_set(), exs) <= heldout_loss(m, top2, exs) + 1e-6


def test_greedy_is_deterministic_and_restores_skips(tiny_mini_llava):
    from eas.method.skip import apply_skips, current_skips

    m, exs = tiny_mini_llava, qa_examples()
    apply_skips(m, SkipSet(ffn=(1,)))
    a = selectors.greedy(m, exs, k=2, batch_size=2, progress=False)
    assert current_skips(m) == SkipSet(ffn=(1,))
    b = selectors.greedy(m, exs, k=2, batch_size=3, progress=False)  # other batching, same answer
    assert a.chosen == b.chosen and a.ranking == b.ranking
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    assert a.to_dict()["trace"][0]["removed"] == a.ranking[0]


def test_greedy_never_picks_worse_than_a_planted_dead_attention(tiny_mini_llava):
    m = tiny_mini_llava
    plant(m, o_proj=[2])  # removing it changes nothing (a random model may even gain from other removals)
    sel = selectors.greedy(m, qa_examples(), k=1, batch_size=2, progress=False)
    first = sel.trace[0]
    assert first["losses"][first["candidates"].index(2)] == pytest.approx(first["loss_before"], abs=1e-6)
    assert first["loss"] <= first["loss_before"] + 1e-6 and sel.scores[2] == pytest.approx(first["loss_before"])


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 4}, "cannot skip k=4 mha"),  # 4 layers: one attention must stay
    ({"k": 0}, "k must be a positive integer"),
    ({"k": None}, "needs k"),
    ({"k": 1, "kind": "head"}, "unknown candidate kind 'head'"),
])
def test_greedy_errors(tiny_mini_llava, kwargs, match):
    with pytest.raises(SkipError, match=match):
        selectors.greedy(tiny_mini_llava, qa_examples(2), progress=False, **kwargs)


def test_greedy_needs_examples(tiny_mini_llava):
    with pytest.raises(ValueError, match="at least one example"):
        selectors.greedy(tiny_mini_llava, [], k=1, progress=False)
