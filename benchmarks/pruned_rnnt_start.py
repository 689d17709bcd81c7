"""Benchmark: does the pruned transducer loss need a warm-up after the CTC warm-start?

    OMP_NUM_THREADS=1 nice python benchmarks/pruned_rnnt_start.py [--ctc-steps 600] [--rnnt-steps 200]
                                                                  [--ranges 4] [--eval-every 25] [--dev 100]

The pruned loss trains the real joiner only inside windows picked by the simple joiner, and the
simple joiner starts untrained. Does that hurt the start of the RNN-T phase? This trains the
profile's encoder (random init, seed 0) with the kit's CTC warm-start (``ctc_warm_start``, the
profile's lr and batch, ``--ctc-steps``), then from that same state the RNN-T + CTC phase
(``RNNTWithCTC``, CTC weight 0.3; AdamW at the profile's fine-tuning lr with its linear warm-up,
then constant; clip 5; the same batches in the same order) once with the full loss and once per S
in ``--ranges`` with the pruned loss (``simple_loss_scale`` of ``RNNTConfig``, no warm-up). Every
``--eval-every`` steps it scores the first ``--dev`` dev utterances in eval mode: the full
rnnt_loss per utterance and per token, and for the pruned runs the pruned and the simple NLL
(pruned − full: what the windows miss); at the end greedy dev WER / CER.

Writes benchmarks/results/pruned_rnnt_start.json: the settings, the CTC phase's last loss, per run
the curve of those numbers, the final dev scores, CPU seconds per run and the load averages.
Numbers are losses, not timings; a busy machine only makes it slower.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from train_throughput import RESULTS, load_data

from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train.recipes.ctc_warmup import CTCWarmupConfig, RNNTWithCTC, ctc_warm_start
from kdlab.train.recipes.evaluate import transcribe
from kdlab.train.recipes.profiles import get_profile
from kdlab.train.recipes.runs import load_average


def endless(loader):
    """The loader's batches epoch after epoch (each epoch reshuffled by its seed)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


@torch.no_grad()
def dev_losses(model: RNNTModel, batches: list) -> dict:
    """Full (and, when pruning, pruned and simple) NLL over `batches`: per utterance and per token."""
    model.eval()
    sums = {"full": 0.0, "pruned": 0.0, "simple": 0.0}
    utterances = tokens = 0
    for batch in batches:
        enc, enc_lengths = model.transcribe(batch.features, batch.feature_lengths)
        logits = model.logits(enc, enc_lengths, batch.tokens, batch.token_lengths)
        count = len(batch.token_lengths)
        sums["full"] += float(model.loss(logits, enc_lengths, batch.tokens, batch.token_lengths)) * count
        if model.simple is not None:
            _, parts = model.transducer_loss(enc, enc_lengths, batch.tokens, batch.token_lengths)
            sums["pruned"] += float(parts["loss_rnnt"]) * count
            sums["simple"] += float(parts["loss_simple"]) * count
        utterances += count
        tokens += int(batch.token_lengths.sum())
    model.train()
    keys = ("full", "pruned", "simple") if model.simple is not None else ("full",)
    out = {f"{k}_per_utterance": round(sums[k] / utterances, 3) for k in keys}
    out.update({f"{k}_per_token": round(sums[k] / tokens, 4) for k in keys})
    return out


def train_run(encoder, head, rnnt_config: RNNTConfig, data, args, profile, dev_batches) -> dict:
    """The RNN-T + CTC phase from (`encoder`, `head`) copies; the curve of ``dev_losses`` and the final dev scores."""
    torch.manual_seed(0)
    rnnt = RNNTModel(copy.deepcopy(encoder), rnnt_config)
    model = RNNTWithCTC(rnnt, copy.deepcopy(head), weight=profile.ctc_aux_weight).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=profile.finetune_lr)
    warmup = profile.finetune_warmup
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    batches = endless(data.train_loader(profile.frames_per_batch, seed=0))
    curve, cpu = [{"step": 0, **dev_losses(rnnt, dev_batches)}], time.process_time()
    for step in range(1, args.rnnt_steps + 1):
        loss, parts = model(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.rnnt_steps:
            curve.append({"step": step, "train": {k: round(float(v), 3) for k, v in parts.items()}})
            curve[-1].update(dev_losses(rnnt, dev_batches))
            print(json.dumps(curve[-1]), flush=True)
    seconds = time.process_time() - cpu
    scores = transcribe(rnnt.eval(), dev_batches, data.tokenizer).scores()
    return {"curve": curve, "dev_wer": scores["wer"], "dev_cer": scores["cer"], "cpu_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--ctc-steps", type=int, default=600)
    parser.add_argument("--rnnt-steps", type=int, default=200)
    parser.add_argument("--ranges", type=int, nargs="+", default=[4], help="prune_range values S")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--dev", type=int, default=100, help="dev utterances scored")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="result file (default: benchmarks/results/pruned_rnnt_start.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    profile = get_profile(args.profile)
    data = load_data(args.profile)
    torch.manual_seed(0)
    encoder = ConformerEncoder(teacher_config(profile.encoder_size, **profile.encoder_overrides))
    ctc = CTCWarmupConfig(steps=args.ctc_steps, lr=profile.ctc_warmup_lr, aux_weight=profile.ctc_aux_weight)
    with tempfile.TemporaryDirectory(prefix="kdlab-pruned-start-") as tmp:
        head, warm = ctc_warm_start(
            encoder, data, ctc, frames_per_batch=profile.frames_per_batch, seed=0, run_dir=tmp, progress=False
        )
    print(f"CTC warm-start: {warm}", flush=True)
    dev_batches = list(data.eval_loader("dev", limit=args.dev))
    base = RNNTConfig(vocab_size=data.tokenizer.vocab_size, **profile.rnnt)
    runs = {}
    for name, prune_range in {"full": 0, **{f"pruned_s{s}": s for s in args.ranges}}.items():
        print(f"run {name}", flush=True)
        config = RNNTConfig.from_dict({**base.to_dict(), "prune_range": prune_range})
        runs[name] = train_run(encoder, head, config, data, args, profile, dev_batches)
    out = {
        "profile": args.profile,
        "ctc_steps": args.ctc_steps,
        "ctc_final_loss": warm.get("final_loss"),
        "rnnt_steps": args.rnnt_steps,
        "dev_utterances": args.dev,
        "simple_loss_scale": base.simple_loss_scale,
        "runs": runs,
        "threads": args.threads,
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    path = Path(args.out) if args.out else RESULTS / "pruned_rnnt_start.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
