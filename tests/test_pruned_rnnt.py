"""Pruned RNN-T loss: the two-symbol DP against torchaudio's rnnt_loss, the simple joiner's lattice,
the window bounds' guarantees (random and adversarial shapes), the model's wiring (equal to the full
loss when the windows cover the lattice, training-only parameters, saving, old configs) and a tiny
model that learns through the pruned loss. (ONNX export reads only encoder, predictor and joiner.)"""

from __future__ import annotations

import pytest
import torch
from stand_ins import FakeBatch, StackEncoder
from torchaudio.functional import rnnt_loss

from kdlab.data.tokenizer import CharTokenizer
from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.decoding import greedy_search
from kdlab.models.pruned_rnnt import FILL, SimpleJoiner, effective_range, prune_bounds, pruned_lattice
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.models.transducer_lattice import lattice_nll
from kdlab.train.recipes.ctc_warmup import RNNTWithCTC
from kdlab.train.recipes.runs import config_digest, load_asr, save_student_asr

torch.set_num_threads(1)

CONFIG = RNNTConfig(vocab_size=7, pred_embed_dim=8, pred_hidden=12, joint_dim=10, dropout=0.0)


def two_symbol(log_probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log_probs (B, T, U+1, V), tokens (B, U) -> (B, T, U+1, 2): blank and y_{u+1} (blank past the end)."""
    batch, frames, labels, _ = log_probs.shape
    following = torch.cat([tokens.long(), torch.zeros(batch, 1, dtype=torch.long)], dim=1)
    emit = log_probs.gather(3, following[:, None, :, None].expand(-1, frames, -1, 1))[..., 0]
    return torch.stack([log_probs[..., 0], emit], dim=-1)


def random_case(batch: int, frames: int, labels: int, vocab: int, seed: int):
    """Logits (B, T, U+1, V) needing grad, tokens (B, U) int32, T lengths and U lengths (the first one full)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, labels + 1, vocab, generator=g).mul(2).requires_grad_(True)
    tokens = torch.randint(1, vocab, (batch, labels), generator=g, dtype=torch.int32)
    enc_lengths = torch.randint(1, frames + 1, (batch,), generator=g, dtype=torch.int32)
    token_lengths = torch.randint(0, labels + 1, (batch,), generator=g, dtype=torch.int32)
    enc_lengths[0], token_lengths[0] = frames, labels
    return logits, tokens, enc_lengths, token_lengths


SHAPES = [(3, 7, 5), (4, 1, 3), (2, 6, 0), (3, 3, 12), (2, 40, 25)]  # (B, T', U): T'=1, U=0, U > T'


@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-T{t}-U{u}" for b, t, u in SHAPES])
def test_lattice_dp_equals_torchaudio_rnnt_loss_with_gradients(shape):
    logits, tokens, enc_lengths, token_lengths = random_case(*shape, vocab=6, seed=sum(shape))
    expected = rnnt_loss(logits, tokens, enc_lengths, token_lengths, blank=0, reduction="none")
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    lattice = two_symbol(torch.log_softmax(logits, dim=-1), tokens)
    nll, occupation = lattice_nll(lattice, enc_lengths, token_lengths)
    (grad,) = torch.autograd.grad(nll.sum(), logits)
    torch.testing.assert_close(nll, expected, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(grad, expected_grad, atol=1e-4, rtol=0)
    # every path visits T'_b + U_b nodes, at least one per frame, none outside the lattice
    torch.testing.assert_close(occupation.sum(dim=(1, 2)), (enc_lengths + token_lengths).float())
    for b in range(shape[0]):
        per_frame = occupation[b, : enc_lengths[b]].sum(dim=1)
        assert bool((per_frame > 1 - 1e-4).all())
        assert float(occupation[b, enc_lengths[b] :].abs().sum() + occupation[b, :, token_lengths[b] + 1 :].sum()) == 0


def test_very_negative_cells_give_finite_gradients_and_count_only_the_paths_around_them():
    logits, tokens, _, _ = random_case(2, 6, 4, vocab=5, seed=3)
    enc_lengths, token_lengths = torch.tensor([6, 4], dtype=torch.int32), torch.tensor([4, 3], dtype=torch.int32)
    lattice = two_symbol(torch.log_softmax(logits.detach(), dim=-1), tokens)
    lattice[:, 1:3, 0, :] = FILL  # frames 1-2 must have left u = 0
    lattice[:, 0, 3:, :] = FILL  # frame 0 cannot go past u = 2
    lattice.requires_grad_(True)
    nll, occupation = lattice_nll(lattice, enc_lengths, token_lengths)
    (grad,) = torch.autograd.grad(nll.sum(), lattice)
    assert bool(grad.isfinite().all()) and bool(occupation.isfinite().all())
    # torchaudio's DP over the same two-symbol lattice (exact for finite cells) agrees
    ones = torch.ones_like(tokens)
    expected = rnnt_loss(lattice, ones, enc_lengths, token_lengths, blank=0, reduction="none", fused_log_softmax=False)
    torch.testing.assert_close(nll, expected, atol=1e-3, rtol=1e-6)
    assert float(occupation[:, 1:3, 0].abs().max()) < 1e-6  # no mass through the forbidden nodes


def test_the_simple_lattice_equals_the_log_softmax_of_the_summed_scores_even_when_they_are_large():
    torch.manual_seed(0)
    simple = SimpleJoiner(encoder_dim=5, pred_dim=4, vocab_size=6)
    enc, pred = torch.randn(2, 7, 5) * 100, torch.randn(2, 4, 4) * 100  # scores of hundreds of nats
    tokens = torch.randint(1, 6, (2, 3))
    lattice = simple.lattice(enc, pred, tokens)
    scores = simple.am(enc)[:, :, None, :] + simple.lm(pred)[:, None, :, :]  # the (B, T', U+1, V) tensor avoided
    expected = two_symbol(torch.log_softmax(scores.double(), dim=-1), tokens).float()
    assert float(scores.detach().abs().max()) > 200
    torch.testing.assert_close(lattice, expected, atol=1e-3, rtol=1e-5)


def assert_valid_windows(starts, enc_lengths, token_lengths, span: int, labels: int) -> None:
    """The documented guarantees of ``prune_bounds``; a path inside the windows exists."""
    assert starts.dtype == torch.int64 and bool((starts >= 0).all()) and bool((starts + span <= labels).all())
    for b in range(len(enc_lengths)):
        s, frames, last = starts[b, : enc_lengths[b]], int(enc_lengths[b]), int(token_lengths[b])
        steps = s[1:] - s[:-1]
        assert int(s[0]) == 0 and bool((steps >= 0).all()) and bool((steps <= span - 1).all()), s.tolist()
        assert int(s[-1]) + span - 1 >= last, (s.tolist(), last)
        assert bool((starts[b] <= max(0, last + 1 - span)).all())
        assert bool((starts[b, frames:] == max(0, last + 1 - span)).all())
    # every cell inside the windows scores 0: the NLL is -log(number of paths) only while one exists
    lattice = torch.full((len(enc_lengths), starts.shape[1], labels, 2), FILL)
    index = (starts[:, :, None] + torch.arange(span))[..., None].expand(-1, -1, -1, 2)
    lattice.scatter_(2, index, 0.0)
    assert float(lattice_nll(lattice, enc_lengths, token_lengths)[0].max()) < 1.0


def reverse_diagonal(batch: int, frames: int, labels: int) -> torch.Tensor:
    """Occupation that pulls every window the wrong way: late labels at the first frame, u = 0 at the last."""
    t, u = torch.arange(frames)[:, None], torch.arange(labels)[None, :]
    target = (labels - 1) * (frames - 1 - t) / max(frames - 1, 1)
    return (-(u - target).abs()).exp().expand(batch, -1, -1).clone()


BOUND_CASES = {  # name: (enc_lengths, token_lengths, frames, prune_range)
    "U=0": ([5, 3], [0, 0], 5, 4),
    "T'=1": ([1, 1, 1], [6, 0, 2], 1, 3),
    "U>T'": ([3, 2, 3], [20, 9, 1], 3, 4),
    "very long U": ([30, 17], [200, 150], 30, 5),
    "mixed padding": ([40, 25, 9, 1], [18, 30, 0, 3], 40, 2),
    "typical": ([67, 60, 55], [40, 33, 41], 67, 4),
}


@pytest.mark.parametrize("occupation_kind", ["random", "reverse diagonal", "zeros", "one spike"])
@pytest.mark.parametrize("case", list(BOUND_CASES), ids=list(BOUND_CASES))
def test_window_bounds_obey_their_constraints(case, occupation_kind):
    enc_lengths, token_lengths, frames, prune_range = BOUND_CASES[case]
    enc_lengths, token_lengths = torch.tensor(enc_lengths), torch.tensor(token_lengths)
    batch, labels = len(enc_lengths), int(token_lengths.max()) + 1
    span = effective_range(prune_range, enc_lengths, token_lengths)
    g = torch.Generator().manual_seed(len(case))
    occupation = {
        "random": lambda: torch.rand(batch, frames, labels, generator=g),
        "reverse diagonal": lambda: reverse_diagonal(batch, frames, labels),
        "zeros": lambda: torch.zeros(batch, frames, labels),
        "one spike": lambda: torch.zeros(batch, frames, labels).index_fill_(2, torch.tensor([labels - 1]), 1.0),
    }[occupation_kind]()
    starts = prune_bounds(occupation, enc_lengths, token_lengths, span)
    assert starts.shape == (batch, frames)
    assert_valid_windows(starts, enc_lengths, token_lengths, span, labels)


def test_the_effective_range_widens_only_where_the_windows_could_not_reach_the_end():
    assert effective_range(4, torch.tensor([67, 50]), torch.tensor([40, 45])) == 4
    assert effective_range(4, torch.tensor([3, 10]), torch.tensor([20, 5])) == 8  # ceil(20 / 3) + 1
    assert effective_range(8, torch.tensor([10]), torch.tensor([3])) == 4  # never past the lattice's U + 1
    with pytest.raises(ValueError, match="effective_range"):
        prune_bounds(torch.rand(1, 3, 21), torch.tensor([3]), torch.tensor([20]), 4)


def test_windows_hold_a_sharp_alignment():
    # one path, at most S - 1 emits per frame: all its nodes must lie in the windows
    frames, prune_range, runs = 12, 4, [0, 3, 3, 5, 5, 8, 9, 9, 12, 13, 15, 15]
    occupation = torch.zeros(1, frames, 16)
    for t in range(frames):
        occupation[0, t, runs[t - 1] if t else 0 : runs[t] + 1] = 1.0
    starts = prune_bounds(occupation, torch.tensor([frames]), torch.tensor([15]), prune_range)[0]
    for t in range(frames):
        first = runs[t - 1] if t else 0
        assert int(starts[t]) <= first and runs[t] < int(starts[t]) + prune_range, (t, starts.tolist())


def make_batch(seed: int = 1) -> FakeBatch:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, CONFIG.vocab_size, (3, 9), generator=g)
    tokens[1, 6:] = tokens[2, 4:] = 0
    return FakeBatch(torch.randn(3, 48, 80, generator=g), torch.tensor([48, 40, 20]), tokens, torch.tensor([9, 6, 4]))


def model_with(prune_range: int, simple_loss_scale: float = 0.5, seed: int = 0) -> RNNTModel:
    torch.manual_seed(seed)
    config = RNNTConfig.from_dict(
        {**CONFIG.to_dict(), "prune_range": prune_range, "simple_loss_scale": simple_loss_scale}
    )
    return RNNTModel(StackEncoder(), config)


def test_the_pruned_loss_equals_the_full_loss_when_the_windows_cover_the_lattice():
    model, batch = model_with(prune_range=10, simple_loss_scale=0.0), make_batch()  # S = U + 1
    enc, enc_lengths = model.transcribe(batch.features, batch.feature_lengths)
    loss, parts = model.transducer_loss(enc, enc_lengths, batch.tokens, batch.token_lengths)
    full = model.loss(
        model.logits(enc, enc_lengths, batch.tokens, batch.token_lengths),
        enc_lengths,
        batch.tokens,
        batch.token_lengths,
    )
    shared = [p for name, p in model.named_parameters() if not name.startswith("simple.")]
    pruned_grads = torch.autograd.grad(loss, shared, retain_graph=True)
    full_grads = torch.autograd.grad(full, shared)
    torch.testing.assert_close(loss, full, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(parts["loss_rnnt"], full.detach(), atol=1e-4, rtol=1e-6)
    for pruned_grad, full_grad in zip(pruned_grads, full_grads):
        torch.testing.assert_close(pruned_grad, full_grad, atol=1e-4, rtol=1e-4)


def test_windows_from_the_real_lattice_never_undercount_and_beat_windows_that_ignore_it():
    model, batch = model_with(prune_range=0), make_batch(seed=4)
    joiner, gaps = model.joiner, {}
    with torch.no_grad():
        enc, enc_lengths = model.transcribe(batch.features, batch.feature_lengths)
        tokens = batch.tokens[:, : int(batch.token_lengths.max())]
        pred = model.prediction(tokens, batch.token_lengths)
        real = two_symbol(torch.log_softmax(model.joiner(enc, pred), dim=-1), tokens)
        full, occupation = lattice_nll(real, enc_lengths, batch.token_lengths)
        for prune_range in (3, 5, 10):  # 10 = U + 1: the whole lattice
            span = effective_range(prune_range, enc_lengths, batch.token_lengths)
            for name, occ in (("occupation", occupation), ("none", torch.zeros_like(occupation))):
                starts = prune_bounds(occ, enc_lengths, batch.token_lengths, span)
                projected = joiner.project_encoder(enc), joiner.project_predictor(pred)
                lattice = pruned_lattice(joiner, *projected, tokens, starts, span)
                gaps[name, prune_range] = lattice_nll(lattice, enc_lengths, batch.token_lengths)[0] - full
                assert bool((gaps[name, prune_range] >= -1e-4).all())  # fewer paths: never a lower loss
    for prune_range in (3, 5):
        assert float(gaps["occupation", prune_range].sum()) < float(gaps["none", prune_range].sum())
    assert float(gaps["occupation", 3].sum()) > float(gaps["occupation", 5].sum()) > 0
    torch.testing.assert_close(gaps["occupation", 10], torch.zeros(3), atol=1e-4, rtol=0)


def test_gradients_are_finite_and_reach_every_trained_part():
    model, batch = model_with(prune_range=2), make_batch(seed=2)
    loss = model(batch)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.isfinite().all()), name
        assert float(parameter.grad.abs().sum()) > 0, name


def test_a_tiny_model_trained_on_the_pruned_loss_lowers_its_full_loss():
    model, batches = model_with(prune_range=3), [make_batch(seed) for seed in range(3)]

    def full_loss() -> float:
        with torch.no_grad():
            return sum(float(model(b, return_logits=True)[0]) for b in batches) / len(batches)

    before = full_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(40):
        optimizer.zero_grad()
        model(batches[step % len(batches)]).backward()
        optimizer.step()
    after = full_loss()
    assert after < 0.7 * before, (before, after)


def test_rnnt_with_ctc_logs_the_pruned_and_the_simple_loss():
    model, batch = model_with(prune_range=3, simple_loss_scale=0.5), make_batch()
    wrapped = RNNTWithCTC(model, torch.nn.Linear(16, CONFIG.vocab_size), weight=0.3)
    loss, parts = wrapped(batch)
    assert set(parts) == {"loss_rnnt", "loss_simple", "loss_ctc"}
    expected = parts["loss_rnnt"] + 0.5 * parts["loss_simple"] + 0.3 * parts["loss_ctc"]
    torch.testing.assert_close(loss.detach(), expected)


def test_the_simple_joiner_is_training_only_and_leaves_the_rest_of_the_model_as_it_was():
    plain, pruned = model_with(prune_range=0), model_with(prune_range=4)
    assert plain.simple is None and isinstance(pruned.simple, SimpleJoiner)
    for (name, a), b in zip(plain.state_dict().items(), (pruned.state_dict()[k] for k in plain.state_dict())):
        assert torch.equal(a, b), name  # the same seed draws the same predictor and joiner
    simple_params = sum(p.numel() for p in pruned.simple.parameters())
    assert (
        pruned.num_parameters() == plain.num_parameters() == sum(p.numel() for p in pruned.parameters()) - simple_params
    )
    batch = make_batch()
    with torch.no_grad():
        enc, enc_lengths = pruned.eval().transcribe(batch.features, batch.feature_lengths)
        assert greedy_search(pruned, enc, enc_lengths) == greedy_search(plain.eval(), enc, enc_lengths)


def test_a_pruned_model_saves_and_loads_with_its_simple_joiner(tmp_path):
    torch.manual_seed(0)
    rnnt = RNNTConfig(
        vocab_size=CharTokenizer().vocab_size, pred_embed_dim=8, pred_hidden=8, joint_dim=8, prune_range=4
    )
    model = RNNTModel(ConformerEncoder(teacher_config("tiny", dropout=0.0)), rnnt).eval()
    save_student_asr(model, CharTokenizer(), tmp_path / "asr.pt")
    loaded, _ = load_asr(tmp_path / "asr.pt")
    assert loaded.config.prune_range == 4
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_configs_without_the_new_fields_load_and_keep_their_digest():
    old = {k: v for k, v in CONFIG.to_dict().items() if k not in ("prune_range", "simple_loss_scale")}
    assert RNNTConfig.from_dict(old).prune_range == 0
    assert config_digest({"rnnt": old}) == config_digest({"rnnt": CONFIG.to_dict()})
    assert config_digest({"rnnt": {**old, "prune_range": 4}}) != config_digest({"rnnt": old})
    for bad in ({"prune_range": 1}, {"prune_range": -2}, {"prune_range": 2.5}, {"simple_loss_scale": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RNNTConfig(**bad)
