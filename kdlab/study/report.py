"""``results.md``: the summary table, the claims and the checks of a study, as Markdown.

Every number comes from the rows / claims / checks passed in (nothing typed by hand); a value
with a seed spread reads "mean ± std".
"""

from __future__ import annotations

from kdlab.study.checks import is_kd_baseline
from kdlab.study.claims import format_claim_number
from kdlab.study.config import BASELINE, BUDGET_TOLERANCE

YES_NO = {True: "yes", False: "no", None: "n/a"}


def _number(value, std=None, scale: float = 1.0, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    text = f"{value * scale:,.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:,.{digits}f}"


#: How the report names the latency runtimes of ``StudyConfig.latency_runtime``.
RUNTIME_NAMES = {"eager": "eager PyTorch", "onnxruntime": "ONNX Runtime"}


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(line) + " |" for line in lines]


def results_table(summary: list[dict]) -> list[str]:
    """Markdown lines of the summary table (WERs in %, MACs in M per second of audio)."""
    header = [
        "mode",
        "route",
        "method",
        "target sparsity",
        "encoder params",
        "MACs/s (M)",
        "CPU latency (ms)",
        "× faster than the teacher (paired)",
        "dev WER (%)",
        "test WER (%)",
        "unseen engine WER (%)",
        "unseen text WER (%)",
        "RWER vs the route's KD (%)",
        f"budget ±{BUDGET_TOLERANCE:g}",
        "seeds",
    ]
    lines = []
    for r in summary:
        target = "—" if r["target_sparsity"] is None else f"{r['target_sparsity']:g}"
        method = f"{BASELINE} (baseline)" if is_kd_baseline(r) else r["method"]
        lines.append(
            [
                r["mode"],
                r["route"],
                method,
                target,
                _number(r["encoder_params"], r["encoder_params_std"], digits=0),
                _number(r["macs_per_second"], r["macs_per_second_std"], 1e-6, 1),
                _number(r["latency_ms"], r["latency_ms_std"], digits=1),
                _number(r.get("latency_speedup"), r.get("latency_speedup_std")),  # absent in older studies
                _number(r["dev_wer"], r["dev_wer_std"], 100, 1),
                _number(r["test_wer"], r["test_wer_std"], 100, 1),
                _number(r["unseen_engine_wer"], r["unseen_engine_wer_std"], 100, 1),
                _number(r["unseen_text_wer"], r["unseen_text_wer_std"], 100, 1),
                _number(r["rwer"], r["rwer_std"], digits=1),
                YES_NO[r["within_budget"]],
                str(r["seeds"]),
            ]
        )
    return _table(header, lines)


def claims_table(claims: list[dict]) -> list[str]:
    """Markdown lines: each claim's verdict, value (signed), the paper's number, its effect ± seed SD
    (the SD unsigned), in how many seeds it held, and the verdict's reason."""
    header = ["claim", "target sparsity", "verdict", "value", "paper", "effect ± seed SD", "held in seeds", "reason"]
    lines = []
    for c in claims:
        effect = format_claim_number(c["unit"], c["effect"])
        if c["effect"] is not None and c["effect_std"] is not None:
            effect += f" ± {format_claim_number(c['unit'], c['effect_std'], signed=False)}"
        lines.append(
            [
                c["statement"],
                f"{c['target_sparsity']:g}",
                c["verdict"],
                format_claim_number(c["unit"], c["value"]),
                "—" if c["paper"] is None else f"{c['paper']:g} %",
                effect,
                f"{c['held_in_seeds']} / {c['seeds']}",
                c["reason"].replace("|", "/"),
            ]
        )
    return _table(header, lines)


def _claim_detail(claim: dict) -> str:
    d = claim["details"]
    if "reason" in d:
        return f"not evaluated: {d['reason']}"
    if claim["id"] == "kd_pruning_beats_kd":
        return "; ".join(f"{mode}: best {m['best']} at RWER {m['rwer']:.1f} %" for mode, m in d["per_mode"].items())
    if claim["id"] == "joint_beats_sequential":
        return (
            f"joint had the lower test WER in {d['joint_wins']} of {d['pairs']} (method, mode) pairs (paired by seed)"
        )
    ranking = ", ".join(f"{r['method']} ({r['route']}) {r['rwer']:.1f}" for r in d["ranking"])
    return f"RWER ranking (%, each against its route's KD baseline): {ranking}"


def _measured(name: str, check: dict) -> str:
    """What a check measured, in a few words."""
    if name == "teacher_in_range":
        return ", ".join(f"{mode} {wer:.1%}" for mode, wer in check["teacher_wers"].items()) or "n/a"
    if name == "students_off_plateau":
        worst = check["worst"]
        return "n/a" if worst is None else f"highest {worst['test_wer']:.1%} ({worst['key']})"
    if name == "kd_baseline_separated":
        return (
            ", ".join(
                f"{c['mode']} {c['route']} {c['ratio']:.2f} ×"
                if c["ratio"] is not None
                else f"{c['mode']} {c['route']} n/a"
                for c in check["comparisons"]
            )
            or "n/a"
        )
    largest = check["largest_error"]
    return "n/a" if largest is None else f"largest sparsity error {largest:.3f}"


def checks_table(checks: dict) -> list[str]:
    """Markdown lines: each validity check, whether it held and what it measured."""
    lines = [[check["statement"], YES_NO[check["held"]], _measured(name, check)] for name, check in checks.items()]
    return _table(["validity check", "held", "measured"], lines)


def checks_lines(checks: dict) -> list[str]:
    """Markdown: the checks table, then every failure."""
    failures = [f"- {f['text']}" for check in checks.values() for f in check["failures"]]
    return checks_table(checks) + ([""] + failures if failures else [])


def render_markdown(config: dict, summary: list[dict], claims: list[dict], checks: dict, train_seconds: float) -> str:
    """The whole ``results.md`` (``config``: ``StudyConfig.to_dict()``; ``train_seconds``: the
    rows' own training time, summed)."""
    seeds = config["seeds"]
    targets = ", ".join(f"{t:g}" for t in config["target_sparsities"])
    lines = [
        f"# kdlab study — profile `{config['profile']}`",
        "",
        f"{seeds} seed{'s' * (seeds != 1)}, target sparsities {targets}, methods {', '.join(config['methods'])}, "
        f"modes {', '.join(config['modes'])}, routes {', '.join(config['routes'])}; "
        f"{train_seconds / 60:.1f} min of training in all.",
        "",
        "RWER = (WER_KD − WER) / WER_KD × 100 on the test set, against the KD baseline of the row's own "
        "route, mode, target and seed (positive = better than KD). CPU latency: the encoder in "
        f"{RUNTIME_NAMES[config.get('latency_runtime') or 'eager']}, batch 1, {config['latency_seconds']:g} s of "
        "audio, timed in rounds interleaved with the teacher (median); × faster: the median over those "
        "rounds of teacher time / model time, the number that compares a row with its teacher (the "
        "teacher's own row is timed against itself, so its distance from 1 shows the noise). Budget: "
        "achieved sparsity "
        "(1 − encoder parameters / the teacher encoder's) within the target "
        f"± {BUDGET_TOLERANCE:g}.",
        "",
        "## Results" + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""),
        "",
    ]
    lines += results_table(summary)
    lines += ["", "## The paper's claims (computed from the rows above)", ""]
    lines += claims_table(claims)
    lines += [""] + [f"- {c['statement']} (target {c['target_sparsity']:g}): {_claim_detail(c)}" for c in claims]
    lines += ["", "## Validity checks (a claim is undetermined where one fails)", ""] + checks_lines(checks)
    return "\n".join(lines) + "\n"
