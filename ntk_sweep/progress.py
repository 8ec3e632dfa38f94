"""The progress of one run (`tracking.progress`), through tqdm.

Modes (:func:`progress_mode`): ``bar``, a tqdm bar on stderr, shown once the run has lasted
:data:`DELAY_S` (tqdm's ``delay``), redrawn at most every :data:`BAR_EVERY_S`
(``mininterval``); ``log``, for non-terminals such as SLURM logs, one log line every
:data:`LOG_EVERY_S` with the same text (``tqdm.format_meter``); ``off``, nothing.

The bar shows our own ETA in its postfix instead of tqdm's (which extrapolates the overall
step rate): ``remaining steps / GD step rate + remaining log steps x mean log-step time``. The
step rate leaves out the work done at log steps (kernels, metrics: :meth:`Progress.log_step_done`),
which is dense early on, and the steps before :meth:`Progress.restart_rate` (numba's one-time
compile in the first step, announced by ``status("compiling (once)")``, which takes the
postfix's place until the next update).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

DELAY_S = 3.0  # show the progress once a run has taken this long
BAR_EVERY_S = 0.25  # the bar's redraw interval
LOG_EVERY_S = 30.0  # mode "log": one line per this many seconds
# tqdm's default bar with our ETA (the postfix) in place of its own remaining time and rate
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"
LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"


def progress_mode(setting: Any) -> str:
    """tracking.progress: true -> bar, false -> off, auto -> bar on a terminal, else log."""
    s = str(setting).lower()
    if s == "true":
        return "bar"
    if s == "false":
        return "off"
    return "bar" if sys.stderr.isatty() else "log"


class Progress:
    """Progress of a run of ``total`` GD steps with ``n_log_steps`` log steps, shown as
    ``mode`` says (see the module docstring). Call :meth:`update` with the step reached and
    :meth:`close` at the end, however the loop ends."""

    def __init__(self, total: int, label: str, mode: str, n_log_steps: int = 0) -> None:
        self.total, self.label, self.mode = max(total, 1), label, mode
        self.start = self.last = time.monotonic()
        self.shown = False  # status() drew the bar before tqdm's delay
        self.n_log_steps, self.n_logged, self.log_work_s = n_log_steps, 0, 0.0
        self.base_step, self.base_gd_s = 0, 0.0
        self.bar, self.file = None, sys.stderr
        if mode == "bar":
            # the terminal's size, 80 x 24 where it reports none (a pty of size 0 x 0, where
            # tqdm would draw nothing)
            columns, lines = shutil.get_terminal_size()
            self.bar = tqdm(
                total=self.total,
                desc=label,
                file=self.file,
                delay=DELAY_S,
                mininterval=BAR_EVERY_S,
                bar_format=BAR_FORMAT,
                ncols=columns,
                nrows=lines,
                leave=True,
            )

    def _gd_seconds(self, now: float) -> float:
        """Wall time so far spent outside log-step work (GD steps, compilation)."""
        return now - self.start - self.log_work_s

    def log_step_done(self, seconds: float) -> None:
        """A log step's measurements took `seconds` (left out of the step rate)."""
        self.log_work_s += seconds
        self.n_logged += 1

    def restart_rate(self, step: int) -> None:
        """Measure the step rate from here on (after a one-time cost such as compilation)."""
        self.base_step, self.base_gd_s = step, self._gd_seconds(time.monotonic())

    def eta(self, step: int, now: float) -> float:
        """Seconds left (NaN before any step was timed); see the module docstring."""
        steps_timed = step - self.base_step
        gd_s = self._gd_seconds(now) - self.base_gd_s
        if steps_timed <= 0 or gd_s <= 0:
            return float("nan")
        left_logs = max(self.n_log_steps - self.n_logged, 0)
        per_log = self.log_work_s / self.n_logged if self.n_logged else 0.0
        return (self.total - step) * gd_s / steps_timed + left_logs * per_log

    def _eta_text(self, step: int, now: float) -> str:
        eta = self.eta(step, now)
        return "ETA " + ("?" if math.isnan(eta) else tqdm.format_interval(eta))

    def status(self, text: str) -> None:
        """Show `text` now (e.g. "compiling (once)" before a long one-time step)."""
        if self.mode == "log":
            log.info("%s: %s", self.label, text)
        elif self.bar is not None:
            self.shown = True
            self.bar.set_postfix_str(text, refresh=True)  # drawn now, before tqdm's delay

    def update(self, step: int) -> None:
        """The run reached `step`."""
        now = time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix_str(self._eta_text(step, now), refresh=False)
            self.bar.update(step - self.bar.n)  # tqdm redraws after its delay and interval
        elif self.mode == "log" and now - self.start >= DELAY_S and now - self.last >= LOG_EVERY_S:
            self.last = now
            line = tqdm.format_meter(
                step,
                self.total,
                now - self.start,
                prefix=self.label,
                bar_format=LOG_FORMAT,
                postfix=self._eta_text(step, now),
            )
            log.info("%s", line)

    def close(self, step: int) -> None:
        """End the bar's line at `step` (tqdm's close, which draws nothing for a run that
        ended before its delay; a line that status() drew is ended here)."""
        if self.bar is None:
            return
        self.update(step)
        never_drawn = self.bar.last_print_t < self.bar.start_t + self.bar.delay
        if self.shown and never_drawn:
            self.bar.refresh()
            self.file.write("\n")
            self.file.flush()
        self.bar.close()
