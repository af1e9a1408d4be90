"""Save and push restored checkpoints: a normal transformers checkpoint (safetensors + ``config.json`` carrying the
``plasticity`` record), ``plasticity_config.json`` and a model card, in the spirit of huggingface_hub's
`ModelHubMixin`. Loading back needs nothing but transformers.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ..core.config import CONFIG_NAME, PlasticityConfig
from ..core.messages import first_line as one_line
from ..core.record import (
    MODEL_CONFIG_KEY,
    NO_RESTORE,
    RestoreRecord,
    check_report_is_current,
    read_record,
    restore_record,
)
from ..core.unwrap import unwrap_model
from ..core.validators import check_flag, check_number
from ..diagnostics.figure import FIGURE_NAME
from ..pipeline.report import PlasticityReport
from .atomic_save import check_save_directory, replace_folder
from .hub_http import redact, redacted_logs, run_bounded, secrets_of
from .modelcard import (
    add_local_text,
    build_model_card,
    card_paragraphs,
    merge_into,
    outside_section,
)

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
DEFAULT_COMMIT_MESSAGE = "Upload model restored with hf-plasticity"


class HubPushError(RuntimeError):
    """A push to the Hub failed; the message names the repository, the cause and the local folder kept."""


class HubUnreachableError(ValueError):
    """A Hub id was given, but the Hub cannot be reached (or is offline) and the files are not cached."""


def check_repo_id(repo_id: Any) -> None:
    """Raises a `ValueError` naming the problem unless ``repo_id`` is a valid ``namespace/name`` (or ``name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str):
        raise ValueError(f"`repo_id` must be a string 'namespace/name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`repo_id` {repo_id!r} is not a valid Hub repository id: {one_line(error)}") from error


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hub (``HF_ENDPOINT``) can be reached: False at once in offline mode, else one TCP connection try
    bounded by ``timeout`` (instead of the retries with back-off that a download makes before it gives up)."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlsplit(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def hub_access(repo_id: str, repo_type: str) -> dict[str, Any]:
    """Keyword arguments for loading ``repo_id`` (``"model"`` or ``"dataset"``) from the Hub: none when the Hub is
    reachable, ``local_files_only`` when it is not but the files are cached.

    Raises:
        HubUnreachableError: at once, when the Hub cannot be reached and nothing is cached.
    """
    if hub_reachable():
        return {}
    from huggingface_hub import constants, try_to_load_from_cache

    marker = "config.json" if repo_type == "model" else "README.md"
    if isinstance(try_to_load_from_cache(repo_id, marker, repo_type=repo_type), str):
        return {"local_files_only": True}
    offline = constants.HF_HUB_OFFLINE
    why = "the Hub is offline (HF_HUB_OFFLINE=1)" if offline else f"{redact(constants.ENDPOINT)} cannot be reached"
    raise HubUnreachableError(
        f"Cannot load {repo_type} {repo_id!r}: it is not a local directory, {why}, and it is not in the local cache."
    )


def _summary(model: nn.Module | None, report: PlasticityReport | None) -> RestoreRecord:
    """The record the files are built from: the model's (what ``config.json`` carries, its recipe included) with the
    report's diagnostics, else the report's. A report given with a model that has a record must be that record's
    restore ([`check_report_is_current`])."""
    record = restore_record(model) if model is not None else None
    if report is not None:
        made = report.record()
        if record is None:
            return made
        check_report_is_current(made, record)
        return dataclasses.replace(record, diagnostics=made.diagnostics or record.diagnostics)
    if record is None:
        raise ValueError(
            "This model carries no plasticity record: restore it with `prepare_pretrained` first, or pass the "
            "`report=` it returned."
        )
    return record


def _write_card(folder: Path, summary: RestoreRecord, **card_kwargs: Any):
    """Writes ``folder/README.md``, the card [`_card`] builds with ``card_kwargs``, and returns the card."""
    card = _card(folder, summary, **card_kwargs)
    card.save(folder / CARD_NAME)
    return card


def _card(
    folder: Path,
    summary: RestoreRecord,
    *,
    model: nn.Module | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    existing: Any = None,
    model_name: str | None = None,
    learning_rates: list[dict[str, Any]] | None = None,
):
    """The card for ``folder`` (read, never written): a fresh card, or ``existing`` (else the card already in the
    folder) with only the library's section and metadata updated. The card's title is ``model_name``, else the
    repository's name, else the folder's."""
    from huggingface_hub import ModelCard

    model_name = model_name or (None if repo_id else folder.resolve().name)
    figure = FIGURE_NAME if (folder / FIGURE_NAME).is_file() else None
    fresh = build_model_card(
        summary,
        model=model,
        base_model=base_model,
        repo_id=repo_id,
        model_name=model_name,
        figure=figure,
        learning_rates=learning_rates,
    )
    path = folder / CARD_NAME
    if existing is None and path.is_file():
        existing = ModelCard.load(path)
    return fresh if existing is None else merge_into(existing, fresh)


def save_restored(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    report: PlasticityReport | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    image_processor: Any = None,
    **save_kwargs: Any,
) -> Path:
    """Saves a restored model as a normal transformers checkpoint, with its plasticity config and a model card.

    Writes ``model.save_pretrained`` (safetensors weights and ``config.json``, which carries the ``plasticity``
    record written by [`prepare_pretrained`]), ``plasticity_config.json``, the image processor when given,
    ``plasticity.png`` (the diagnostics before and after, per block, when ``report`` measured them and matplotlib is
    installed) and ``README.md``, which shows the figure. A card already in the folder keeps its text: only the
    library's section (and its stale tags: an old strategy, ``fine-tuning-recipe``) is replaced; other files in the
    folder stay. The files a save owns ([`OWNED_FILES`]: weights, ``plasticity_config.json``, ``plasticity.png``)
    that this one does not write are removed, so nothing of an earlier save contradicts ``config.json``.

    The new checkpoint becomes visible in one step, so a crash or a ``kill -9`` at any moment leaves the complete
    old checkpoint or the complete new one: everything is written into a staging folder next to the target, which
    then trades places with the target in one ``rename`` system call. A folder that cannot be renamed (a mount point,
    e.g. a container volume) is updated from a staging folder inside it, committed by a journal; a save killed while
    its files are moved in is completed by the next save. Any staging folder a killed save left behind is recovered
    or removed by the next save into the same folder. Details: `hf_plasticity.integrations.atomic_save`.

    Args:
        model: a restored transformers model (anything with ``save_pretrained``).
        save_directory: the folder to write (created if needed); checked before anything is written (not a file,
            writable).
        report: the [`PlasticityReport`] of the restore; it adds the diagnostics to the card. The files are built
            from the record on the model (what ``config.json`` carries), so a report of an earlier restore (the model
            was restored again since, with ``force=True``) is refused with a `ValueError` before anything is
            written. When the model has no record yet, the report's summary is recorded on ``model.config`` so that
            ``config.json`` carries it (and taken off again if the save fails).
        base_model: the Hub id the model was restored from (default: the model's ``_name_or_path`` when it is a Hub
            id; a local path is never written as ``base_model``).
        repo_id: the repository id the card's snippet loads from (default: a placeholder path).
        image_processor: saved next to the weights when given, so `AutoImageProcessor.from_pretrained` works.
        save_kwargs: passed to ``model.save_pretrained`` (e.g. ``max_shard_size``).

    Returns:
        `Path`: the folder.

    Example:

    ```python
    >>> import tempfile
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity import PlasticityConfig, prepare_pretrained, save_restored
    >>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3))
    >>> report = prepare_pretrained(model, "reinit_layers")
    >>> folder = save_restored(model, tempfile.mkdtemp(), report=report)
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'config.json', 'model.safetensors', 'plasticity_config.json']
    >>> PlasticityConfig.from_pretrained(folder).strategy
    'reinit_layers'
    ```
    """
    return _save(
        model, save_directory, report=report, base_model=base_model, repo_id=repo_id, image_processor=image_processor,
        **save_kwargs,
    )[0]  # fmt: skip


def _save(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    report: PlasticityReport | None,
    base_model: str | None,
    repo_id: str | None,
    image_processor: Any,
    **save_kwargs: Any,
) -> tuple[Path, list[str]]:
    """[`save_restored`]; also returns the files it wrote (paths relative to the folder), which a push uploads."""
    if not hasattr(model, "save_pretrained"):
        raise TypeError(
            f"save_restored needs a transformers model (with `save_pretrained`), got {type(model).__name__}; "
            "save a plain torch module with `torch.save` instead."
        )
    if report is not None:
        report.check_belongs_to(unwrap_model(model))
    summary = _summary(model, report)
    folder = check_save_directory(save_directory)
    model_config = getattr(model, "config", None)
    record_it = report is not None and restore_record(model) is None and hasattr(model_config, "to_dict")
    previous = getattr(model_config, MODEL_CONFIG_KEY, _MISSING)
    if record_it:  # config.json must carry the record
        setattr(model_config, MODEL_CONFIG_KEY, report.summary())
    try:
        with replace_folder(folder, keep=_keeps, carry=(CARD_NAME,)) as staging:
            model.save_pretrained(staging, **save_kwargs)
            if image_processor is not None:
                image_processor.save_pretrained(staging)
            if report is not None and hasattr(report.diagnostics.get("after"), "per_block") and _can_plot():
                report.plot(staging / FIGURE_NAME)
            _write_plasticity_files(staging, summary, model=model, base_model=base_model, repo_id=repo_id,
                                    model_name=None if repo_id else folder.name)  # fmt: skip
            written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    except BaseException:  # any step, the commit of the folder included: the model's config is put back
        if record_it:
            _put_back(model_config, previous)
        raise
    return folder, written


_MISSING = object()


def _put_back(model_config: Any, previous: Any) -> None:
    """Gives ``model_config`` its ``plasticity`` entry as it was before a failed save (``_MISSING``: none)."""
    if previous is _MISSING:
        if hasattr(model_config, MODEL_CONFIG_KEY):
            delattr(model_config, MODEL_CONFIG_KEY)
    else:
        setattr(model_config, MODEL_CONFIG_KEY, previous)


#: Files of a previous save that a new one replaces or removes (weights, possibly in shards).
_WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json")
#: Every file a save owns: one it does not write again is stale (it would describe an earlier save), so it is removed
#: from the folder and, by a push, from the repository. ``README.md`` and ``config.json`` are written by every save.
OWNED_FILES = (*_WEIGHT_FILES, CONFIG_NAME, FIGURE_NAME)


def _owned(name: str) -> bool:
    """Whether ``name`` (a path relative to the checkpoint folder) is a file a save owns ([`OWNED_FILES`])."""
    return "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in OWNED_FILES)


def _keeps(name: str) -> bool:
    """Whether a file of the target folder that a new save did not write stays: all but the files a save owns."""
    return not _owned(name)


def _can_plot() -> bool:
    """Whether matplotlib (the ``plot`` extra) is installed: the figure is a bonus, never a reason to fail a save."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _write_plasticity_files(folder: Path, summary: RestoreRecord, **card_kwargs: Any) -> None:
    """``plasticity_config.json`` (not for a record without a restore: it has no strategy config, and one left by an
    earlier save is removed) and the library's section of ``README.md`` (kept text around it)."""
    if summary.strategy != NO_RESTORE:
        PlasticityConfig.from_dict(summary.config).save_pretrained(folder)
    else:
        (folder / CONFIG_NAME).unlink(missing_ok=True)
    _write_card(folder, summary, **card_kwargs)


def add_plasticity_files(
    folder: str | os.PathLike, model: nn.Module, *, learning_rates: list[dict[str, Any]] | None = None
) -> bool:
    """Adds ``plasticity_config.json`` and the library's card section to a folder a model was saved into by other
    means (the `Trainer`'s output folder and checkpoints: [`PlasticityTrainer`] calls this after every save and after
    `Trainer.create_model_card`, with its optimizer groups' ``learning_rates``). A card already there (the Trainer's)
    keeps its text.

    Returns:
        Whether anything was written (nothing when ``model`` carries no plasticity record).
    """
    record = restore_record(model)
    if record is None or not os.path.isdir(folder):
        return False
    _write_plasticity_files(Path(folder), record, model=model, learning_rates=learning_rates)
    return True


def _remote_card(api: Any, repo_id: str, revision: str | None):
    """The card in the repository, or None when the repository (at ``revision``) has none.

    Read straight from the server, never from the download cache: only the server's "entry not found" means "no
    card"; any other failure (an HTTP 500, a timeout) raises, so a push never replaces a card it could not read.
    """
    from huggingface_hub import ModelCard, hf_hub_url
    from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(repo_id, CARD_NAME, revision=revision, endpoint=api.endpoint)
    response = get_session().get(url, headers=build_hf_headers(token=api.token), follow_redirects=True)
    try:
        hf_raise_for_status(response)
    except (RemoteEntryNotFoundError, RevisionNotFoundError):
        return None
    return ModelCard(response.content.decode("utf-8"))


def _remote_files(api: Any, repo_id: str, revision: str | None) -> list[str]:
    """The files of the repository at ``revision`` (none while the revision does not exist)."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        info = api.model_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        return []
    return [sibling.rfilename for sibling in info.siblings or []]


def _library_paragraphs(folder: Path, summary: RestoreRecord, *, model: nn.Module, base_model: str | None,
                        repo_id: str) -> set[str]:  # fmt: skip
    """The paragraphs the library writes outside its section (the title and the introduction), for each title
    (the folder's name, the repository's) and base model (given or none) the folder's card may have been written
    with: they are not text the user wrote."""
    found: set[str] = set()
    for name in {folder.resolve().name, repo_id.split("/")[-1]}:
        for with_base in (True, False):
            fresh = build_model_card(summary, model=model if with_base else None, model_name=name,
                                     base_model=base_model if with_base else None)  # fmt: skip
            found.update(card_paragraphs("".join(outside_section(fresh.text))))
    return found


def _pushed_card(folder: Path, remote: Any, summary: RestoreRecord, *, model: nn.Module, base_model: str | None,
                 repo_id: str) -> bytes:  # fmt: skip
    """The ``README.md`` a push uploads, built in memory (``folder`` is only read): the folder's card when the
    repository has none; else the repository's card with the library's section replaced, and the folder card's own
    text and metadata the repository's card lacks added ([`add_local_text`])."""
    from huggingface_hub import ModelCard

    if remote is None:
        return (folder / CARD_NAME).read_bytes()
    local = ModelCard.load(folder / CARD_NAME)
    card = _card(folder, summary, model=model, base_model=base_model, repo_id=repo_id, existing=remote)
    add_local_text(card, local, _library_paragraphs(folder, summary, model=model, base_model=base_model,
                                                     repo_id=repo_id))  # fmt: skip
    return str(card).encode("utf-8")


#: How long (seconds) any single Hub request may wait to connect, send or receive before the push fails.
DEFAULT_TIMEOUT = 60.0
#: How long (seconds) a whole push may take (creating the repository, reading its card, uploading, committing).
DEFAULT_DEADLINE = 3600.0


def _push_error(
    action: str, repo_id: str, endpoint: str, error: BaseException, kept: Path | None, secrets: tuple[str, ...] = ()
) -> HubPushError:
    reason = one_line(error).rstrip(".") or type(error).__name__
    kept_note = f" The checkpoint is kept in {kept}." if kept is not None else ""
    return HubPushError(
        redact(f"Could not {action} {repo_id!r} on {endpoint}: {type(error).__name__}: {reason}.{kept_note}", secrets)
    )


def push_restored(
    model: nn.Module,
    repo_id: str,
    *,
    report: PlasticityReport | None = None,
    save_directory: str | os.PathLike | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    base_model: str | None = None,
    image_processor: Any = None,
    revision: str | None = None,
    create_pr: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = DEFAULT_DEADLINE,
):
    """Saves a restored model with [`save_restored`] and pushes the files it wrote to the Hub in one commit.

    Only the files this save wrote are uploaded (weights, ``config.json``, ``plasticity_config.json``, the card, the
    image processor's and the figure when given): nothing else that lies in ``save_directory`` (a ``.env``, logs,
    other checkpoints) ever leaves the machine. The same commit deletes the repository's files that a save owns but
    this one did not write (weight files of another layout, ``plasticity_config.json`` after a save without a
    restore, ``plasticity.png`` after one without diagnostics), as the save removes them from the folder. The
    repository is created when missing (``private`` applies then).

    The card pushed: when the repository has none, the folder's. Otherwise the repository's card stays the base,
    its text and metadata kept, with the library's section replaced; the text of the folder's card that the
    repository's card lacks is added (each paragraph outside the library's section that the library did not write,
    those before the section right before it, the others at the end), and so are the folder card's metadata keys
    the repository's card lacks and its tags. Nothing is removed from the repository's card but the library's old
    section and its stale tags (a strategy name, ``fine-tuning-recipe``); where both cards set a metadata key, the
    repository's value stays. When the repository's card cannot be read (anything but "not found", e.g. an HTTP
    500), the push fails rather than replace it. The card is built in memory: the push never writes into the folder.

    No credential (the token, user:password in ``HF_ENDPOINT``) appears in any log record emitted while the push
    runs, by this library, huggingface_hub or its HTTP client. If the push fails, the local folder stays as the save
    left it, byte for byte, and the error says where it is.

    Args:
        model: a restored transformers model.
        repo_id: the repository, ``"namespace/name"``.
        report: the [`PlasticityReport`] of the restore (adds diagnostics to the card).
        save_directory: where the checkpoint is written first and kept. Default: a temporary folder, removed after
            a successful push and kept after a failed one.
        private: create the repository as private (None: the Hub's default).
        token: a Hub token (default: the saved login or ``HF_TOKEN``).
        commit_message: the commit message.
        base_model: the Hub id the model was restored from (default: from the model's ``_name_or_path``).
        image_processor: pushed with the weights when given.
        revision: the branch to push to (default ``main``).
        create_pr: open a pull request instead of committing to the branch.
        timeout: seconds any one Hub request may go without progress before the push fails (huggingface_hub retries
            a failed request a few times, so the push fails within a small multiple of it).
        deadline: seconds the whole push (after the local save) may take, whatever the server does (e.g. one that
            answers one byte a second, which ``timeout`` alone never stops); None for no limit.

    Returns:
        `huggingface_hub.CommitInfo`: the commit (``.commit_url``, ``.oid``, ``.pr_url``).

    Raises:
        HubPushError: when the repository cannot be created, its card cannot be read, the upload fails or the
            deadline passes.

    Example:

    ```python
    >>> report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))  # doctest: +SKIP
    >>> push_restored(model, "me/vit-base-patch16-224-restored", report=report, private=True)  # doctest: +SKIP
    CommitInfo(commit_url='https://huggingface.co/me/vit-base-patch16-224-restored/commit/...', ...)
    ```
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_number("timeout", timeout, low=0, low_open=True)
    if deadline is not None:
        check_number("deadline", deadline, low=0, low_open=True)
    check_repo_id(repo_id)
    check_flag("private", private, allow_none=True)
    check_flag("create_pr", create_pr)
    temporary = save_directory is None
    if not temporary:
        check_save_directory(save_directory)
    folder = Path(tempfile.mkdtemp(prefix="hf-plasticity-")) if temporary else Path(save_directory)
    folder, files = _save(
        model, folder, report=report, base_model=base_model, repo_id=repo_id, image_processor=image_processor
    )
    summary = _summary(model, report)
    api = HfApi(token=token)

    def push() -> Any:
        api.create_repo(repo_id, private=private, exist_ok=True)
        remote = _remote_card(api, repo_id, revision)
        card = _pushed_card(folder, remote, summary, model=model, base_model=base_model, repo_id=repo_id)
        stale = [name for name in _remote_files(api, repo_id, revision) if name not in files and _owned(name)]
        sources: dict[str, bytes | str] = {name: str(folder / name) for name in files} | {CARD_NAME: card}
        added = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=sources[name]) for name in files]
        return api.create_commit(
            repo_id=repo_id,
            operations=[*added, *(CommitOperationDelete(path_in_repo=name) for name in stale)],
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )

    secrets = secrets_of(token, api.endpoint)
    with redacted_logs(secrets):
        try:
            info = run_bounded(push, timeout, deadline)
        except Exception as error:
            raise _push_error("push to", repo_id, api.endpoint, error, folder, secrets) from error
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        logger.info("Pushed %s to %s", folder, info.commit_url)
    return info


def apply_card_section(
    folder_or_repo_id: str | os.PathLike,
    report: PlasticityReport | None = None,
    *,
    model: nn.Module | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Add the hf-plasticity section to the model card",
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float | None = DEFAULT_DEADLINE,
):
    """Puts the library's section into the card of a local folder or of a Hub repository, keeping the rest.

    Call it after anything that rewrites ``README.md``, e.g. `Trainer.push_to_hub` (its `create_model_card`
    replaces the card): the user's and Trainer's text stays, the section between the hf-plasticity marker
    comments is replaced (or appended), tags are merged, and ``library_name`` / ``base_model`` /
    ``pipeline_tag`` are set only where the card has none.

    Args:
        folder_or_repo_id: an existing local folder (its ``README.md`` is edited in place) or a repository id (its
            card is downloaded, updated and committed back).
        report: the restore's [`PlasticityReport`]; default: the ``plasticity`` record of ``model``, else of the
            folder's or repository's ``config.json``.
        model: the restored model (names each block's module in the table).
        base_model: the Hub id the model was restored from.
        repo_id: the id the card's snippet loads from (folder only; a repository uses its own id).
        token: a Hub token (repository only).
        revision: the branch (repository only).
        commit_message: the commit message (repository only).
        timeout: seconds any one Hub request may go without progress (repository only).
        deadline: seconds the whole update may take (repository only); None for no limit. A card that cannot be
            read (anything but "not found") fails the update: it is never replaced by a new one.

    Returns:
        `huggingface_hub.ModelCard`: the updated card.

    Example:

    ```python
    >>> trainer.push_to_hub()  # doctest: +SKIP
    >>> apply_card_section(trainer.hub_model_id, report)  # doctest: +SKIP
    ```
    """
    target = str(folder_or_repo_id)
    if os.path.isdir(target):
        folder = Path(target)
        summary = _summary(model, report) if report is not None or model is not None else _folder_summary(folder)
        return _write_card(folder, summary, model=model, base_model=base_model, repo_id=repo_id)

    from huggingface_hub import HfApi

    check_number("timeout", timeout, low=0, low_open=True)
    if deadline is not None:
        check_number("deadline", deadline, low=0, low_open=True)
    api = HfApi(token=token)

    def update() -> Any:
        existing = _remote_card(api, target, revision)
        if report is not None or model is not None:
            summary = _summary(model, report)
        else:
            summary = _folder_summary(Path(api.hf_hub_download(target, "config.json", revision=revision)).parent)
        with tempfile.TemporaryDirectory(prefix="hf-plasticity-card-") as tmp:
            card = _write_card(Path(tmp), summary, model=model, base_model=base_model, repo_id=target,
                               existing=existing)  # fmt: skip
            api.upload_file(
                path_or_fileobj=str(Path(tmp) / CARD_NAME),
                path_in_repo=CARD_NAME,
                repo_id=target,
                revision=revision,
                commit_message=commit_message,
            )
        return card

    secrets = secrets_of(token, api.endpoint)
    with redacted_logs(secrets):
        try:
            return run_bounded(update, timeout, deadline)
        except ValueError:
            raise
        except Exception as error:
            raise _push_error("update the card of", target, api.endpoint, error, None, secrets) from error


def _folder_summary(folder: Path) -> RestoreRecord:
    record = read_record(folder)
    if record is None:
        raise ValueError(f"{folder} holds no plasticity record in config.json: pass `report=`.")
    return record
