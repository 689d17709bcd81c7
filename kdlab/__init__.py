"""kdlab — a study kit for compressing self-supervised conformer speech models.

Knowledge distillation combined with structured pruning (L0 hard-concrete gates,
low-rank factorisation), and pruning jointly with RNN-T ASR training.
"""

__version__ = "0.1.0"
