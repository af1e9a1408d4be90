"""Shared pieces of the `prepare` and `diagnose` commands: one-line errors, checks of the paths they write, loading
the model (with a new head when the data has another number of classes), its image processor, and the data."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from ..core.messages import first_line as one_line

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def install_hint(extra: str) -> str:
    """How to install the optional ``extra``: from the package index, or into a checkout of the repository.

    Example:

    ```python
    >>> from hf_plasticity.cli._common import install_hint
    >>> install_hint("plot")
    'pip install "hf-plasticity[plot]" (in a checkout of the repository: pip install -e ".[plot]")'
    ```
    """
    return f'pip install "hf-plasticity[{extra}]" (in a checkout of the repository: pip install -e ".[{extra}]")'


def redact(text: str) -> str:
    """``text`` without credentials (see [`hf_plasticity.integrations.hub.redact`]), imported lazily to keep the
    CLI start fast."""
    from ..integrations.hub import redact as redact_secrets

    return redact_secrets(text)


class CommandError(Exception):
    """Bad input or a failed step: the command prints the message as one line and exits non-zero.

    Args:
        message: what is wrong and, where it helps, the accepted values.
        exit_code: [`EXIT_BAD_INPUT`] (default) or [`EXIT_FAILED`].
    """

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def reports_errors(command: str) -> Callable[[Callable[[Any], int]], Callable[[Any], int]]:
    """Decorates a command's ``run(args)``: any error becomes one line on stderr and a non-zero exit status.

    Set ``HF_PLASTICITY_DEBUG=1`` to get the full traceback instead.
    """

    def decorate(run: Callable[[Any], int]) -> Callable[[Any], int]:
        @functools.wraps(run)
        def wrapper(args: Any) -> int:
            try:
                return run(args)
            except Exception as error:
                if os.environ.get("HF_PLASTICITY_DEBUG"):
                    raise
                if isinstance(error, CommandError):
                    code = error.exit_code
                else:  # the library's checks raise ValueError / TypeError for bad input (data, values, models)
                    code = EXIT_BAD_INPUT if isinstance(error, (ValueError, TypeError)) else EXIT_FAILED
                print(f"hf-plasticity {command}: error: {redact(one_line(error))}", file=sys.stderr)
                return code

        return wrapper

    return decorate


def data_free_hint(config: Any) -> str:
    """How to restore without data instead: another setting of the same strategy when it has one, else the
    data-free one-shot strategies."""
    from ..core.config import available_strategies, get_config_class
    from ..strategies import get_strategy

    if config.strategy == "selective":
        return "a data-free setting (--param utility=magnitude or utility=random)"
    data_free = []
    for name in available_strategies():
        defaults = get_config_class(name)()
        if not defaults.requires_data and get_strategy(defaults).schedule.before_training:
            data_free.append(name)
    return f"a data-free strategy ({', '.join(data_free)})"


def checked(check: Callable[..., Any], option: str, value: Any, **kwargs: Any) -> Any:
    """Runs one of [`hf_plasticity.core.validators`]' checks on the value of command-line ``option``: a refusal
    becomes a one-line [`CommandError`] (exit 2) that names the option as the user typed it, before anything is
    loaded.

    Example:

    ```python
    >>> from hf_plasticity.core.validators import check_number
    >>> checked(check_number, "--tau", float("nan"), low=0)
    Traceback (most recent call last):
    ...
    hf_plasticity.cli._common.CommandError: --tau must be a finite number >= 0, got nan.
    ```
    """
    try:
        return check(option, value, **kwargs)
    except ValueError as error:
        raise CommandError(one_line(error).replace(f"`{option}`", option, 1)) from error


def _ends_with_separator(path: str) -> bool:
    return path.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep))


def figure_path(path: str) -> str:
    """Where ``--plot PATH`` writes: ``PATH/plasticity.png`` for a directory (an existing one, or a path ending with a
    separator, created then), ``PATH.png`` when PATH has no extension, else PATH itself (nothing is created here: see
    [`check_plot_target`] and [`make_parent`])."""
    if os.path.isdir(path) or _ends_with_separator(path):
        return os.path.join(path, "plasticity.png")
    return path if os.path.splitext(path)[1] else path + ".png"


def make_parent(path: str) -> str:
    """Creates the folder of ``path`` (checked beforehand by [`check_file_target`]) and returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def _check_blank(option: str, path: str) -> None:
    if not path.strip():
        raise CommandError(f"{option} is empty (an unset variable?): pass the path to write.")


def _check_creatable(option: str, path: str) -> None:
    """Refuses ``path`` when its nearest existing ancestor is not a directory, or takes no new files."""
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    shown = os.path.relpath(ancestor) if not os.path.isabs(path) else ancestor
    if not os.path.isdir(ancestor):
        raise CommandError(f"{option} {path!r}: {shown!r} is not a directory.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CommandError(f"{option} {path!r}: cannot write into {shown!r} (permission denied or read-only).")


def check_file_target(option: str, path: str) -> None:
    """Refuses a file path the command will write (``--json``, ``--plot``) that cannot be written: empty, an existing
    directory, an existing file that takes no writes, or a folder that cannot be created. Creates nothing.

    Raises:
        CommandError: one line naming ``option`` and the problem.
    """
    _check_blank(option, path)
    if os.path.isdir(path):
        raise CommandError(f"{option} {path!r} is a directory; give a file path.")
    if _ends_with_separator(path):
        raise CommandError(f"{option} {path!r} ends with a path separator; give a file path, not a folder.")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise CommandError(f"{option} {path!r} exists and cannot be written (permission denied or read-only).")
        return
    _check_creatable(option, path)


def _supported_figure_formats() -> list[str]:
    """The file extensions matplotlib saves figures as, or a [`CommandError`] when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise CommandError(f"--plot needs matplotlib: {install_hint('plot')}.") from error
    return sorted(Figure().canvas.get_supported_filetypes())


def check_plot_target(plot: str | None) -> str | None:
    """Checks ``--plot`` before anything is loaded: not blank, matplotlib installed, an extension matplotlib saves,
    a path that can be written.

    Returns:
        `str | None`: where the figure will be written (see [`figure_path`]), or None without ``--plot``.

    Raises:
        CommandError: one line naming ``--plot``, the problem and what is accepted.
    """
    if plot is None:
        return None
    _check_blank("--plot", plot)
    formats = _supported_figure_formats()
    path = figure_path(plot)
    extension = os.path.splitext(path)[1].lstrip(".")
    if extension.lower() not in formats:
        raise CommandError(
            f"--plot {plot!r}: matplotlib cannot save a figure as .{extension}; give a path ending with one of "
            f"{', '.join('.' + f for f in formats)} (no extension: .png)."
        )
    check_file_target("--plot", path)
    return path


def hub_access(repo_id: str, repo_type: str) -> dict[str, Any]:
    """Keyword arguments for loading ``repo_id`` from the Hub (``local_files_only`` when the Hub cannot be reached
    but the files are cached), or a one-line [`CommandError`] right away when it cannot be loaded at all."""
    from ..integrations.hub import HubUnreachableError
    from ..integrations.hub import hub_access as access

    try:
        return access(repo_id, repo_type)
    except HubUnreachableError as error:
        raise CommandError(str(error)) from error


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub id (absolute, ``./``, ``~``, or 2+ slashes)."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def check_output_dir(path: str, overwrite: bool, option: str = "--output") -> None:
    """Refuses an output directory that would lose or mix the user's files, or cannot be written: an empty path (an
    unset ``$OUT`` would save into the current directory), the current directory or a non-empty directory without
    ``overwrite``, a file, or a folder that cannot be created. Creates nothing.

    Raises:
        CommandError: one line naming ``option`` and the problem.
    """
    _check_blank(option, path)
    if os.path.isfile(path):
        raise CommandError(f"{option} {path!r} is a file; pass a directory.")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CommandError(
            f"{option} {path!r} exists and is not a directory (a device, pipe or link); pass a directory."
        )
    if os.path.isdir(path):
        if not overwrite and os.path.samefile(path, os.getcwd()):
            raise CommandError(
                f"{option} {path!r} is the current directory; pass another directory, or --overwrite to write into it."
            )
        if not overwrite and any(os.scandir(path)):
            raise CommandError(
                f"Output directory {path!r} exists and is not empty; pass --overwrite to write into it."
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise CommandError(f"{option} {path!r}: cannot write into it (permission denied or read-only).")
        return
    _check_creatable(option, path)


def load_data(source: str, split: str):
    """The dataset split, or a [`CommandError`]."""
    from ..integrations.datasets_io import DataLoadError, load_image_dataset

    try:
        return load_image_dataset(source, split)
    except DataLoadError as error:
        raise CommandError(one_line(error)) from error


def load_model(
    model_id: str,
    *,
    num_labels: int | None = None,
    labels: list[str] | None = None,
    seed: int | None = None,
    always_new_head: bool = False,
):
    """Loads an image classifier, with a new head when the wanted number of labels differs from the model's (or
    always, with ``always_new_head``).

    Args:
        model_id: a local directory or a Hub id.
        num_labels: ``--num-labels``; default: the number of classes of the data when known, else the model's.
        labels: the data's class names (they name the new head's labels).
        seed: seeds the draw of a new head (and of any other weight the checkpoint lacks), on a forked RNG: the same
            seed gives the same model, and the caller's global RNG is left as it was. None: drawn from the global RNG
            as it stands (`compare` seeds it per run, so each seed gets a head of its own, shared by the arms).
        always_new_head: draw a new head even when the checkpoint's has as many labels as wanted (its trained head,
            for another task, is then dropped), with the model's init rule (the head the layout names: see
            [`get_layout`]), and name its labels by ``labels``. `compare` passes True: every seed gets a head of its
            own whatever the number of classes. ``prepare`` and ``diagnose`` keep a head of the right size (a
            checkpoint already fine-tuned on these classes is restored or diagnosed with its trained head).

    Returns:
        `(model, new_head)`: the model, and whether its head was replaced.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    if looks_like_path(model_id) and not os.path.isdir(model_id):
        raise CommandError(f"Cannot load model {model_id!r}: no such directory.")
    hub_kwargs = {} if os.path.isdir(model_id) else hub_access(model_id, "model")
    try:
        config = AutoConfig.from_pretrained(model_id, **hub_kwargs)
    except Exception as error:
        where = "the directory holds no usable config.json" if os.path.isdir(model_id) else (
            "it is not a local directory, and not a model on the Hub"
        )  # fmt: skip
        raise CommandError(f"Cannot load model {model_id!r}: {where} ({one_line(error)})") from error
    if num_labels is not None and num_labels < 1:
        raise CommandError(f"--num-labels must be a positive integer, got {num_labels}.")
    if num_labels is not None and labels is not None and num_labels != len(labels):
        raise CommandError(f"--num-labels is {num_labels} but the data has {len(labels)} classes.")
    wanted = num_labels or (len(labels) if labels else None)
    kwargs: dict[str, Any] = dict(hub_kwargs)
    resized = wanted is not None and wanted != config.num_labels
    if resized:
        kwargs["ignore_mismatched_sizes"] = True  # added to the Hub options (local_files_only, ...), not instead
    if (resized or always_new_head) and labels and len(labels) == (wanted or config.num_labels):
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {name: i for i, name in enumerate(labels)}
    elif resized:
        kwargs["num_labels"] = wanted
    from ..core.init import derive_seed, seeded

    draw = contextlib.nullcontext() if seed is None else seeded(derive_seed(seed, "cli", "new head"))
    try:
        with draw:
            model = AutoModelForImageClassification.from_pretrained(model_id, **kwargs)
            if always_new_head and not resized:  # the checkpoint's head was loaded: drawn anew, from the same RNG
                _redraw_head(model)
    except Exception as error:
        raise CommandError(f"Cannot load {model_id!r} as an image classifier: {one_line(error)}") from error
    return model, resized or always_new_head


def _redraw_head(model: Any) -> None:
    """Replaces the values of ``model``'s head (the modules its layout names) with fresh ones drawn with the model's
    init rule, seeded from the global RNG as it stands (so a seeded caller gets the same head every time)."""
    import torch

    from ..core.architectures import get_layout
    from ..core.init import fresh_tensors

    for name in get_layout(model).head:
        module = model.get_submodule(name)
        seed = int(torch.randint(0, 2**62, ()))
        fresh = fresh_tensors(model, module, seed=seed)
        with torch.no_grad():
            for key, tensor in [*module.named_parameters(), *module.named_buffers()]:
                tensor.copy_(fresh[key])


def load_processor(model_id: str, required: bool):
    """The model's image processor (PIL backend: no torchvision needed), or None when it has none and it is not
    ``required``."""
    from transformers import AutoImageProcessor

    hub_kwargs = {} if os.path.isdir(model_id) else hub_access(model_id, "model")
    try:
        return AutoImageProcessor.from_pretrained(model_id, backend="pil", **hub_kwargs)
    except Exception as error:
        if not required:
            return None
        raise CommandError(
            f"Model {model_id!r} has no image processor (preprocessor_config.json) to turn the data into pixel "
            f"values: {one_line(error)}"
        ) from error


def data_batches(dataset: Any, processor: Any, *, batch_size: int, seed: int, description: str):
    """Shuffled, processed, re-iterable batches with a progress bar per pass."""
    from ..integrations.datasets_io import BatchProgress, DataLoadError, with_pixel_values

    try:
        processed = with_pixel_values(dataset, processor, seed=seed)
    except DataLoadError as error:
        raise CommandError(one_line(error)) from error
    return BatchProgress(processed, batch_size, description)


def add_data_arguments(parser: Any, *, required: bool = False, when: str = "", num_labels: bool = True) -> None:
    """Adds ``--data`` (required when ``required``, so the usage line shows it without brackets; else ``when`` says
    when it is needed), ``--split`` and, with ``num_labels``, ``--num-labels``."""
    parser.add_argument(
        "--data",
        metavar="DIR_OR_DATASET",
        required=required,
        help="Downstream images: an imagefolder directory (one sub-folder per class), a folder saved with "
        f"Dataset.save_to_disk, or a Hub dataset id. {'Required.' if required else when}",
    )
    parser.add_argument("--split", default="train", help="The split of the data to read (default: train).")
    if not num_labels:
        return
    parser.add_argument(
        "--num-labels",
        type=int,
        help="Labels of the new head (default: the number of classes of the data; the model's when no data). A "
        "head of another size is replaced (ignore_mismatched_sizes).",
    )
