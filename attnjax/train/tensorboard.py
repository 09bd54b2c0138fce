"""An optional TensorBoard event writer beside ``fit``'s JSON lines (tensorboardX: numpy and protobuf, no
TensorFlow).

``flax.metrics.tensorboard`` needs TensorFlow; ``tensorboardX`` writes the same event files with two small
dependencies. It is the ``tensorboard`` extra (``pip install -e ".[tensorboard]"``; ``dev`` includes it).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax

SCALAR_PREFIX = "train/"  # TensorBoard groups the scalars of one run under this tag prefix


class TensorBoardWriter:
    """Writes each logged record's numbers as TensorBoard scalars ``train/<key>`` at its ``step``.

    In a multi-process job only process 0 writes (every process logs the same replicated metrics).

    Args:
        logdir: directory of the event files (created if missing).

    Raises:
        ImportError: tensorboardX is not installed (the message says how to install it).
    """

    def __init__(self, logdir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as err:
            raise ImportError("fit(tensorboard_dir=...) needs tensorboardX: pip install tensorboardX "
                              "(or the attnjax extra: pip install -e \".[tensorboard]\")") from err
        self.logdir = os.fspath(logdir)
        self._writer = SummaryWriter(self.logdir) if jax.process_index() == 0 else None

    def write(self, record: Mapping[str, Any]) -> None:
        """One log record: ``{"step": int, name: number, ...}``; non-numeric values are skipped."""
        if self._writer is None:
            return
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(SCALAR_PREFIX + key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
