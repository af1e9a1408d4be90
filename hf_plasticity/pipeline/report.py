"""What a restore did: per tensor the entries re-initialized and their share, totals and wall time."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..core.architectures import get_layout
from ..core.checkpoint_names import checkpoint_names, module_checkpoint_name
from ..core.recipe import FineTuneRecipe
from ..core.record import RestoreRecord, overall_numbers


@dataclass
class TensorRecord:
    """What a restore wrote into one tensor: entries re-initialized (fresh draws or, for shrink & perturb and DASH,
    new values computed from the old ones) and entries edited (zeroed outgoing weights of a reset unit, a bias
    corrected for it: writes that keep the function, not counted as re-initialized)."""

    name: str
    block: int | None
    numel: int
    reinitialized: int
    kind: str = "parameter"
    edited: int = 0

    @property
    def share(self) -> float:
        return self.reinitialized / self.numel if self.numel else 0.0


@dataclass
class PlasticityReport:
    """The report returned by [`prepare_pretrained`].

    Attributes:
        strategy: the strategy name.
        config: the config as a dict.
        tensors: one record per touched tensor, in model order (a tensor tied under several names once, under its
            first name in the model).
        total_parameters: number of parameter entries in the model.
        seconds: wall time of the restore (planning and writing).
        diagnostics: optional diagnostics before/after the restore (filled when diagnostics exist).
        details: what the strategy decided beyond its config (for `"auto"`: the blocks it chose and why).
        redrawn: the parameters replaced by fresh draws, by name: ``{"whole": [...], "partial": [...]}``; a name is a
            module (every parameter under it re-drawn whole) or a parameter. Edits that keep part of the old values
            (shrink & perturb, DASH) are not re-draws. Read by [`plasticity_param_groups`] to give re-drawn
            parameters their own learning rate.
        blocks: the backbone's blocks in depth order, by the names their weights have in the checkpoint
            (``vit.encoder.layer.3``: ``save_pretrained`` writes transformers' original key names, not the in-memory
            ``vit.layers.3``).
        checkpoint_names: in-memory module name -> checkpoint name, for the modules this report names where the two
            differ (what [`by_block`] and [`one_line`] show).
        recipe: the [`FineTuneRecipe`] recorded on the model before this restore ([`recommend_recipe`], read on the
            checkpoint before the restore, as it asks), kept in the new record; None when there was none. A restore
            does not change a recipe's rates: [`plasticity_param_groups`] with it gives the re-drawn parameters the
            backbone's rate, none of their own.

    Example:

    ```python
    >>> from torch import nn
    >>> from hf_plasticity import SelectiveReinitConfig, prepare_pretrained
    >>> model = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 2))
    >>> report = prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", fraction=0.1))
    >>> report.total_reinitialized, report.record().strategy
    (2000, 'selective')
    ```
    """

    strategy: str
    config: dict[str, Any]
    tensors: list[TensorRecord]
    total_parameters: int
    seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    redrawn: dict[str, list[str]] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    checkpoint_names: dict[str, str] = field(default_factory=dict)
    recipe: FineTuneRecipe | None = None

    @property
    def total_reinitialized(self) -> int:
        """Re-initialized parameter entries (buffers such as BatchNorm statistics are listed but not counted)."""
        return sum(t.reinitialized for t in self.tensors if t.kind == "parameter")

    @property
    def share(self) -> float:
        """Re-initialized entries as a share of all parameter entries of the model."""
        return self.total_reinitialized / self.total_parameters if self.total_parameters else 0.0

    def by_block(self) -> dict[str, int]:
        """Re-initialized entries per backbone block, keyed by the block's name in the checkpoint (its index when the
        names are unknown); tensors outside every block are counted under the checkpoint name of their module (e.g.
        ``"vit.layernorm"``, the final norm)."""
        counts: dict[str, int] = {}
        for record in self.tensors:
            if record.kind != "parameter":
                continue
            if record.block is None:
                key = self._shown(record.name.rsplit(".", 1)[0])
            else:
                key = self.blocks[record.block] if record.block < len(self.blocks) else str(record.block)
            counts[key] = counts.get(key, 0) + record.reinitialized
        return counts

    def _shown(self, name: str) -> str:
        """The checkpoint name of in-memory module ``name``."""
        return self.checkpoint_names.get(name, name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_reinitialized"] = self.total_reinitialized
        data["share"] = self.share
        return data

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def record(self) -> RestoreRecord:
        """The typed record of this restore, as [`prepare_pretrained`] writes it into ``model.config``."""
        return RestoreRecord(
            strategy=self.strategy,
            config=dict(self.config),
            reinitialized_per_block=self.by_block(),
            total_reinitialized=self.total_reinitialized,
            total_parameters=self.total_parameters,
            redrawn={key: list(names) for key, names in (self.redrawn or {"whole": [], "partial": []}).items()},
            blocks=list(self.blocks),
            details=dict(self.details),
            diagnostics={
                key: overall_numbers(value) for key, value in (self.diagnostics or {}).items() if value is not None
            },
            recipe=self.recipe,
        )

    def summary(self) -> dict[str, Any]:
        """The record as the dict written into ``model.config.plasticity`` (``self.record().to_dict()``)."""
        return self.record().to_dict()

    def check_belongs_to(self, model: Any) -> None:
        """Raises a `ValueError` when this report was not made on ``model`` (another parameter count, or a tensor
        the model does not have): a card or record built from it would describe another model."""
        names = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        total = sum(p.numel() for p in model.parameters())
        unknown = [t.name for t in self.tensors if t.name not in names]
        if unknown or total != self.total_parameters:
            detail = f"it names {unknown[0]!r}" if unknown else f"it counts {self.total_parameters:,} parameters"
            raise ValueError(
                f"This report was made on another model: {detail}, but {type(model).__name__} has "
                f"{total:,} parameters{' and no such tensor' if unknown else ''}. Pass the report of this model's "
                "restore, or none (the model's own record is used)."
            )

    def plot(self, path: str | None = None, *, title: str | None = None):
        """The plasticity picture per backbone block, before (grey, dashed) and after (blue, solid) the restore, the
        re-drawn blocks shaded ([`hf_plasticity.diagnostics.figure.plot_plasticity`]): saved as a PNG at ``path``
        (returned), or the matplotlib figure when ``path`` is None.

        Raises:
            ValueError: when the restore measured no diagnostics (restore with ``data=`` to get them).
        """
        from ..diagnostics.figure import plot_plasticity

        after = (self.diagnostics or {}).get("after")
        if after is None or not hasattr(after, "per_block"):
            raise ValueError(
                "This report holds no diagnostics to draw: restore with `data=` (diagnostics are measured before "
                "and after the restore when data is given), or draw `diagnose(model, data).plot()`."
            )
        return plot_plasticity(after, before=self.diagnostics.get("before"), redrawn=self.redrawn, path=path,
                               title=title)  # fmt: skip

    def one_line(self) -> str:
        """What was done, how much and how long, in one line (what the training callback prints).

        Modules are named as in the checkpoint. Example: ``reinit_layers re-initialized 8,608 of 9,187 parameter
        entries (93.70%) in 0.01s: vit.encoder.layer.1, vit.layernorm``.
        """
        line = (
            f"{self.strategy} re-initialized {self.total_reinitialized:,} of {self.total_parameters:,} parameter "
            f"entries ({self.share:.2%}) in {self.seconds:.2f}s"
        )
        redrawn = self.redrawn or {"whole": [], "partial": []}
        whole = [self._shown(name) for name in redrawn["whole"]]
        partial = redrawn["partial"]
        if whole:
            line += ": " + (", ".join(whole) if len(whole) <= 4 else f"{len(whole)} modules re-drawn whole")
        if partial:
            line += ("; " if whole else ": ") + f"{len(partial)} tensors re-drawn in part"
        if self.total_reinitialized == 0:
            line += " (nothing to re-initialize: the model is left as it was)"
        if self.details:
            line += " [" + ", ".join(f"{k}={_short(v)}" for k, v in self.details.items()) + "]"
        return line

    def __str__(self) -> str:
        width = max([len("tensor")] + [len(t.name) for t in self.tensors])
        lines = [
            f"Plasticity restore: strategy={self.strategy}, {self.total_reinitialized:,} of "
            f"{self.total_parameters:,} parameter entries re-initialized ({self.share:.2%}) in {self.seconds:.2f}s",
            f"{'tensor':<{width}}  {'block':>5}  {'entries':>10}  {'reset':>10}  {'share':>7}"
            + ("  edited (zeroed or corrected)" if any(t.edited for t in self.tensors) else ""),
        ]
        for t in self.tensors:
            block = "-" if t.block is None else str(t.block)
            edited = f"  {t.edited:>10,}" if t.edited else ""
            lines.append(
                f"{t.name:<{width}}  {block:>5}  {t.numel:>10,}  {t.reinitialized:>10,}  {t.share:>7.2%}{edited}"
            )
        if self.details:
            lines.append("Decided: " + ", ".join(f"{key}={value}" for key, value in self.details.items()))
        lines.extend(self._diagnostics_lines())
        return "\n".join(lines)

    def _diagnostics_lines(self) -> list[str]:
        """One line per overall diagnostic, before -> after (when diagnostics were measured)."""
        before, after = self.diagnostics.get("before"), self.diagnostics.get("after")
        if before is None:
            return []

        def value(report: Any, key: str) -> Any:
            return None if report is None else (report.get(key) if isinstance(report, dict) else getattr(report, key))

        def fmt(x: Any, key: str) -> str:
            if x is None:
                return "-"
            if key in ("dormant_ratio", "insignificant_grad_share"):
                return f"{x:.1%}"
            return str(x) if isinstance(x, int) else f"{x:.4g}"

        lines = ["Diagnostics (before -> after):"]
        keys = (
            "dormant_ratio",
            "insignificant_grad_share",
            "mean_abs_grad",
            "mean_abs_weight",
            "effective_rank",
            "stable_rank",
        )
        for key in keys:
            lines.append(f"  {key:<25} {fmt(value(before, key), key):>10} -> {fmt(value(after, key), key)}")
        return lines


def shown_names(model: nn.Module, report: PlasticityReport) -> tuple[list[str], dict[str, str]]:
    """For ``report`` on ``model``: the checkpoint names of the backbone's blocks, and in-memory -> checkpoint name of
    every module the report names where the two differ (see [`checkpoint_names`])."""
    names = checkpoint_names(model)
    blocks = [module_checkpoint_name(names, block) for block in get_layout(model).blocks]
    modules = {t.name.rsplit(".", 1)[0] for t in report.tensors} | set((report.redrawn or {}).get("whole", []))
    shown = {module: module_checkpoint_name(names, module) for module in modules}
    return blocks, {module: name for module, name in shown.items() if name != module}


def json_details(details: Any, strategy: str) -> dict[str, Any]:
    """A strategy's decisions (``Plan.details``) as the JSON data the record in ``config.json`` holds: numpy scalars
    and 0-d tensors (``np.int64(3)``, ``scores.max()``) become Python numbers, also inside lists and dicts; tuples
    become lists.

    Example:

    ```python
    >>> import torch
    >>> from hf_plasticity.pipeline.report import json_details
    >>> json_details({"best": torch.tensor(2), "scores": (0.5, torch.tensor(0.25))}, "custom")
    {'best': 2, 'scores': [0.5, 0.25]}
    ```

    Raises:
        TypeError: naming ``strategy`` and the key, when ``details`` is not a dict or a value is not JSON data
            (strings, numbers, booleans, None, lists and dicts of them) after that conversion: saving the record
            would fail after the restore. None reads as no decisions.
    """
    if details is None:
        return {}
    if not isinstance(details, dict):
        raise TypeError(
            f"Strategy {strategy!r} returned a Plan whose `details` is a {type(details).__name__}: it must be a dict "
            "of JSON data (strings, numbers, booleans, None, lists and dicts of them), e.g. {'num_blocks': 2}."
        )
    plain = {}
    for key, value in details.items():
        plain[key] = _plain(value)
        try:
            json.dumps({key: plain[key]})
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"Strategy {strategy!r} decided {key!r} = {_short(value)[:80]} ({error}): its `Plan.details` go into "
                "the record in config.json, so they must be JSON data (strings, numbers, booleans, None, lists and "
                "dicts of them; numpy scalars and 0-d tensors are converted). Convert it in the strategy's `plan` "
                "(e.g. `value.tolist()`); nothing was changed."
            ) from None
    return plain


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and 0-d tensors as Python numbers, tuples as lists (recursively)."""
    if isinstance(value, dict):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if not isinstance(value, (str, bytes)) and hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def _short(value: Any) -> str:
    """A decision's value for one line: long lists are summarized."""
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} values]"
    return str(value)
