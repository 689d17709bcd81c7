"""Training recipes: BEST-RQ pre-training, RNN-T fine-tuning, and the cached teacher.

from kdlab.train.recipes.teacher import ensure_teacher
teacher = ensure_teacher("default")          # pre-train + fine-tune once, then reuse
teacher.metrics["test"]["wer"]
"""
