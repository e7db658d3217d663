"""eas.method.bandit: candidates, the planted-redundancy search (with a negative control), resume, and train hooks."""

import json

import numpy as np
import pytest

from eas.method import skip
from eas.method.bandit import (
    BanditConfig,
    BanditSearch,
    candidate_skip_set,
    lowest_k,
    num_candidates,
    random_skip_sampler,
    run_search,
)
from eas.method.skip import SkipError, SkipSet

# ----------------------------------------------------------------------------- candidates

def test_candidates_map_to_skip_sets():
    assert num_candidates("mha", 6) == num_candidates("ffn", 6) == num_candidates("layer", 6) == 6
    assert num_candidates("mha_or_ffn", 6) == 12
    assert candidate_skip_set([4, 1], "mha", 6) == SkipSet(mha=(1, 4))
    assert candidate_skip_set([0, 5], "ffn", 6) == SkipSet(ffn=(0, 5))
    assert candidate_skip_set([2], "layer", 6) == SkipSet(layer=(2,))
    # mha_or_ffn: 0..n-1 are MHAs, n..2n-1 FFNs; both of one layer may go.
    assert candidate_skip_set([1, 7, 11], "mha_or_ffn", 6) == SkipSet(mha=(1,), ffn=(1, 5))
    # every FFN may go, not every attention
    assert candidate_skip_set(range(6), "ffn", 6) == SkipSet(ffn=tuple(range(6)))
    for kind, indices in [("mha", range(6)), ("layer", range(6)), ("mha_or_ffn", range(6))]:
        with pytest.raises(SkipError, match="every attention"):
            candidate_skip_set(indices, kind, 6)
    with pytest.raises(SkipError, match="out of range"):
        candidate_skip_set([6], "mha", 6)
    with pytest.raises(SkipError, match="duplicate"):
        candidate_skip_set([1, 1], "mha", 6)
    with pytest.raises(SkipError, match="unknown candidate kind"):
        candidate_skip_set([1], "attention", 6)


def test_lowest_k_keeps_one_attention():
    values = [0.0, 0.1, 0.2, 0.3, 0.9, 0.8]  # mha_or_ffn on 3 layers: MHAs rank lowest
    assert lowest_k(values, 3, "mha_or_ffn", 3) == [0, 1, 3]  # MHA 2 stays; the next lowest, FFN 0, goes
    assert lowest_k(values, 2, "mha", 6) == [0, 1]
    sampler = random_skip_sampler(8, 7, "mha_or_ffn", seed=3)
    for step in range(20):
        s = sampler(step, None)
        assert s.count() == 7 and len(s.mha) <= 3
        assert s == sampler(step, None)  # a pure function of (seed, step): resume-safe


def test_bad_inputs_are_clear_errors():
    with pytest.raises(SkipError, match="unknown candidate kind"):
        BanditConfig(k=2, kind="heads")
    with pytest.raises(ValueError, match="m must be >= 2"):
        BanditConfig(k=2, m=1)
    with pytest.raises(ValueError, match="T .* must be >= 1"):
        BanditConfig(k=2, T=0)
    with pytest.raises(ValueError, match="k must be a positive"):
        BanditConfig(k=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        BanditConfig(k=1, lr=0)
    with pytest.raises(SkipError, match="at most 3"):
        BanditSearch(BanditConfig(k=4, kind="mha"), n_layers=4)
    with pytest.raises(SkipError, match="at most 7"):
        BanditSearch(BanditConfig(k=8, kind="mha_or_ffn"), n_layers=4)
    with pytest.raises(SkipError, match="at most 4"):
        random_skip_sampler(4, 5, "ffn")
    BanditSearch(BanditConfig(k=4, kind="ffn"), n_layers=4)  # all FFNs may be skipped


# ----------------------------------------------------------------------------- planted redundancy

N, K, M = 16, 4, 3
BUDGET = 200  # comparisons (600 sub-network evaluations); the planted sets are found after <= ~100
SEEDS = range(6)


def planted_problem(seed: int, sigma: float = 0.05):
    """loss = 1 + sum of the skipped MHAs' costs + noise; 4 planted MHAs cost ~0, the others 0.5-1.5."""
    rng = np.random.default_rng(1000 + seed)
    planted = sorted(rng.choice(N, K, replace=False).tolist())
    cost = rng.uniform(0.5, 1.5, N)
    cost[planted] = rng.uniform(0.0, 0.02, K)
    noise = np.random.default_rng(5000 + seed)

    def loss_of(skips: SkipSet) -> float:
        return 1.0 + cost[list(skips.mha)].sum() + sigma * noise.standard_normal()

    return planted, loss_of


def recovered(sign: int, seed: int) -> bool:
    planted, loss_of = planted_problem(seed)
    search = run_search(BanditConfig(k=K, m=M, lr=20.0, seed=seed, sign=sign), N, loss_of, BUDGET)
    assert len(search.records) == BUDGET
    return search.chosen() == planted


def test_search_recovers_a_planted_redundant_set():
    assert all(recovered(+1, seed) for seed in SEEDS)


def test_negative_control_printed_sign_fails():
    # Eq. 16 with its printed sign: the same recovery check must fail, so the test above discriminates.
    assert not any(recovered(-1, seed) for seed in SEEDS)


def test_log_records_every_update(tmp_path):
    planted, loss_of = planted_problem(0)
    search = run_search(BanditConfig(k=K, m=M, lr=20.0), N, loss_of, 5, run_dir=tmp_path)
    lines = (tmp_path / "bandit.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["header"]["n_layers"] == N and len(lines) == 6
    rec = json.loads(lines[-1])
    assert rec == search.records[-1] and rec["comparison"] == 4
    assert len(rec["subnets"]) == M and rec["s_after"] == search.s.tolist()
    assert rec["s_before"] == search.records[-2]["s_after"]
    for sn in rec["subnets"]:
        assert len(sn["skipped"]) == K and len(sn["pi"]) == N
        assert sn["reward"] == pytest.approx(np.exp(-sn["loss"]))
        # the skipped candidates are those with the lowest pi
        assert sorted(np.argsort(sn["pi"])[:K].tolist()) == sn["skipped"]


def test_interrupted_search_resumes_exactly(tmp_path):
    cost = np.linspace(0.0, 1.5, N)

    def loss_of(skips):  # noise that depends only on the skip set, so a replay sees the same losses
        return 1.0 + cost[list(skips.mha)].sum() + 0.05 * np.random.default_rng(list(skips.mha)).standard_normal()

    config = BanditConfig(k=K, m=M, lr=20.0, seed=3)
    whole = run_search(config, N, loss_of, 60)

    calls = []

    def crashing(skips):
        calls.append(1)
        if len(calls) == 25 * M + 2:
            raise KeyboardInterrupt
        return loss_of(skips)

    with pytest.raises(KeyboardInterrupt):
        run_search(config, N, crashing, 60, run_dir=tmp_path)
    with open(tmp_path / "bandit.jsonl", "a") as f:
        f.write('{"comparison": 25, "torn')  # a crash in the middle of a write
    resumed = run_search(config, N, loss_of, 60, run_dir=tmp_path)
    assert np.array_equal(resumed.s, whole.s)
    assert resumed.records == json.loads(json.dumps(whole.records))
    with pytest.raises(ValueError, match="other settings"):
        run_search(BanditConfig(k=K, m=M, lr=10.0, seed=3), N, loss_of, 60, run_dir=tmp_path)


# ----------------------------------------------------------------------------- with eas.models.train

def test_search_plugs_into_train(tokenizer, tmp_path):
    from test_train import examples, fresh

    from eas.models.train import TrainConfig, train

    heldout = examples(28)[24:]

    def run(run_dir, on_step_extra=None):
        model = fresh(tokenizer)
        search = BanditSearch(BanditConfig(k=1, m=2, T=2, lr=50.0, warmup_steps=2, kind="mha", seed=0), 4,
                              run_dir=run_dir, heldout_batch=model.collate(heldout, with_target=True))

        def on_step(step, model, loss):
            search.on_step(step, model, loss)
            if on_step_extra:
                on_step_extra(step)

        config = TrainConfig(lr=1e-2, steps=search.search_steps(3), batch_size=4, checkpoint_every=3)
        result = train(model, examples(24), config, run_dir=run_dir, skip_sampler=search.skip_sampler,
                       on_step=on_step, stateful={"bandit": search}, progress=False)
        return model, search, result

    model, search, result = run(tmp_path / "whole")
    assert result.steps == 8 and [r["step"] for r in search.records] == [3, 5, 7]
    assert all(len(h["skips"]["mha"]) == 1 for h in result.history)
    assert skip.current_skips(model) == SkipSet(**result.history[-1]["skips"])  # comparisons restore skips
    assert len((tmp_path / "whole" / "bandit.jsonl").read_text().splitlines()) == 4
    assert not np.array_equal(search.s, np.zeros(4))
    losses = [sn["loss"] for r in search.records for sn in r["subnets"]]
    assert all(np.isfinite(losses))

    def crash(step):
        if step == 7:  # right after the comparison at step 7, which the checkpoint at step 6 does not hold
            raise RuntimeError("cut")

    with pytest.raises(RuntimeError, match="cut"):
        run(tmp_path / "cut", crash)
    assert len((tmp_path / "cut" / "bandit.jsonl").read_text().splitlines()) == 4
    _, resumed, resumed_result = run(tmp_path / "cut")
    assert resumed_result.resumed_from == 6 and resumed_result.history == result.history
    assert np.array_equal(resumed.s, search.s) and resumed.records == json.loads(json.dumps(search.records))
    assert len((tmp_path / "cut" / "bandit.jsonl").read_text().splitlines()) == 4
