"""``results.md``: the summary table, the claims and the checks of a study, as Markdown.

Every number comes from the rows / claims / checks passed in (nothing typed by hand); a value
with a seed spread reads "mean ± std".
"""

from __future__ import annotations

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
    header = ["mode", "route", "method", "target sparsity", "encoder params", "MACs/s (M)", "CPU latency (ms)",
              "dev WER (%)", "test WER (%)", "unseen engine WER (%)", "unseen text WER (%)", "RWER vs KD (%)",
              f"budget ±{BUDGET_TOLERANCE:.0%}", "seeds"]
    lines = []
    for r in summary:
        target = "—" if r["target_sparsity"] is None else f"{r['target_sparsity']:g}"
        method = f"{BASELINE} (baseline)" if r["method"] == BASELINE and r["route"] != "reference" else r["method"]
        lines.append([r["mode"], r["route"], method, target,
                      _number(r["encoder_params"], r["encoder_params_std"], digits=0),
                      _number(r["macs_per_second"], r["macs_per_second_std"], 1e-6, 1),
                      _number(r["latency_ms"], r["latency_ms_std"], digits=1),
                      _number(r["dev_wer"], r["dev_wer_std"], 100, 1),
                      _number(r["test_wer"], r["test_wer_std"], 100, 1),
                      _number(r["unseen_engine_wer"], r["unseen_engine_wer_std"], 100, 1),
                      _number(r["unseen_text_wer"], r["unseen_text_wer_std"], 100, 1),
                      _number(r["rwer"], r["rwer_std"], digits=1),
                      YES_NO[r["within_budget"]], str(r["seeds"])])
    return _table(header, lines)


def _claim_value(claim: dict, value, signed: bool = True) -> str:
    """RWER in %; a WER difference in WER points (×100). Values carry their sign, spreads do not."""
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    if claim["unit"] == "WER":
        return f"{value * 100:{sign}.2f} WER points"
    return f"{value:{sign}.1f} %"


def claims_table(claims: list[dict]) -> list[str]:
    header = ["claim", "target sparsity", "held", "value", "paper", "held in seeds", "seed std"]
    lines = [[c["statement"], f"{c['target_sparsity']:g}", YES_NO[c["held"]], _claim_value(c, c["value"]),
              "—" if c["paper"] is None else f"{c['paper']:g} %", f"{c['held_in_seeds']} / {c['seeds']}",
              _claim_value(c, c["value_std"], signed=False)] for c in claims]
    return _table(header, lines)


def _claim_detail(claim: dict) -> str:
    d = claim["details"]
    if "reason" in d:
        return f"not evaluated: {d['reason']}"
    if claim["id"] == "kd_pruning_beats_kd":
        return "; ".join(f"{mode}: best {m['best']} at RWER {m['rwer']:.1f} %" for mode, m in d["per_mode"].items())
    if claim["id"] == "joint_beats_sequential":
        return f"joint had the lower test WER in {d['joint_wins']} of {d['pairs']} (method, mode) pairs"
    ranking = ", ".join(f"{r['method']} ({r['route']}) {r['rwer']:.1f}" for r in d["ranking"])
    return f"RWER ranking (%): {ranking}"


def checks_lines(checks: dict) -> list[str]:
    budget, kd = checks["budget"], checks["kd_worse_than_teacher"]
    lines = [f"- Every model with a budget has its encoder within ±{budget['tolerance']:.0%} of it: "
             f"**{YES_NO[budget['held']]}**"]
    lines += [f"  - {o['key']}: {o['encoder_params']:,} params vs budget {o['budget_params']:,.0f} "
              f"({o['relative_error']:+.1%})" for o in budget["outside"]]
    lines.append(f"- The KD baseline's test WER is worse than the teacher's: **{YES_NO[kd['held']]}**")
    lines += [f"  - {c['mode']}, target {c['target_sparsity']:g}, seed {c['seed']}: KD {c['kd_wer']:.1%} vs teacher "
              f"{c['teacher_wer']:.1%}" for c in kd["comparisons"]]
    return lines


def render_markdown(config: dict, summary: list[dict], claims: list[dict], checks: dict, train_seconds: float) -> str:
    """The whole ``results.md`` (``config``: ``StudyConfig.to_dict()``; ``train_seconds``: the
    rows' own training time, summed)."""
    seeds = config["seeds"]
    targets = ", ".join(f"{t:g}" for t in config["target_sparsities"])
    lines = [f"# kdlab study — profile `{config['profile']}`", "",
             f"{seeds} seed{'s' * (seeds != 1)}, target sparsities {targets}, methods {', '.join(config['methods'])}, "
             f"modes {', '.join(config['modes'])}, routes {', '.join(config['routes'])}; "
             f"{train_seconds / 60:.1f} min of training in all.", "",
             "RWER = (WER_KD − WER) / WER_KD × 100 on the test set, against the KD baseline of the same mode, "
             "target and seed (positive = better than KD). CPU latency: the encoder in "
             f"{RUNTIME_NAMES[config.get('latency_runtime') or 'eager']}, batch 1, {config['latency_seconds']:g} s of "
             "audio, timed in rounds interleaved with the teacher (median). Budget: encoder parameters within "
             f"±{BUDGET_TOLERANCE:.0%} "
             "of (1 − target) × the teacher encoder's.", "",
             "## Results" + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""), ""]
    lines += results_table(summary)
    lines += ["", "## The paper's claims (computed from the rows above)", ""]
    lines += claims_table(claims)
    lines += [""] + [f"- {c['statement']} (target {c['target_sparsity']:g}): {_claim_detail(c)}" for c in claims]
    lines += ["", "## Checks", ""] + checks_lines(checks)
    return "\n".join(lines) + "\n"
