"""The study grid (issue 5): every compression method by both routes, offline and streaming, at
one or more parameter budgets, against the KD baseline, the teacher and a from-scratch model.

    from kdlab.study import StudyConfig, run_study, load_study
    results = run_study(StudyConfig("default", seeds=3))       # or: python -m kdlab study --seeds 3
    results.summary, results.claims, results.checks            # outputs/study/results.{json,csv,md}

Files: ``config`` (StudyConfig), ``plan`` (the rows), ``recipes`` (the run behind each row and
its measurement), ``parallel`` (the runs trained in worker processes), ``runner`` (run, cache,
write), ``table`` (RWER against each route's KD baseline, seed summary, CSV), ``claims`` (the
paper's claims, computed), ``checks`` (validity: teacher range, blank plateau, KD baseline vs
teacher, sparsity budget), ``verdicts`` (held / not held / undetermined, and why), ``report``
(results.md). The study's figures are drawn above it (``viz.study_figures``,
``report.study_figures_page``), and so is its place in the index and the README
(``report.study_publish``).
"""

from kdlab.study.config import StudyConfig
from kdlab.study.runner import StudyResults, load_study, run_study

__all__ = ["StudyConfig", "StudyResults", "load_study", "run_study"]
