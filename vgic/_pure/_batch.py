"""The batch world-switch forms every pure-Python kernel with per-vCPU
``load``/``put``/``enter``/``exit`` has (the twins of the C loops)."""
from __future__ import annotations

from typing import Any

from ..ich import vcpu_indices


class BatchSteps:
    """``*_batch(ids)``: the per-vCPU step for each checked index, in order."""

    records: Any

    def _ids(self, ids: Any) -> list[int]:
        out: list[int] = vcpu_indices(ids, len(self.records)).tolist()
        return out

    def load_batch(self, ids: Any) -> None:
        for i in self._ids(ids):
            self.load(i)  # type: ignore[attr-defined]

    def put_batch(self, ids: Any) -> None:
        for i in self._ids(ids):
            self.put(i)  # type: ignore[attr-defined]

    def enter_batch(self, ids: Any) -> None:
        for i in self._ids(ids):
            self.enter(i)  # type: ignore[attr-defined]

    def exit_batch(self, ids: Any) -> None:
        for i in self._ids(ids):
            self.exit(i)  # type: ignore[attr-defined]
