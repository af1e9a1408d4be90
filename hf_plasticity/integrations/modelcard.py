"""The model card of a restored checkpoint: built from the shipped Jinja template with `huggingface_hub.ModelCard`,
and updated idempotently (only the library's section, between marker comments, is ever replaced).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from ..core.checkpoint_names import checkpoint_names, module_checkpoint_name
from ..core.config import available_strategies, get_config_class
from ..core.recipe import FineTuneRecipe
from ..core.record import NO_RESTORE, RestoreRecord
from ..core.unwrap import unwrap_model
from ..core.version import __version__
from ..pipeline.report import PlasticityReport

TEMPLATE_PATH = Path(__file__).parent / "templates" / "modelcard_template.md"
SECTION_START = "<!-- hf-plasticity:start -->"
SECTION_END = "<!-- hf-plasticity:end -->"
LIBRARY_NAME = "hf-plasticity"
PIPELINE_TAG = "image-classification"
#: The tag of a card whose record holds a fine-tuning recipe.
RECIPE_TAG = "fine-tuning-recipe"
_SECTION_RE = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END), re.DOTALL)
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def default_base_model(model: nn.Module | None) -> str | None:
    """The Hub id the model was loaded from (``config._name_or_path``), or None for a local path or no id."""
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    return name if is_hub_id(name) else None


def is_hub_id(name: Any) -> bool:
    """Whether ``name`` looks like a Hub repository id and is not an existing local path."""
    return isinstance(name, str) and bool(_REPO_ID_RE.match(name)) and not os.path.exists(name)


def _strategy_description(strategy: str) -> str:
    try:
        doc = get_config_class(strategy).__doc__ or ""
    except ValueError:
        doc = ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ").replace("``", "`").strip()
    return first or f"the `{strategy}` strategy."


def _parameters(config: dict[str, Any], details: dict[str, Any]) -> list[tuple[str, str]]:
    """Config values (a `None` the strategy resolved shows the value it used), then what it decided on its own."""
    skip = {"strategy", "hf_plasticity_version"}
    rows = []
    for key, value in sorted(config.items()):
        if key in skip:
            continue
        resolved = value is None and key in details
        rows.append((key, json.dumps(details[key] if resolved else value)))
    rows.extend((f"{key} (decided)", json.dumps(value)) for key, value in details.items() if key not in config)
    return rows


def _block_rows(record: RestoreRecord, model: nn.Module | None) -> list[dict[str, str]]:
    """One row per block, then one per module outside the blocks, every module by the name its weights have in the
    checkpoint. Records of schema 1 key blocks by index; newer ones by name (their ``blocks`` list gives the index)."""
    blocks = list(record.blocks)
    sizes: dict[str, int] = {}
    if model is not None:
        from ..core.architectures import get_layout

        layout = get_layout(model)
        names = checkpoint_names(model)
        blocks = blocks or [module_checkpoint_name(names, block) for block in layout.blocks]
        for param_name, param in model.named_parameters():
            index = layout.block_of(param_name)
            keys = [str(index), blocks[index]] if index is not None else _prefixes(names.get(param_name, param_name))
            for key in keys:
                sizes[key] = sizes.get(key, 0) + param.numel()

    def index_of(key: str) -> int | None:
        return int(key) if key.isdigit() else blocks.index(key) if key in blocks else None

    def order(key: str) -> tuple[bool, int, str]:
        index = index_of(key)
        return (index is None, index or 0, key)

    rows = []
    for key in sorted(record.reinitialized_per_block, key=order):
        entries = record.reinitialized_per_block[key]
        index = index_of(key)
        if index is not None:
            block, module = str(index), (f"`{blocks[index]}`" if index < len(blocks) else "–")
        else:  # a module outside the blocks (older records: "-")
            block, module = "outside the blocks", ("final norm, embeddings, head" if key == "-" else f"`{key}`")
        share = f"{entries / sizes[key]:.2%}" if sizes.get(key) else "–"
        rows.append({"block": block, "module": module, "entries": f"{entries:,}", "share": share})
    return rows


def _prefixes(name: str) -> list[str]:
    """Every module prefix of a parameter name: ``a.b.weight`` -> ``["a", "a.b"]``."""
    parts = name.split(".")[:-1]
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _diagnostic_rows(diagnostics: dict[str, dict[str, float]], limit: int = 40) -> list[dict[str, str]]:
    """The record's overall numbers side by side, before and after the restore."""
    if not diagnostics:
        return []
    before, after = diagnostics.get("before", {}), diagnostics.get("after", {})
    rows = []
    for metric in list(dict.fromkeys([*before, *after]))[:limit]:
        rows.append(
            {
                "metric": f"`{metric}`",
                "before": f"{before[metric]:.4g}" if metric in before else "–",
                "after": f"{after[metric]:.4g}" if metric in after else "–",
            }
        )
    return rows


def _periodic_rows(record: RestoreRecord) -> list[dict[str, str]]:
    """One row per periodic strategy and config of the record: its resets, entries and non-default parameters."""
    rows = []
    for entry in record.periodic:
        shown = ", ".join(f"`{key}={value}`" for key, value in _parameters(entry.config, {}) if value != "null")
        rows.append(
            {
                "strategy": entry.strategy,
                "resets": f"{entry.resets:,}",
                "entries": f"{entry.total_reinitialized:,}",
                "parameters": shown or "–",
            }
        )
    return rows


def _recipe_view(recipe: FineTuneRecipe | None) -> dict[str, Any] | None:
    """The recipe's line and table rows for the card, or None."""
    if recipe is None:
        return None
    rows = [("backbone learning rate", f"{recipe.backbone_lr:.3g}"), ("head learning rate", f"{recipe.head_lr:.3g}")]
    rows.append(("re-draw", "none (the rates were measured on fine-tunes without one)"))
    if recipe.last_over_peak is not None:
        probe = ", ".join("–" if a is None else f"{a:.3f}" for a in recipe.block_probe_accuracy)
        cost = f"{recipe.samples} images, {recipe.seconds:.2f} s"
        if recipe.epoch_share is not None:
            cost += f", {recipe.epoch_share:.1%} of an epoch's images"
        rows += [
            ("budget", f"`{recipe.budget}`"),
            ("model family", f"`{recipe.family}`"),
            ("last / peak probe accuracy", f"{recipe.last_over_peak:.4f} (threshold {recipe.threshold:.4f})"),
            ("probe accuracy per block", probe),
            ("diagnostic pass", cost),
        ]
    return {"line": recipe.describe(), "rows": rows}


def card_metadata(summary: RestoreRecord, base_model: str | None = None) -> dict[str, Any]:
    """The card's metadata: library, base model, pipeline tag and tags (plasticity, the strategy, the periodic
    strategies, and ``fine-tuning-recipe`` when the record holds a recipe)."""
    strategy = [] if summary.strategy == NO_RESTORE else [summary.strategy]
    strategy += [name for name in dict.fromkeys(entry.strategy for entry in summary.periodic) if name not in strategy]
    recipe = [] if summary.recipe is None else [RECIPE_TAG]
    data: dict[str, Any] = {
        "library_name": LIBRARY_NAME,
        "pipeline_tag": PIPELINE_TAG,
        "tags": ["plasticity", *strategy, "hf-plasticity", *recipe],
    }
    if base_model:
        data["base_model"] = base_model
    return data


def build_model_card(
    summary: RestoreRecord | PlasticityReport,
    *,
    model: nn.Module | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    figure: str | None = None,
    learning_rates: list[dict[str, Any]] | None = None,
):
    """Renders a fresh model card for a restored checkpoint from the shipped template.

    Args:
        summary: the restore's [`PlasticityReport`], or the [`RestoreRecord`] read from a checkpoint.
        model: the restored model (or a wrapper of it: the model it wraps is read); when given, the per-block table
            names each block's module and its share.
        base_model: the Hub id the model was restored from (default: the model's ``_name_or_path`` when it is a
            Hub id).
        repo_id: the id the card shows in its loading snippet (default: a placeholder path).
        model_name: the card's title (default: the last part of ``repo_id``).
        figure: the relative path of the plasticity figure saved next to the card (shown in it), or None.
        learning_rates: the optimizer groups of a fine-tuning run (``name``, ``lr``, ``weight_decay``,
            ``parameters``), shown in a table; None or empty: no table.

    Returns:
        `huggingface_hub.ModelCard`

    Example:

    ```python
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity import prepare_pretrained
    >>> from hf_plasticity.integrations.modelcard import build_model_card
    >>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3))
    >>> card = build_model_card(prepare_pretrained(model), model=model, repo_id="me/vit-restored")
    >>> card.data.library_name, card.data.tags[:2]
    ('hf-plasticity', ['plasticity', 'reinit_layers'])
    ```
    """
    from huggingface_hub import ModelCard, ModelCardData

    if isinstance(summary, PlasticityReport):
        summary = summary.record()
    model = None if model is None else unwrap_model(model)
    base_model = base_model or default_base_model(model)
    repo_id = repo_id or "path/to/this/checkpoint"
    model_name = model_name or repo_id.rstrip("/").split("/")[-1]
    return ModelCard.from_template(
        ModelCardData(**card_metadata(summary, base_model)),
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        repo_id=repo_id,
        section_start=SECTION_START,
        section_end=SECTION_END,
        library_version=__version__,
        restored=summary.strategy != NO_RESTORE,
        recipe=_recipe_view(summary.recipe),
        strategy=summary.strategy,
        strategy_description=_strategy_description(summary.strategy),
        total_reinitialized=f"{summary.total_reinitialized:,}",
        total_parameters=f"{summary.total_parameters:,}",
        share=f"{summary.share:.2%}",
        parameters=_parameters(summary.config, summary.details),
        blocks=_block_rows(summary, model),
        diagnostics=_diagnostic_rows(summary.diagnostics),
        periodic=_periodic_rows(summary),
        figure=figure,
        learning_rates=[
            {
                **row,
                "lr": f"{row['lr']:.3g}",
                "weight_decay": f"{row['weight_decay']:g}",
                "parameters": f"{row['parameters']:,}",
            }
            for row in learning_rates or []
        ],
    )


def library_section(card) -> str:
    """The library's section of a card (from the start marker to the end marker, both included)."""
    match = _SECTION_RE.search(card.text)
    if match is None:
        raise ValueError("The card has no hf-plasticity section.")
    return match.group(0)


def merge_into(existing, fresh):
    """Puts ``fresh``'s library section and metadata into ``existing``, keeping the user's own text and metadata.

    The section between the marker comments is replaced when ``existing`` has one, else appended at the end. Tags
    are merged, except the library's own that ``fresh`` no longer has (a strategy name, ``fine-tuning-recipe``): a
    card whose new record has another strategy or no recipe loses them. ``library_name``, ``base_model`` and
    ``pipeline_tag`` are set only where ``existing`` has none (a card written by `Trainer` says ``library_name:
    transformers``, and that stays).

    Returns:
        `huggingface_hub.ModelCard`: ``existing``, updated in place.
    """
    section = library_section(fresh)
    if _SECTION_RE.search(existing.text):
        existing.text = _SECTION_RE.sub(lambda _: section, existing.text, count=1)
    else:
        existing.text = existing.text.rstrip("\n") + "\n\n" + section + "\n"
    new_tags = list(fresh.data.tags or [])
    owned = {*available_strategies(), RECIPE_TAG}
    tags = [t for t in existing.data.tags or [] if t not in owned or t in new_tags]
    existing.data.tags = tags + [t for t in new_tags if t not in tags]
    for key in ("library_name", "base_model", "pipeline_tag"):
        if not getattr(existing.data, key, None) and getattr(fresh.data, key, None):
            setattr(existing.data, key, getattr(fresh.data, key))
    return existing


def card_paragraphs(text: str) -> list[str]:
    """The paragraphs of a card's text (blocks between blank lines), stripped."""
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def outside_section(text: str) -> tuple[str, str]:
    """A card's text before the library's section and after it (all of it before, when it has none)."""
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start < 0 or end < start:
        return text, ""
    return text[:start], text[end + len(SECTION_END) :]


def add_local_text(card: Any, local: Any, library: set[str]) -> None:
    """Adds to ``card`` (the repository's, updated) the paragraphs of ``local`` outside the library's section that
    it lacks and the library did not write: those before the section go right before it, the others at the end.
    Metadata keys ``card`` lacks are taken from ``local``, and its tags are added."""
    have = set(card_paragraphs(card.text))
    before, after = ([p for p in card_paragraphs(part) if p not in have and p not in library]
                     for part in outside_section(local.text))  # fmt: skip
    if before:
        start = card.text.index(SECTION_START)
        card.text = card.text[:start].rstrip("\n") + "\n\n" + "\n\n".join(before) + "\n\n" + card.text[start:]
    if after:
        card.text = card.text.rstrip("\n") + "\n\n" + "\n\n".join(after) + "\n"
    present = card.data.to_dict()
    for key, value in local.data.to_dict().items():
        if key not in present:
            setattr(card.data, key, value)
    tags = list(card.data.tags or [])
    card.data.tags = tags + [t for t in local.data.tags or [] if t not in tags] or None
