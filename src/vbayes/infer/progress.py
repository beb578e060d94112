"""The terminal progress bar of a driver that runs its steps in compiled chunks (ADVI)."""

from __future__ import annotations

import numpy as np


class ChunkProgress:
    """A rich progress bar updated between compiled chunks of steps, with the chunk's mean objective (no-op when
    disabled)."""

    def __init__(self, enabled: bool, total: int, name: str):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("advi {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ELBO {task.fields[elbo]}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(name, total=total, elbo="…")

    def update(self, n: int, values: np.ndarray) -> None:
        if self.bar is not None:
            finite = values[np.isfinite(values)]
            self.bar.update(self.task, advance=n, elbo=f"{finite.mean():.3f}" if finite.size else "nan")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
