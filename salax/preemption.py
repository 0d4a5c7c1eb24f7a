"""Stopping a run on SIGTERM or SIGINT at a step every process agrees on, so it can save and resume there.

TPU spot VMs and most schedulers send SIGTERM before they take the machine. In a multi-process job
JAX's preemption sync manager (started by `jax.distributed.initialize`) hears the SIGTERM on any
host and makes `multihost_utils.reached_preemption_sync_point(step)` return True on every process
at the same step; SIGINT (Ctrl-C) is passed on to it as a SIGTERM. A single process has nothing to
agree with: a signal handler sets a flag that the next step reads. (With the preemption service
switched off, `jax_enable_preemption_service=False`, the processes compare their flags every step.)
"""

import os
import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils
import numpy as np

EXIT_CODE = 75  # EX_TEMPFAIL: stopped on a signal, checkpoint saved; the same command resumes


class Preemption:
    """Installs the signal handling for the duration of a `with` block; `reached(step)` each step."""

    def __init__(self):
        self._signal: int | None = None
        self._shared = False  # whether JAX's sync manager decides
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "Preemption":
        if jax.process_count() > 1:
            try:
                multihost_utils.reached_preemption_sync_point(0)  # every process probes, with the same step
                self._shared = True
            except RuntimeError:  # the preemption service is off: flags are compared instead
                self._shared = False
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            signals = (signal.SIGINT,) if self._shared else (signal.SIGINT, signal.SIGTERM)
            for number in signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self._signal is not None and number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the save
        self._signal = number
        if self._shared and number != signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's notifier listens for SIGTERM and tells every process

    @property
    def signal_name(self) -> str:
        return signal.Signals(self._signal).name if self._signal is not None else "SIGTERM"

    def reached(self, step: int) -> bool:
        """True at the step where this process (and, with several, every process) stops."""
        if self._shared:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        if jax.process_count() > 1:
            flags = multihost_utils.process_allgather(np.array(self._signal is not None))
            return bool(np.any(flags))
        return self._signal is not None
