"""Log-mel features, CMVN, SpecAugment, the bucket sampler, the dataset and the loader."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from kdlab.data.batching import Batch, BucketBatchSampler, SpeechDataset, collate, make_loader
from kdlab.data.features import FbankConfig, GlobalCMVN, compute_fbank, fit_cmvn
from kdlab.data.manifest import Utterance
from kdlab.data.specaugment import SpecAugment, SpecAugmentConfig
from kdlab.data.tokenizer import CharTokenizer


def write_tone(path, seconds, freq=440.0, sample_rate=16000, seed=0):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), sample_rate)
    return str(path)


def utterance(uid, audio, text, duration):
    return Utterance(id=uid, audio=str(audio), text=text, speaker="s1", duration=duration)


# ---------------------------------------------------------------- features


def test_fbank_shape_is_one_frame_per_hop():
    num_samples = 16000 + 37
    feats = compute_fbank(torch.randn(num_samples) * 0.1)
    assert feats.shape == (num_samples // 160 + 1, 80) and feats.dtype == torch.float32
    assert abs(feats.shape[0] - num_samples / 160) <= 1
    assert FbankConfig().num_frames(num_samples) == feats.shape[0]


def test_fbank_peak_bin_follows_the_tone_frequency():
    config = FbankConfig()
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731  (HTK mel scale)
    edges = np.linspace(mel(config.f_min), mel(config.sample_rate / 2), config.n_mels + 2)
    for freq in (300.0, 1000.0, 3000.0):
        t = torch.arange(8000) / 16000
        feats = compute_fbank(0.5 * torch.sin(2 * math.pi * freq * t), config)
        expected = int(np.argmin(np.abs(edges[1:-1] - mel(freq))))
        assert abs(int(feats[10:-10].mean(0).argmax()) - expected) <= 1


def test_fbank_rejects_empty_waveform_and_config_round_trips():
    with pytest.raises(ValueError, match="non-empty waveform"):
        compute_fbank(torch.zeros(0))
    config = FbankConfig(n_mels=40, hop_ms=20.0)
    assert FbankConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="hop_ms"):
        FbankConfig(hop_ms=30.0)


def test_cmvn_makes_training_features_zero_mean_unit_variance(tmp_path):
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(50 + 10 * i, 80, generator=gen) * (1 + torch.arange(80)) + 3 * i for i in range(5)]
    cmvn = GlobalCMVN.fit(feats)
    normalised = torch.cat([cmvn(f) for f in feats])
    assert torch.allclose(normalised.mean(0), torch.zeros(80), atol=1e-4)
    assert torch.allclose(normalised.std(0, unbiased=False), torch.ones(80), atol=1e-4)
    cmvn.save(tmp_path / "cmvn.json")
    loaded = GlobalCMVN.load(tmp_path / "cmvn.json")
    assert torch.equal(loaded.mean, cmvn.mean) and torch.equal(loaded.std, cmvn.std)
    assert loaded.num_frames == sum(f.shape[0] for f in feats)


def test_fit_cmvn_from_utterances_skips_unreadable_audio(tmp_path):
    utts = [
        utterance(f"u{i}", write_tone(tmp_path / f"{i}.wav", 0.3, 200.0 * (i + 1), seed=i), "a", 0.3) for i in range(4)
    ]
    utts.insert(2, utterance("gone", tmp_path / "gone.wav", "a", 0.3))
    cmvn = fit_cmvn(utts, max_utterances=None)
    waves = [torch.from_numpy(sf.read(u.audio, dtype="float32")[0]) for u in utts if u.id != "gone"]
    normalised = torch.cat([cmvn(compute_fbank(w)) for w in waves])
    assert torch.allclose(normalised.mean(0), torch.zeros(80), atol=1e-3)
    assert torch.allclose(normalised.std(0, unbiased=False), torch.ones(80), atol=1e-3)
    assert fit_cmvn(utts, max_utterances=2).num_frames < cmvn.num_frames
    with pytest.raises(ValueError, match="none of the 1 picked"):
        fit_cmvn(utts[2:3])


# ---------------------------------------------------------------- SpecAugment


def test_specaugment_is_identity_in_eval_and_seeded_in_training():
    feats = torch.randn(200, 80) + 5.0  # no exact zeros before masking
    aug = SpecAugment(SpecAugmentConfig(freq_masks=2, freq_width=20, time_masks=2, time_width=40, time_ratio=0.05))
    assert torch.equal(aug.eval()(feats, seed=1), feats)
    aug.train()
    state = torch.get_rng_state()
    a, b, c = aug(feats, seed=1), aug(feats, seed=1), aug(feats, seed=2)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    assert torch.equal(a, b) and not torch.equal(a, c)
    masked = a == 0
    assert masked.any()
    masked_frames = masked.all(dim=1).sum()
    assert masked_frames <= 2 * min(40, int(0.05 * 200))  # time masks bounded relative to length
    assert masked.all(dim=0).sum() <= 2 * 20


# ---------------------------------------------------------------- bucket sampler


def sampler_durations(n=300, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 8.0, n).tolist()


def test_bucket_sampler_bounds_padded_frames_and_covers_every_index_once():
    durations = sampler_durations()
    sampler = BucketBatchSampler(durations, max_frames_per_batch=3000, seed=1)
    frames = [int(d * 100) + 1 for d in durations]
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(durations)))
        assert all(len(b) * max(frames[i] for i in b) <= 3000 for b in batches)
        padded = sum(len(b) * max(frames[i] for i in b) for b in batches)
        assert padded < 1.25 * sum(frames)  # bucketing keeps padding low


def test_bucket_sampler_is_deterministic_per_seed_and_epoch():
    durations = sampler_durations()
    batches = lambda seed, epoch: list(_at_epoch(BucketBatchSampler(durations, 3000, seed=seed), epoch))  # noqa: E731
    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)
    unshuffled = BucketBatchSampler(durations, 3000, shuffle=False)
    assert list(unshuffled) == list(_at_epoch(unshuffled, 5))


def _at_epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return sampler


def test_bucket_sampler_leaves_out_too_long_utterances_with_a_warning():
    with pytest.warns(UserWarning, match="1 utterance.*longer than max_frames_per_batch=500"):
        sampler = BucketBatchSampler([1.0, 9.0, 2.0], max_frames_per_batch=500)
    assert sampler.excluded == [1]
    assert sorted(i for b in sampler for i in b) == [0, 2]
    with pytest.raises(ValueError, match="index 1"):
        BucketBatchSampler([1.0, float("nan")], 500)


def test_bucket_sampler_drop_last_and_replicas():
    durations = sampler_durations(101)
    full = list(BucketBatchSampler(durations, 2000, seed=3))
    dropped = list(BucketBatchSampler(durations, 2000, seed=3, drop_last=True))
    assert len(dropped) == len(full) - 1
    shards = [list(BucketBatchSampler(durations, 2000, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert {i for s in shards for b in s for i in b} == set(range(101))
    # the step's batch (one per rank) is bounded by max_frames_per_batch, as with one process
    frames = BucketBatchSampler(durations, 2000).frames
    assert all(len(b) * max(frames[b]) <= 2000 // 3 for s in shards for b in s if len(b) > 1)
    assert sum(len(s) for s in shards) > 2 * len(full)  # the epoch is cut into about N times as many batches


# ---------------------------------------------------------------- dataset and loader


@pytest.fixture
def corpus(tmp_path):
    """Six good utterances and one of each bad kind."""
    good = [
        utterance(
            f"good{i}",
            write_tone(tmp_path / f"good{i}.wav", 0.2 + 0.1 * i, 300 + 50 * i, seed=i),
            f"Utterance number {'abcdef'[i]}!",
            0.2 + 0.1 * i,
        )
        for i in range(6)
    ]
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all\n")
    write_tone(tmp_path / "digits.wav", 0.3)
    write_tone(tmp_path / "silent_text.wav", 0.3)
    bad = [
        utterance("missing", tmp_path / "missing.wav", "hello", 0.3),
        utterance("empty", tmp_path / "empty.wav", "hello", 0.3),
        utterance("text", tmp_path / "text.wav", "hello", 0.3),
        utterance("digits", tmp_path / "digits.wav", "call 911", 0.3),
        utterance("notext", tmp_path / "silent_text.wav", " ... ", 0.3),
    ]
    return good[:3] + bad + good[3:]


EXPECTED_SKIPS = {
    "missing_audio": 1,
    "empty_audio": 1,
    "not_audio": 1,
    "unsupported_characters": 1,
    "empty_transcript": 1,
}


def test_dataset_returns_none_for_bad_items_and_counts_each_once(corpus):
    dataset = SpeechDataset(corpus, CharTokenizer())
    for _ in range(2):
        items = [dataset[i] for i in range(len(dataset))]
    assert [item["id"] for item in items if item is not None] == [f"good{i}" for i in range(6)]
    assert dict(dataset.skipped) == EXPECTED_SKIPS
    assert "missing.wav" in dataset.skipped_files["missing_audio"][0]
    assert "'9'" in dataset.skipped_files["unsupported_characters"][0]
    assert "skipped 5 utterances" in dataset.skip_summary()
    item = items[0]
    assert item["text"] == "utterance number a"
    assert CharTokenizer().decode(item["tokens"].tolist()) == item["text"]
    assert item["features"].shape == (FbankConfig().num_frames(int(0.2 * 16000)), 80)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_keeps_going_past_bad_items(corpus, num_workers):
    cmvn = fit_cmvn(corpus)
    loader = make_loader(corpus, CharTokenizer(), cmvn, max_frames=120, shuffle=True, seed=0, num_workers=num_workers)
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            assert isinstance(batch, Batch) and len(batch) > 0
            assert batch.features.dtype == torch.float32 and batch.features.shape[2] == 80
            assert batch.features.shape[0] * batch.features.shape[1] <= 120
            assert batch.feature_lengths.dtype == torch.int64 and batch.token_lengths.dtype == torch.int64
            assert int(batch.feature_lengths.max()) == batch.features.shape[1]
            for row, length, text in zip(batch.tokens, batch.token_lengths, batch.texts):
                assert CharTokenizer().decode(row[:length].tolist()) == text and (row[length:] == 0).all()
            seen += batch.ids
    assert sorted(seen) == sorted([f"good{i}" for i in range(6)] * 2)
    assert dict(loader.dataset.skipped) == EXPECTED_SKIPS  # counted in the main process, workers or not


def test_collate_pads_and_drops_none_and_batch_moves_devices():
    items = [
        None,
        {"id": "a", "text": "ab", "features": torch.ones(3, 80), "tokens": torch.tensor([3, 4])},
        {"id": "b", "text": "c", "features": torch.ones(5, 80), "tokens": torch.tensor([5])},
    ]
    batch = collate(items)
    assert batch.features.shape == (2, 5, 80) and batch.features[0, 3:].abs().sum() == 0
    assert batch.tokens.tolist() == [[3, 4], [5, 0]] and batch.token_lengths.tolist() == [2, 1]
    assert batch.feature_lengths.tolist() == [3, 5] and batch.ids == ["a", "b"]
    moved = batch.to("meta")
    assert moved.features.device.type == "meta" and moved.tokens.device.type == "meta" and moved.texts == batch.texts
    empty = collate([None, None])
    assert len(empty) == 0 and empty.features.shape == (0, 0, 80)


def test_feature_cache_returns_the_same_features_and_recovers_from_damage(tmp_path, corpus):
    good = [u for u in corpus if u.id.startswith("good")]
    plain = SpeechDataset(good, CharTokenizer())
    cached = SpeechDataset(good, CharTokenizer(), feature_cache_dir=tmp_path / "cache")
    first = [cached[i]["features"] for i in range(len(good))]
    files = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(files) == len(good) >= 2
    files[0].write_bytes(b"damaged")
    files[1].write_bytes(files[1].read_bytes()[:-100])  # truncated, as by an interrupted write
    for i in range(len(good)):
        assert torch.equal(cached[i]["features"], plain[i]["features"]) and torch.equal(first[i], plain[i]["features"])
    other_config = SpeechDataset(
        good[:1], CharTokenizer(), feature_cache_dir=tmp_path / "cache", fbank_config=FbankConfig(n_mels=40)
    )
    assert other_config[0]["features"].shape[1] == 40


def test_dataset_specaugment_depends_on_seed_and_epoch_only(corpus):
    good = [u for u in corpus if u.id.startswith("good")]
    aug = SpecAugment(SpecAugmentConfig(time_ratio=0.2))
    make = lambda seed: SpeechDataset(good, CharTokenizer(), specaugment=aug, seed=seed)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    assert torch.equal(a[5]["features"], b[5]["features"])
    assert not torch.equal(a[5]["features"], c[5]["features"])
    before = a[5]["features"]
    a.set_epoch(1)
    assert not torch.equal(a[5]["features"], before)
