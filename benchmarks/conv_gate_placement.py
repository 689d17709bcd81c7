"""Measurement: can the loss reach a conv-channel gate placed before BatchNorm, or after it?

    python benchmarks/conv_gate_placement.py [--profile default] [--seeds 3] [--out FILE]

For a conformer convolution branch (``ConvolutionModule``) of the recipe profile's teacher sizes, random
weights, its BatchNorm running statistics gathered over ``WARMUP_BATCHES`` train-mode batches,
and a fresh batch x (B, T, D) with padding, each placement of a per-channel mask m (C,) is
measured twice, with the branch in train mode (BatchNorm uses the batch's statistics) and in
eval mode (running statistics):

* ``output_change``: ||y(m) − y(1)|| / ||y(1)|| over the valid frames, y the branch output and
  m ~ U(0.2, 1) per channel: how much the mask changes what the branch computes;
* ``gradient_norm``: ||∂L/∂m|| at m = 1 with L = Σ y · r (a fixed random readout r): how much
  a loss can move the mask; ``gradient_ratio`` = train / eval.

Placements: ``before_norm`` (the kit's old one: m multiplies the GLU output before the depthwise
conv and BatchNorm; emulated here by scaling row c and bias c of ``pointwise1``'s value half by
m_c, which multiplies GLU output c by m_c) and ``after_norm`` (``ConvolutionModule.gate``: after
BatchNorm and SiLU, before ``pointwise2``). Writes benchmarks/results/conv_gate_placement.json;
the story is docs/conv_gate_placement.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from kdlab.models.conformer import ConformerConfig, teacher_config
from kdlab.models.convolution import ConvolutionModule
from kdlab.train.recipes.profiles import get_profile

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP_BATCHES = 8
BATCH, FRAMES = 8, 120
PLACEMENTS = ("before_norm", "after_norm")


class MaskParameter(nn.Module):
    """A gate whose ``forward()`` returns its (C,) mask parameter as it is."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = nn.Parameter(mask)

    def forward(self) -> torch.Tensor:
        return self.mask


def random_batch(d_model: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, D) standard normal and its pad mask (B, T, 1), True past each random length."""
    x = torch.randn(BATCH, FRAMES, d_model, generator=generator)
    lengths = torch.randint(FRAMES // 2, FRAMES + 1, (BATCH,), generator=generator)
    return x, (torch.arange(FRAMES)[None, :] >= lengths[:, None])[..., None]


def branch_output(branch: ConvolutionModule, placement: str, mask: torch.Tensor, x, pad) -> torch.Tensor:
    """(B, T, D) branch output with ``mask`` (C,) at ``placement``."""
    if placement == "after_norm":
        branch.gate = MaskParameter(torch.ones_like(mask))
        output = functional_call(branch, {"gate.mask": mask}, (x, pad))[0]
        branch.gate = None
        return output
    row_scale = torch.cat([mask, torch.ones_like(mask)])  # value rows 0..C-1 scaled, gate rows C..2C-1 kept
    weights = {
        "pointwise1.weight": branch.pointwise1.weight * row_scale[:, None],
        "pointwise1.bias": branch.pointwise1.bias * row_scale,
    }
    return functional_call(branch, weights, (x, pad))[0]


def encoder_config(profile: str) -> ConformerConfig:
    """The teacher encoder's config of recipe profile ``profile``."""
    recipe = get_profile(profile)
    return teacher_config(recipe.encoder_size, **recipe.encoder_overrides)


def measure(profile: str, seed: int) -> dict:
    """{placement: {mode: {"output_change", "gradient_norm"}}, placement: gradient_ratio} for one
    random branch and batch."""
    config = encoder_config(profile)
    torch.manual_seed(seed)
    branch = ConvolutionModule(config.d_model, config.conv_channels, config.conv_kernel, 0.0, causal=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in range(WARMUP_BATCHES):
            branch.batch_norm.momentum = 1.0 / (i + 1)  # running statistics: the plain mean over the batches
            branch.train()(*random_batch(config.d_model, generator))
    x, pad = random_batch(config.d_model, generator)
    valid = ~pad
    readout = torch.randn(config.d_model, generator=generator)
    soft = torch.empty(config.conv_channels).uniform_(0.2, 1.0, generator=generator)
    ones = torch.ones(config.conv_channels)
    out = {}
    for placement in PLACEMENTS:
        out[placement] = {}
        for mode in ("train", "eval"):
            branch.train(mode == "train")
            with torch.no_grad():
                reference = branch_output(branch, placement, ones, x, pad) * valid
                masked = branch_output(branch, placement, soft, x, pad) * valid
            mask = ones.clone().requires_grad_(True)
            loss = (branch_output(branch, placement, mask, x, pad) * valid * readout).sum()
            (gradient,) = torch.autograd.grad(loss, mask)
            out[placement][mode] = {
                "output_change": float((masked - reference).norm() / reference.norm()),
                "gradient_norm": float(gradient.norm()),
            }
        norms = {mode: out[placement][mode]["gradient_norm"] for mode in ("train", "eval")}
        out[placement]["gradient_ratio"] = norms["train"] / norms["eval"]
    return out


def median_over_seeds(per_seed: list[dict]) -> dict:
    """The same nesting as one seed's result, each number the median over seeds."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {key: median_over_seeds([seed[key] for seed in per_seed]) for key in first}
    return statistics.median(per_seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "conv_gate_placement.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = encoder_config(args.profile)
    per_seed = [measure(args.profile, seed) for seed in range(args.seeds)]
    result = {
        "profile": args.profile,
        "d_model": config.d_model,
        "conv_channels": config.conv_channels,
        "batch": BATCH,
        "frames": FRAMES,
        "warmup_batches": WARMUP_BATCHES,
        "seeds": args.seeds,
        "median": median_over_seeds(per_seed),
        "per_seed": per_seed,
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=2))


if __name__ == "__main__":
    main()
