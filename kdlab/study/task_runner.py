"""One study task as a data-parallel run: ``python -m kdlab.study.task_runner TASK_FILE``.

``kdlab.study.parallel.run_task`` starts this under torchrun (``study --gpus-per-run K``): every rank
loads the pickled (config, task, threads, device) and runs the task; the recipes' trainers join
torchrun's process group (one GPU per rank, or one CPU thread each) and rank 0 writes the run folder.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from kdlab.study.parallel import run_task_here


def main(task_file: str) -> None:
    config, task, threads, device = pickle.loads(Path(task_file).read_bytes())
    run_task_here(config, task, threads, device)


if __name__ == "__main__":
    main(sys.argv[1])
