"""Train the tiny mini-LLaVA's EAS adapters for a few steps and leave the result in a run directory.

    python tests/accelerate_train_script.py OUT_DIR [--batch-size 8] [--grad-accum 1] [--steps 4]
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/accelerate_train_script.py OUT_DIR ...

tests/test_accelerate.py runs it under one and two processes and compares OUT_DIR/final.safetensors
(the trained adapters, written by eas.models.train on the main process) and OUT_DIR/done.json (the loss history).
The set-up is the real thing at a tiny size: PIAs in skipped and kept layers, answer lengths that differ
between examples (so the loss must be weighted by answer tokens across processes), a different MHA skipped
at every step (so some adapters get no gradient in a step, which DDP has to be told about).
"""

import argparse
import json
from pathlib import Path

import torch
from accelerate import PartialState

from eas import baselines
from eas.data import Example
from eas.method.pia import PIAConfig
from eas.method.skip import SkipSet, eas_blocks
from eas.models.mini_llava import MiniLlava, load_tokenizer, tiny_language_model
from eas.models.train import TrainConfig, train

ANSWERS = ["red", "dark blue", "a light green square", "yes", "no, it is a yellow triangle"]


def examples(n: int = 24) -> list[Example]:
    return [Example(uid=f"x{i}", prompt=f"Item {i}: " + "what is it? " * (1 + i % 3), target=ANSWERS[i % 5],
                    answer=ANSWERS[i % 5], image=None) for i in range(n)]


def model_with_pias() -> MiniLlava:
    torch.manual_seed(0)
    model = MiniLlava(tiny_language_model(seed=0, layers=4), load_tokenizer(), visual_grid=2).eval()
    model.requires_grad_(False)
    eas_blocks(model)
    torch.manual_seed(0)
    baselines.attach(model, "eas", baselines.EASConfig(mha=(1, 2), pia=PIAConfig(skip_hidden=8, adapt_hidden=4)))
    # Zero-initialised up-projections would leave the down-projections without gradient for the first
    # step; a small random start makes every adapter weight move from step 0.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.02, generator=gen)
    return model


def skip_sampler(step, rng):
    """One of the kept layers' MHAs skipped too, chosen per step: the same choice on every process."""
    return SkipSet(mha=sorted({1, 2, int(rng.choice([0, 3]))}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--batch-size", type=int, default=8, help="global micro-batch (all processes)")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes on two cores: no oversubscription, and no threading noise
    config = TrainConfig(lr=1e-2, steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         warmup_steps=1, checkpoint_every=0, log_every=1)
    result = train(model_with_pias(), examples(), config, run_dir=args.out_dir, skip_sampler=skip_sampler,
                   progress=False)
    # What each process saw: the test checks that a 2-process launch really ran as two ranks of one job
    # (a wrong launch runs two independent single-process jobs, which would also write final.safetensors).
    state = PartialState()
    record = {"world": state.num_processes, "rank": state.process_index, "type": str(state.distributed_type),
              "losses": result.losses}
    Path(args.out_dir, f"rank-{state.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
