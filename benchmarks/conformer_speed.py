"""Training-step time of kdlab's conformer blocks vs torchaudio.models.Conformer.

What is timed: one training step = forward + backward + AdamW step on a batch of
already subsampled frames (B, T', D), for the block stack only. torchaudio's
Conformer has no subsampling front-end, so both models get the same random
(B, T', D) input with the same lengths (T' = (T - 3) // 4 for T input frames, and
realistic padding: lengths drawn in [0.7 T', T']). Same width, depth, heads, FFN
size, depthwise kernel, dropout; both in training mode. Steps alternate between the
two models in one process; the result is the median over ``--repeats`` steps after
``--warmup`` steps each, plus the median of the per-round ratios (robust to load that
changes during the run). One thread by default: on a small shared machine two threads
per process make timings swing with other people's jobs; ``--threads`` changes it.

    python benchmarks/conformer_speed.py            # writes benchmarks/results/conformer_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchaudio
from torch import nn

from kdlab.models.conformer import ConformerEncoder, teacher_config

RESULT = Path(__file__).resolve().parent / "results" / "conformer_speed.json"


class KdlabBlocks(nn.Module):
    """kdlab encoder without its subsampling: (B, T', D), lengths -> (B, T', D)."""

    def __init__(self, encoder: ConformerEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_blocks(x, lengths)[-1]


class TorchaudioBlocks(nn.Module):
    """torchaudio.models.Conformer with the same signature as KdlabBlocks."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.conformer = torchaudio.models.Conformer(
            input_dim=cfg.d_model,
            num_heads=cfg.num_heads,
            ffn_dim=cfg.ffn_dim,
            num_layers=cfg.num_layers,
            depthwise_conv_kernel_size=cfg.conv_kernel,
            dropout=cfg.dropout,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.conformer(x, lengths)[0]


def block_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_step(model: nn.Module, x: torch.Tensor, lengths: torch.Tensor):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(x, lengths).square().mean()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=600, help="input frames T before 4x subsampling")
    parser.add_argument("--size", default="default", help="teacher_config preset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = teacher_config(args.size)
    t_sub = (args.frames - 3) // 4
    x = torch.randn(args.batch, t_sub, cfg.d_model)
    lengths = torch.randint(int(0.7 * t_sub), t_sub + 1, (args.batch,))
    lengths[0] = t_sub
    models = {"kdlab": KdlabBlocks(ConformerEncoder(cfg)), "torchaudio": TorchaudioBlocks(cfg)}
    steps = {name: make_step(model.train(), x, lengths) for name, model in models.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(step())
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "what": "training step (forward + backward + AdamW) of the conformer block stack, no subsampling",
        "median_step_s": medians,
        "ratio_kdlab_over_torchaudio": medians["kdlab"] / medians["torchaudio"],
        "median_paired_ratio": statistics.median(k / t for k, t in zip(times["kdlab"], times["torchaudio"])),
        "target_ratio_max": 1.15,
        "step_times_s": times,
        "config": {
            "batch": args.batch,
            "input_frames": args.frames,
            "subsampled_frames": t_sub,
            "lengths": lengths.tolist(),
            "warmup": args.warmup,
            "repeats": args.repeats,
            "seed": args.seed,
            "encoder": cfg.to_dict(),
        },
        "block_parameters": {
            "kdlab": block_parameters(models["kdlab"].encoder.blocks),
            "torchaudio": block_parameters(models["torchaudio"]),
        },
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("median_step_s", "ratio_kdlab_over_torchaudio", "median_paired_ratio", "threads")
    print(json.dumps({k: result[k] for k in keys}))


if __name__ == "__main__":
    main()
