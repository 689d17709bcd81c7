"""SIGTERM / SIGINT that wait for the end of a training step, so the trainer can checkpoint first.

    with StopSignals() as stop:
        while training:
            step()
            if stop.requested:
                save_checkpoint()
                stop.deliver()          # then the signal acts as it would have: exit / KeyboardInterrupt

Outside the main thread (where Python cannot install handlers) the block changes nothing.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Context manager: SIGTERM / SIGINT received inside it are held in ``requested`` (the signal number)."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._hold)
        return self

    def _hold(self, number: int, frame) -> None:
        self.requested = number

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def deliver(self) -> None:
        """Restore the previous handlers and send the held signal again (to this process)."""
        number, self.requested = self.requested, None
        self.__exit__()
        if number is not None:
            signal.raise_signal(number)
