"""The removal probe's shortcut (re-running only the layers after the removed module) is exact."""


from eas.data import Example
from eas.method import probe, skip
from eas.method.skip import SkipSet


def examples():
    return [Example(str(i), f"Question number {i}: what is {i} plus {i}?" + " please" * i, f"It is {2 * i}.",
                    str(2 * i), None) for i in range(5)]


def test_probe_equals_full_forward_per_configuration(tiny_mini_llava):
    m = tiny_mini_llava
    exs = examples()
    frame = probe.removal_probe(m, exs, batch_size=2, progress=False)
    assert len(frame) == 1 + 2 * 4 and frame.iloc[0].kind == "none"
    batches = [m.collate(sorted(exs, key=lambda e: len(e.prompt) + len(e.target))[i:i + 2], with_target=True)
               for i in range(0, 5, 2)]
    for row in frame.itertuples():
        skip.apply_skips(m, SkipSet() if row.kind == "none" else SkipSet.of(row.kind, [row.layer]))
        full = probe.teacher_forced_scores(m, batches)
        assert abs(full["loss"] - row.loss) < 1e-5 and abs(full["token_acc"] - row.token_acc) < 1e-9


def test_probe_restores_skips(tiny_mini_llava):
    m = tiny_mini_llava
    skip.apply_skips(m, SkipSet(ffn=(2,)))
    probe.removal_probe(m, examples()[:2], batch_size=2, progress=False)
    assert skip.current_skips(m) == SkipSet(ffn=(2,))
