"""Training figures: each builder plots exactly the data it was given."""

from __future__ import annotations

import numpy as np
import pytest

from kdlab.train.history import History
from kdlab.viz import training_figures as tf


def _history(losses, wers=()):
    history = History()
    for step, loss in enumerate(losses, start=1):
        history.append("train", step * 10, {"loss": loss})
    for step, value in wers:
        history.append("eval", step, {"dev_wer": value})
    return history


def test_curves_figure_has_one_trace_per_run_with_its_steps_and_values():
    runs = {"ssl": _history([3.0, 2.0, 1.5]), "random": _history([3.0, 2.8, 2.7]).records}
    figure = tf.curves_figure(runs, "loss")
    assert [t.name for t in figure.data] == ["ssl", "random"]
    assert list(figure.data[0].x) == [10, 20, 30] and list(figure.data[0].y) == [3.0, 2.0, 1.5]
    assert list(figure.data[1].y) == [3.0, 2.8, 2.7]
    evals = tf.curves_figure({"ssl": _history([1.0], [(50, 0.4), (100, 0.2)])}, "dev_wer", kind="eval")
    assert list(evals.data[0].x) == [50, 100] and list(evals.data[0].y) == [0.4, 0.2]


def test_curves_figure_names_the_run_missing_the_metric():
    with pytest.raises(ValueError, match=r"run 'b' has no 'eval' records with 'dev_wer'"):
        tf.curves_figure({"a": _history([1.0], [(5, 0.1)]), "b": _history([1.0])}, "dev_wer", kind="eval")


def test_targets_figure_aligns_codes_with_the_spectrogram():
    fbank = np.random.default_rng(0).normal(size=(41, 80)).astype(np.float32)
    codes = np.array([5, 5, 7, 1, 0, 3, 9, 9, 2, 4])  # 41 // 4 = 10 codes
    figure = tf.targets_figure(fbank, codes)
    spectrogram, code_row = figure.data
    np.testing.assert_array_equal(np.asarray(spectrogram.z), fbank.T)
    np.testing.assert_array_equal(np.asarray(code_row.z)[0], codes)
    assert code_row.dx == pytest.approx(4 * spectrogram.dx)  # one code per 4 frames of 10 ms
    with pytest.raises(ValueError, match="expected 10 codes for 41 frames"):
        tf.targets_figure(fbank, codes[:9])


def test_wer_bars_show_percentages_in_the_given_order():
    figure = tf.wer_bars_figure({"offline": 0.081, "streaming": 0.125})
    assert list(figure.data[0].x) == ["offline", "streaming"]
    assert list(figure.data[0].y) == pytest.approx([8.1, 12.5])
    with pytest.raises(ValueError, match="at least one"):
        tf.wer_bars_figure({})
