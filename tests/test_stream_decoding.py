"""Streaming decoding: chunk-by-chunk encoding and ``GreedyStream`` give what the full forward
and ``greedy_search`` give, whatever the number of input frames per call."""

from __future__ import annotations

import pytest
import torch

from kdlab.models.conformer import ConformerEncoder, teacher_config
from kdlab.models.decoding import greedy_search
from kdlab.models.rnnt import RNNTConfig, RNNTModel
from kdlab.models.stream_decoding import stream_transcribe

torch.set_num_threads(1)


def _streaming_model(seed: int = 0) -> RNNTModel:
    torch.manual_seed(seed)
    encoder = ConformerEncoder(teacher_config("tiny", streaming=True, chunk_size=3, dropout=0.0))
    config = RNNTConfig(vocab_size=12, pred_embed_dim=8, pred_hidden=16, joint_dim=16, dropout=0.0)
    return RNNTModel(encoder, config).eval()


@pytest.mark.parametrize("feed", [1, 5, 16, 1000])
def test_chunk_by_chunk_decoding_equals_the_full_forward_and_greedy_search(feed):
    model = _streaming_model()
    features = torch.randn(97, 80, generator=torch.Generator().manual_seed(1))
    trace = stream_transcribe(model, features, feed)
    with torch.no_grad():
        full, lengths = model.transcribe(features[None], torch.tensor([97]))
    assert (trace.encoder_out - full).abs().max() < 1e-5
    assert tuple(trace.tokens) == greedy_search(model, full, lengths)[0].tokens and len(trace.tokens) > 3
    assert [t for call in trace.calls for t in call.tokens] == trace.tokens
    assert sum(call.frames for call in trace.calls) == full.shape[1]
    assert len(trace.calls) == -(-97 // feed) and trace.calls[-1].received_s == pytest.approx(0.97)
    assert all(call.frames % 3 == 0 for call in trace.calls[:-1]), "only whole chunks before the final flush"


def test_stream_transcribe_refuses_an_empty_feed():
    with pytest.raises(ValueError, match="feed_frames must be >= 1"):
        stream_transcribe(_streaming_model(), torch.randn(20, 80), 0)
