"""`python -m kdlab joint`: prune / factorise the ASR student while it trains RNN-T (the joint route)."""

from __future__ import annotations

import argparse
import sys

from kdlab.commands._compression_args import add_method_and_target, add_run_options, budget_warning
from kdlab.commands._option_types import add_corpus_options, check_accelerator, non_negative_int, positive_int

HELP = (
    "joint route: compress the SSL encoder while training RNN-T from fresh predictor / joiner (kd, l0, lrf, "
    "kd+l0, kd+lrf, kd+lrf+l0), materialise, recover, report WER / params / MACs"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_method_and_target(
        parser,
        method_help="kd: dense smaller student + KD; l0: hard-concrete pruning; lrf: low-rank factorisation; "
        "'+' combines them; without kd the student trains with the RNN-T (+ CTC) loss alone",
        profile_help="which SSL encoder, student ASR schedule and corpus (trained first if missing): "
        "tiny, default, full",
    )
    parser.add_argument("--streaming", action="store_true", help="train the student with the streaming chunk mask")
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="RNN-T steps in all, recovery included (default: the profile's student_rnnt_steps)",
    )
    parser.add_argument(
        "--ctc-steps",
        type=non_negative_int,
        default=None,
        help="CTC warm-start steps (default: the profile's student_ctc_steps)",
    )
    parser.add_argument(
        "--recovery-steps",
        type=non_negative_int,
        default=None,
        help="of the RNN-T steps, those that train the materialised student (default: the profile's; 0: none)",
    )
    parser.add_argument(
        "--joint-kd-source",
        choices=("ssl", "finetuned"),
        default="ssl",
        help="kd methods distil the SSL encoder (default: layer KD) or the fine-tuned teacher of the "
        "mode (finetuned: layer + output KD; trained first if missing)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the joint run (default: 0)")
    parser.add_argument(
        "--teacher-seed", type=non_negative_int, default=0, help="seed of the teacher runs (default: 0)"
    )
    add_corpus_options(parser)
    add_run_options(parser, "run folder (default: runs/teacher-<profile>-<hash>/joint-<mode>-<method>-<target>-<hash>)")


def run(args: argparse.Namespace) -> int:
    check_accelerator(args.profile, args.device)
    from kdlab.train.recipes.joint import joint_profile
    from kdlab.train.recipes.joint_config import JointConfig
    from kdlab.train.recipes.profiles import get_profile

    config = JointConfig.for_profile(
        args.profile,
        args.method,
        args.target_sparsity,
        args.seed,
        args.streaming,
        args.steps,
        args.recovery_steps,
        ctc_steps=args.ctc_steps,
        kd_source=args.joint_kd_source,
        teacher_seed=args.teacher_seed,
        calibrate_budget=args.calibrate_budget,
        teacher_corpus_dir=args.corpus,
        tokenizer=args.tokenizer,
    )
    result = joint_profile(config, args.run_dir, device=args.device, progress=not args.no_progress, force=args.force)
    m = result.metrics
    frame_ms = get_profile(args.profile).encoder_frame_ms
    mode = f"streaming (chunk {config.chunk_size * frame_ms} ms)" if config.streaming else "offline"
    print(f"run dir:        {result.run_dir}")
    print(
        f"method:         {m['method']} (joint route, {mode}), {m['asr_cost']['ctc']['steps']} CTC + {m['steps']} "
        f"joint + {m['recovery_steps']} recovery steps, "
        f"{m['wall_seconds']:.0f} s on {m['device']}"
    )
    print(
        f"sparsity:       target {m['target_sparsity']:.3f}, achieved {m['achieved_sparsity']:.3f} (encoder "
        f"{m['encoder_params'] / 1e6:.3f} M of {m['teacher_encoder_params'] / 1e6:.3f} M params)"
    )
    print(
        f"MACs / s audio: {m['macs_per_second'] / 1e6:.1f} M (SSL encoder {m['teacher_macs_per_second'] / 1e6:.1f} M, "
        f"{m['mac_reduction']:.2f}x fewer)"
    )
    print(
        f"CPU latency:    {m['latency']['median_s'] * 1e3:.1f} ms per {m['latency']['audio_seconds']:g} s utterance "
        f"(SSL encoder {m['teacher_latency']['median_s'] * 1e3:.1f} ms, {m['latency_speedup']:.2f}x)"
    )
    for split in ("dev", "test"):
        print(f"{split} greedy:     WER {m[split]['wer']:.2%}  CER {m[split]['cer']:.2%}")
    warning = budget_warning(m["achieved_sparsity"], m["target_sparsity"])
    if warning:
        print(warning, file=sys.stderr)
    return 0
