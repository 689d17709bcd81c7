"""Benchmark: audio trained per second in each phase of the default teacher recipe, for the training
set-up before the throughput work and for the current default profile, measured side by side.

    python benchmarks/train_throughput.py [--steps 6] [--warmup 2] [--rounds 3] [--threads 2] [--processes 2]

Phases: BEST-RQ pre-training, CTC warm-start, RNN-T + CTC fine-tuning, each a real training step
(forward, backward, AdamW update, with the next batch read from the loader) on the default corpus.
The corpus' log-mel feature cache is filled first (the recipes share it: every run after the first
reads features from disk), and its fill time is reported apart.
"before" trains as it did before the throughput work: one process with `--threads` threads (2 on
the 2-core machine). "current" trains as `kdlab finetune --processes N` does: N data-parallel
processes (gloo) of one thread each, each on 1/N of the profile's batch, gradients averaged every
step; a step's wall time is the slowest rank's, its CPU time the sum over the ranks.
Rounds interleave the set-ups (round r: every phase of "before", then of "current"), so a busy
moment of the machine hits both; the first `--warmup` steps of each (set-up, phase) are not
timed. Writes benchmarks/results/train_throughput.json: per set-up and phase the median step wall
and CPU seconds, audio seconds per step, audio seconds trained per wall and per CPU second, the
padding fraction of the batches (padded frames / frames); per set-up the whole recipe (phases
weighted by their step counts); the speed-up of "current" over "before" per phase and for the
recipe (audio per CPU second); threads and the load average before and after. Target (issue 13):
the recipe's speed-up >= 2.5 on the 2-core machine, measured idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kdlab.data.batching import make_loader
from kdlab.data.tokenizer import CharTokenizer, build_tokenizer
from kdlab.models.bestrq import BestRQConfig, BestRQModel
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.train.distributed import average_gradients
from kdlab.train.recipes.ctc_warmup import EncoderCTC, RNNTWithCTC
from kdlab.train.recipes.data_setup import SpeechData, feature_cache_dir
from kdlab.train.recipes.pretrain import corpus_folder
from kdlab.train.recipes.profiles import RecipeProfile, get_profile
from kdlab.train.recipes.runs import load_average

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("pretrain", "ctc", "rnnt")
TARGET_SPEEDUP = 2.5


@dataclass(frozen=True)
class SetUp:
    """What a training step costs depends on: the encoder, the tokenizer, the batch bound, the step counts."""

    encoder_size: str
    encoder_overrides: dict
    rnnt: dict
    bestrq: dict
    tokenizer: str  # "char" or "bpe:<vocabulary size>"
    frames_per_batch: dict  # phase -> frames per batch
    steps: dict = field(default_factory=dict)  # phase -> steps in the recipe

    @classmethod
    def of_profile(cls, profile: RecipeProfile) -> SetUp:
        return cls(
            profile.encoder_size,
            profile.encoder_overrides,
            profile.rnnt,
            profile.bestrq,
            profile.tokenizer,
            {phase: profile.frames_per_batch for phase in PHASES},
            {"pretrain": profile.pretrain_steps, "ctc": profile.ctc_warmup_steps, "rnnt": profile.finetune_steps},
        )


# The default profile as it was before the throughput work (commit 54df628), frozen here.
BEFORE = SetUp(
    encoder_size="small",
    encoder_overrides=dict(
        d_model=96,
        num_layers=8,
        num_heads=4,
        head_dim=24,
        ffn_dim=384,
        conv_channels=96,
        subsampling_channels=32,
        dropout=0.0,
    ),
    rnnt=dict(pred_embed_dim=64, pred_hidden=192, joint_dim=160),
    bestrq=dict(codebook_size=1024, codebook_dim=16),
    tokenizer="char",
    frames_per_batch={phase: 8000 for phase in PHASES},
    steps={"pretrain": 500, "ctc": 800, "rnnt": 750},
)


class PhaseRunner:
    """One (set-up, phase): its model, AdamW and an endless iterator over its training batches."""

    def __init__(self, setup: SetUp, phase: str, data: SpeechData, tokenizer, seed: int = 0) -> None:
        torch.manual_seed(seed)
        encoder = ConformerEncoder(teacher_config(setup.encoder_size, **setup.encoder_overrides))
        vocab = tokenizer.vocab_size
        if phase == "pretrain":
            self.model = BestRQModel(encoder, BestRQConfig(**setup.bestrq))
            self.loss = lambda batch: self.model(batch)[0]
        elif phase == "ctc":
            self.model = EncoderCTC(encoder, vocab)
            self.loss = self.model
        else:
            rnnt = RNNTModel(encoder, RNNTConfig(vocab_size=vocab, **setup.rnnt))
            self.model = RNNTWithCTC(rnnt, torch.nn.Linear(encoder.config.d_model, vocab), weight=0.3)
            self.loss = lambda batch: self.model(batch)[0]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.loader = make_loader(
            data.splits["train"],
            tokenizer,
            data.cmvn,
            max_frames=setup.frames_per_batch[phase],
            seed=seed,
            feature_cache_dir=feature_cache_dir(data.corpus_dir),
        )
        if dist.is_initialized():  # this rank's share of each step's batch, as the trainer does under torchrun
            self.loader.batch_sampler.shard(dist.get_world_size(), dist.get_rank())
        self.epoch, self.batches = 0, iter(self.loader)

    def _next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.epoch += 1
            self.loader.set_epoch(self.epoch)
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> dict:
        """One timed training step: {wall, cpu, audio_seconds, frames, padded_frames}."""
        wall, cpu = time.perf_counter(), time.process_time()
        batch = self._next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        average_gradients([p for p in self.model.parameters() if p.requires_grad])
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        frames = int(batch.feature_lengths.sum())
        return {
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
            "audio_seconds": frames / 100.0,
            "frames": frames,
            "padded_frames": int(batch.features.shape[0] * batch.features.shape[1]),
        }


def _rank_worker(rank: int, world: int, port: int, setup: SetUp, profile: str, folder: str, warmup: int, conn) -> None:
    """One data-parallel rank of the "current" set-up: one thread, its runners, steps on request."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = load_data(profile)
    tokenizer = make_tokenizer(setup.tokenizer, data, Path(folder) / f"rank{rank}")
    runners = {phase: PhaseRunner(setup, phase, data, tokenizer) for phase in PHASES}
    for runner in runners.values():
        for _ in range(warmup):
            runner.step()
    conn.send("ready")
    while (request := conn.recv()) is not None:
        phase, steps = request
        conn.send([runners[phase].step() for _ in range(steps)])
    dist.destroy_process_group()


class RankGroup:
    """N processes training one set-up data-parallel, driven phase by phase from this process."""

    def __init__(self, processes: int, setup: SetUp, profile: str, folder: str, warmup: int) -> None:
        context = mp.get_context("spawn")
        port = 29500 + os.getpid() % 1000
        self.connections, self.processes = [], []
        for rank in range(processes):
            parent, child = context.Pipe()
            process = context.Process(
                target=_rank_worker, args=(rank, processes, port, setup, profile, folder, warmup, child)
            )
            process.start()
            self.connections.append(parent)
            self.processes.append(process)
        for connection in self.connections:
            if connection.recv() != "ready":
                raise RuntimeError("a rank failed to start")

    def steps(self, phase: str, count: int) -> list[dict]:
        """`count` synchronised steps of every rank: wall of the slowest rank, CPU, audio and frames summed."""
        for connection in self.connections:
            connection.send((phase, count))
        per_rank = [connection.recv() for connection in self.connections]
        return [
            {
                "wall": max(s["wall"] for s in step),
                **{key: sum(s[key] for s in step) for key in ("cpu", "audio_seconds", "frames", "padded_frames")},
            }
            for step in zip(*per_rank)
        ]

    def close(self) -> None:
        for connection in self.connections:
            connection.send(None)
        for process in self.processes:
            process.join()


def load_data(profile: str) -> SpeechData:
    return SpeechData.from_corpus(corpus_folder(profile, 0, None), cmvn_utterances=get_profile(profile).cmvn_utterances)


def fill_feature_cache(data: SpeechData) -> float:
    """Compute (or read) the cached log-mel features of every train utterance; returns the seconds taken."""
    start = time.perf_counter()
    dataset = make_loader(
        data.splits["train"], CharTokenizer(), data.cmvn, feature_cache_dir=feature_cache_dir(data.corpus_dir)
    ).dataset
    for index in range(len(dataset)):
        dataset[index]
    return time.perf_counter() - start


def make_tokenizer(kind: str, data: SpeechData, folder: Path):
    if kind == "char":
        return CharTokenizer()
    name, _, size = kind.partition(":")
    return build_tokenizer(name, [u.text for u in data.splits["train"]], folder, int(size))


def summarise(steps: list[dict]) -> dict:
    wall = statistics.median(s["wall"] for s in steps)
    cpu = statistics.median(s["cpu"] for s in steps)
    audio = statistics.fmean(s["audio_seconds"] for s in steps)
    return {
        "steps_timed": len(steps),
        "median_step_wall_s": round(wall, 4),
        "median_step_cpu_s": round(cpu, 4),
        "audio_seconds_per_step": round(audio, 2),
        "audio_per_wall_second": round(audio / wall, 2),
        "audio_per_cpu_second": round(audio / cpu, 2),
        "padding_fraction": round(1 - sum(s["frames"] for s in steps) / sum(s["padded_frames"] for s in steps), 4),
    }


def recipe(setup: SetUp, phases: dict) -> dict:
    """The whole recipe: each phase's median step times its step count."""
    wall = sum(setup.steps[p] * phases[p]["median_step_wall_s"] for p in PHASES)
    cpu = sum(setup.steps[p] * phases[p]["median_step_cpu_s"] for p in PHASES)
    audio = sum(setup.steps[p] * phases[p]["audio_seconds_per_step"] for p in PHASES)
    return {
        "steps": setup.steps,
        "estimated_wall_s": round(wall, 1),
        "estimated_cpu_s": round(cpu, 1),
        "audio_seconds": round(audio, 1),
        "audio_per_wall_second": round(audio / wall, 2),
        "audio_per_cpu_second": round(audio / cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per (set-up, phase) and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the first round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help='threads of the "before" process')
    parser.add_argument("--processes", type=int, default=2, help='data-parallel processes of "current", 1 thread each')
    parser.add_argument("--profile", default="default", help="the recipe profile measured as 'current'")
    parser.add_argument("--out", default=None, help="result file (default: benchmarks/results/train_throughput.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    setups = {"before": BEFORE, "current": SetUp.of_profile(profile)}
    load_before = load_average()
    data = load_data(args.profile)
    fill_seconds = fill_feature_cache(data)
    timings: dict[str, dict[str, list]] = {name: {phase: [] for phase in PHASES} for name in setups}
    with tempfile.TemporaryDirectory(prefix="kdlab-throughput-") as tmp:
        tokenizer = make_tokenizer(BEFORE.tokenizer, data, Path(tmp) / "before")
        before = {phase: PhaseRunner(BEFORE, phase, data, tokenizer) for phase in PHASES}
        for runner in before.values():
            for _ in range(args.warmup):
                runner.step()
        current = RankGroup(args.processes, setups["current"], args.profile, tmp, args.warmup)
        try:
            for round_index in range(args.rounds):
                for phase, runner in before.items():
                    timings["before"][phase] += [runner.step() for _ in range(args.steps)]
                for phase in PHASES:
                    timings["current"][phase] += current.steps(phase, args.steps)
                print(f"round {round_index + 1}/{args.rounds} done")
        finally:
            current.close()
    results = {name: {"phases": {p: summarise(timings[name][p]) for p in PHASES}} for name in setups}
    for name, setup in setups.items():
        results[name]["recipe"] = recipe(setup, results[name]["phases"])
        results[name]["setup"] = {
            "processes": 1 if name == "before" else args.processes,
            "threads_per_process": args.threads if name == "before" else 1,
            "encoder_overrides": setup.encoder_overrides,
            "tokenizer": setup.tokenizer,
            "frames_per_batch": setup.frames_per_batch,
            "rnnt": setup.rnnt,
        }
    speedup = {
        p: round(
            results["current"]["phases"][p]["audio_per_cpu_second"]
            / results["before"]["phases"][p]["audio_per_cpu_second"],
            3,
        )
        for p in PHASES
    }
    speedup["recipe"] = round(
        results["current"]["recipe"]["audio_per_cpu_second"] / results["before"]["recipe"]["audio_per_cpu_second"], 3
    )
    out = {
        "profile": args.profile,
        "threads_before": args.threads,
        "processes_current": args.processes,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "warmup_steps": args.warmup,
        "feature_cache_fill_seconds": round(fill_seconds, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
        "setups": results,
        "speedup_audio_per_cpu_second": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup["recipe"] >= TARGET_SPEEDUP,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    path = Path(args.out) if args.out else RESULTS / "train_throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"speedup": speedup, "load": [load_before, out["load_average_1min_after"]]}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
