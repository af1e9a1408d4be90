"""When a strategy acts: once before training, and/or after some optimizer steps during training.

A schedule is a small object a strategy builds from its config ([`Strategy.schedule`]); the training callback and the
controller ask it, after every optimizer step, whether a reset is due. Schedules that remember what they did (which
epochs already fired) save it in ``state_dict``, checkpointed with the training run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class Schedule:
    """Acts once before training and never during it (the one-shot restore).

    Attributes:
        before_training: whether the strategy acts once before the first optimizer step.
    """

    before_training: bool = True

    @property
    def periodic(self) -> bool:
        """Whether it ever acts during training."""
        return False

    def due(self, *, step: int, epoch: float) -> bool:
        """Whether a reset is due after optimizer step ``step`` (1-based) at ``epoch``."""
        return False

    def fired(self, *, step: int, epoch: float) -> None:
        """Called when the reset due at ``step`` is planned."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` returned."""


OneShot = Schedule


@dataclass(kw_only=True)
class EveryNSteps(Schedule):
    """Acts every ``n`` optimizer steps (and once before training when ``before_training``).

    Example:

    ```python
    >>> from hf_plasticity.core.schedules import EveryNSteps
    >>> [step for step in range(1, 10) if EveryNSteps(n=3).due(step=step, epoch=0.0)]
    [3, 6, 9]
    ```
    """

    n: int = 1

    @property
    def periodic(self) -> bool:
        return True

    def due(self, *, step: int, epoch: float) -> bool:
        return step > 0 and step % self.n == 0


def every_n_steps(n: int | None) -> Schedule:
    """Once before training, and every ``n`` optimizer steps when ``n`` is set."""
    return Schedule() if n is None else EveryNSteps(n=n)


@dataclass(kw_only=True)
class EveryStep(EveryNSteps):
    """Asked after every optimizer step; the strategy decides from its own running state whether anything is due
    (continual backprop: the units whose accumulated replacement count reached one)."""

    n: int = 1
    before_training: bool = False


@dataclass(kw_only=True)
class AtEpochs(Schedule):
    """Acts once at each of the given (fractional) epochs, never twice for one epoch, also across a resume.

    Example:

    ```python
    >>> from hf_plasticity.core.schedules import AtEpochs
    >>> schedule = AtEpochs(epochs=[1.0, 2.0])
    >>> schedule.due(step=10, epoch=1.0), schedule.fired(step=10, epoch=1.0), schedule.due(step=11, epoch=1.1)
    (True, None, False)
    ```
    """

    epochs: list[float] = field(default_factory=list)
    before_training: bool = False
    done: list[float] = field(default_factory=list)

    @property
    def periodic(self) -> bool:
        return True

    def pending(self, epoch: float) -> list[float]:
        """The epochs reached at ``epoch`` that have not fired yet."""
        return [e for e in self.epochs if e <= epoch + 1e-9 and e not in self.done]

    def due(self, *, step: int, epoch: float) -> bool:
        return bool(self.pending(epoch))

    def fired(self, *, step: int, epoch: float) -> None:
        self.done.extend(self.pending(epoch))

    def state_dict(self) -> dict[str, Any]:
        return {"done": list(self.done)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = [float(e) for e in state.get("done", [])]
