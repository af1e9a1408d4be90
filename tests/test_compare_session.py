"""`compare`'s folder, resume and input checks, through `hf_plasticity.compare` and the CLI: the data identified by its
content (not its modification times), settings compared as what they mean (paths, grid order), the launch's effective
batch, one comparison per folder at a time (a lock), ``--max-train-samples`` up to the split's size, an unusable
``--output`` refused first, paths as `pathlib.Path`, ``--overwrite`` resuming what can be resumed, no network for local
data, and the options named as typed."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hf_plasticity.comparison.session as session
from hf_plasticity import compare
from hf_plasticity.cli.main import main
from hf_plasticity.comparison.output_folder import LOCK_FILE

from .test_compare import API_BUDGET, GRID, records, tiny_vit_and_images

#: The real run, whatever a test patched in its place.
TRAIN_RUN = session.train_run
#: One arm, one seed, a 1x1 grid: one tuning run and one confirmation run.
ONE = {**API_BUDGET, "arms": ("standard",), "seeds": 1}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 'pretrained' ViT with its image processor, and an imagefolder of 2 classes x 14 images (as
    test_compare's)."""
    root = tmp_path_factory.mktemp("compare-session")
    tiny_vit_and_images(root)
    return root


def _copy(workspace: Path, tmp_path: Path) -> tuple[str, str]:
    """A copy of the tiny model and the images, which the test may change."""
    shutil.copytree(workspace / "tiny-vit", tmp_path / "model")
    shutil.copytree(workspace / "images", tmp_path / "images")
    return str(tmp_path / "model"), str(tmp_path / "images")


def _no_training(monkeypatch) -> list[str]:
    """Makes any run an error; returns the list the attempted run keys go to."""
    trained = []

    def refuse(spec, **kwargs):
        trained.append(spec.key)
        raise AssertionError(f"trained {spec.key}")

    monkeypatch.setattr(session, "train_run", refuse)
    return trained


def _counting(monkeypatch, stop_after: int | None = None) -> list[str]:
    """Counts the runs trained; with ``stop_after``, the run after that many is interrupted (a kill)."""
    trained, real = [], TRAIN_RUN

    def count(spec, **kwargs):
        if stop_after is not None and len(trained) == stop_after:
            raise KeyboardInterrupt
        trained.append(spec.key)
        return real(spec, **kwargs)

    monkeypatch.setattr(session, "train_run", count)
    return trained


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


# ------------------------------------------------------------------------------------------------ data identity
def test_the_data_is_identified_by_its_content_not_its_modification_times(workspace, tmp_path, monkeypatch):
    """The same images copied again (new modification times) resume; other pixels behind the same file names are
    refused even with the modification times put back; a comparison whose identity an earlier version recorded (split
    fingerprints) resumes with a warning, and is recorded by content from then on."""
    model, images = _copy(workspace, tmp_path)
    output, legacy = tmp_path / "out", tmp_path / "legacy"
    compare(model, images, output=str(output), progress=False, **ONE)
    shutil.copytree(output, legacy)
    saved = json.loads((output / "settings.json").read_text())
    content = saved["identity"]["data"]["content"]
    assert content["files"] == 28 and len(content["sha256"]) == 64
    assert "fingerprint" not in saved["identity"]["data"]["splits"]["train"]

    trained = _no_training(monkeypatch)
    for path in Path(images).rglob("*.png"):  # copied anew: the same bytes, later modification times
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**10))
    (Path(images) / ".DS_Store").write_bytes(b"not read by datasets")  # hidden: not part of the data
    compare(model, images, output=str(output), progress=False, **ONE)
    assert trained == [] and len(records(output)) == 2

    victim = Path(images) / "circle" / "0.png"
    stat = victim.stat()
    Image.fromarray(np.full((32, 32, 3), 255, "uint8")).save(victim)  # other pixels ...
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... the modification time put back
    files = _files(output)
    with pytest.raises(ValueError, match=r"another model or data.*data content sha256: sha256 "):
        compare(model, images, output=str(output), progress=False, **ONE)
    assert _files(output) == files

    earlier = json.loads((legacy / "settings.json").read_text())
    data = earlier["identity"]["data"]
    del data["content"]  # as an earlier version recorded it: a fingerprint per split (its content is not checked)
    data["splits"]["train"]["fingerprint"] = "0123456789abcdef"
    (legacy / "settings.json").write_text(json.dumps(earlier))
    with pytest.warns(UserWarning, match=r"identified local data by its `datasets` fingerprint"):
        compare(model, images, output=str(legacy), progress=False, **ONE)
    now = json.loads((legacy / "settings.json").read_text())["identity"]["data"]
    assert now["content"]["sha256"] != content["sha256"] and trained == [] and len(records(legacy)) == 2


def test_a_saved_dataset_is_identified_by_its_rows_not_the_pipeline_that_wrote_it(tmp_path):
    """The same rows written by two pipelines (other `datasets` fingerprints in state.json) have one identity, and
    keep it when `datasets` writes its cache files beside them; other labels do not."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    from hf_plasticity.comparison.identity import data_identity
    from hf_plasticity.integrations.datasets_io import load_image_dataset

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    labels = ClassLabel(names=["x", "y"])
    Dataset.from_dict({"image": images, "label": [0, 1] * 3}).cast_column("label", labels).save_to_disk(
        str(tmp_path / "a")
    )
    features = Features({"image": ImageFeature(), "label": labels})
    Dataset.from_dict({"image": images, "label": [0, 1] * 3}, features=features).save_to_disk(str(tmp_path / "b"))
    Dataset.from_dict({"image": images, "label": [1, 0] * 3}, features=features).save_to_disk(str(tmp_path / "c"))

    def identity(name):
        folder = str(tmp_path / name)
        found = data_identity(folder, {"train": load_image_dataset(folder)})
        return found["content"], found["splits"]

    assert (
        json.loads((tmp_path / "a" / "state.json").read_text())["_fingerprint"]
        != json.loads((tmp_path / "b" / "state.json").read_text())["_fingerprint"]
    )
    assert identity("a") == identity("b")
    assert identity("a")[0]["sha256"] != identity("c")[0]["sha256"]
    before = identity("a")
    load_image_dataset(str(tmp_path / "a")).shuffle(seed=1).flatten_indices()  # datasets' cache files beside the data
    (tmp_path / "a" / "cache-0123456789abcdef.arrow").write_bytes(b"a cache file")
    assert identity("a") == before


def test_only_the_files_imagefolder_reads_are_part_of_the_data(workspace, tmp_path):
    """Notes, a README or a Thumbs.db beside the images leave the content as it was (`datasets` does not read them);
    a metadata file, another image or a zip archive (which it reads) change it."""
    from hf_plasticity.comparison.identity import folder_content

    _, images = _copy(workspace, tmp_path)
    before = folder_content(images)
    (Path(images) / "NOTES.txt").write_text("collected in May")
    (Path(images) / "README").write_text("two classes")
    (Path(images) / "circle" / "Thumbs.db").write_bytes(b"\0\1")
    assert folder_content(images) == before
    for name, content in [("metadata.jsonl", b"{}"), ("circle/extra.JPG", b"jpeg"), ("more.zip", b"PK")]:
        (Path(images) / name).write_bytes(content)
        after = folder_content(images)
        assert after["sha256"] != before["sha256"] and after["files"] == before["files"] + 1, name
        before = after


def test_an_unreadable_data_file_is_one_line_naming_it(workspace, tmp_path, capsys, monkeypatch):
    """A data file that cannot be read (permission denied; simulated, as root reads anything) stops compare with
    the module's input error naming the file, and the command line with one line and exit status 2."""
    import builtins

    import hf_plasticity.comparison.identity as identity
    from hf_plasticity.comparison.splits import ComparisonInputError

    model, images = _copy(workspace, tmp_path)
    victim = os.path.join(images, "circle", "3.png")

    def fake_open(path, *args, **kwargs):
        if os.fspath(path) == victim:
            raise PermissionError(13, "Permission denied", victim)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(identity, "open", fake_open, raising=False)
    with pytest.raises(ComparisonInputError, match=r"Cannot read '.*3\.png'.*Permission denied.*make it readable"):
        identity.folder_content(images)
    argv = ["compare", model, "--data", images, "--output", str(tmp_path / "out"), "--arms", "standard"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "3.png" in error and "Permission denied" in error, error


# ------------------------------------------------------------------------------------------------ settings spelling
def test_the_same_settings_spelled_differently_resume(workspace, tmp_path, monkeypatch):
    """A trailing separator, a relative path, the grid in another order: the same comparison, resumed; settings saved
    as an earlier version saved them (the paths and the grid as typed, no launch) too."""
    model, images = _copy(workspace, tmp_path)
    output = tmp_path / "out"
    grid = {**ONE, "backbone_lrs": (1e-3, 1e-4)}
    compare(model, images, output=str(output), progress=False, **grid)
    saved = json.loads((output / "settings.json").read_text())
    assert saved["backbone_lrs"] == [1e-4, 1e-3] and saved["model"] == model and saved["effective_batch"] == 8
    done = len(records(output))

    trained = _no_training(monkeypatch)
    monkeypatch.chdir(tmp_path)
    compare("model/", "./images/", output="out", progress=False, **{**grid, "backbone_lrs": (1e-4, 1e-3)})
    assert trained == []

    for key in ("world_size", "effective_batch"):  # as an earlier version saved it
        del saved[key]
    saved.update(model=model + os.sep, data="images", backbone_lrs=[1e-3, 1e-4])
    (output / "settings.json").write_text(json.dumps(saved))
    compare(model, images, output=str(output), progress=False, **grid)
    assert trained == [] and len(records(output)) == done

    with pytest.raises(ValueError, match=r"other settings \(backbone_lrs differs\)"):  # one setting: "differs"
        compare(model, images, output=str(output), progress=False, **ONE)


def test_a_hub_id_is_kept_as_typed():
    from hf_plasticity.comparison.settings import ComparisonSettings

    settings = ComparisonSettings(model="facebook/convnext-tiny-224", data="user/data/", backbone_lrs=(3e-4, 3e-5))
    assert (settings.model, settings.data, settings.backbone_lrs) == ("facebook/convnext-tiny-224", "user/data/",
                                                                      (3e-5, 3e-4))  # fmt: skip


# ------------------------------------------------------------------------------------------------ launch
def test_a_resume_under_another_effective_batch_is_refused(workspace, tmp_path, monkeypatch):
    """Runs of one process (8 examples a step) are not resumed under two (16): refused before any run, naming both
    effective batches; settings of an earlier version (no effective batch) are checked against the records' device."""
    output = tmp_path / "out"
    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    compare(model, images, output=str(output), progress=False, **ONE)
    trained = _no_training(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc_per_node 2 sets it (RANK unset: the main process)
    files = _files(output)
    expected = r"effective batch of 8 \(1 process x --batch-size 8\), and this launch has 16 \(2 processes x 8\)"
    with pytest.raises(ValueError, match=expected):
        compare(model, images, output=str(output), progress=False, **ONE)
    saved = json.loads((output / "settings.json").read_text())
    del saved["world_size"], saved["effective_batch"]  # as an earlier version saved it: the records say "x 1"
    (output / "settings.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=expected):
        compare(model, images, output=str(output), progress=False, **ONE)
    assert trained == [] and {k: v for k, v in _files(output).items() if k != "settings.json"} == {
        k: v for k, v in files.items() if k != "settings.json"
    }


# ------------------------------------------------------------------------------------------------ lock
def test_a_second_comparison_on_a_locked_folder_is_refused_at_once(workspace, tmp_path, capsys, monkeypatch):
    """While a comparison holds the folder's lock, another one is refused before it loads anything, naming the folder
    and the lock; once the lock is free it runs, and leaves no lock file behind."""
    from filelock import FileLock

    import hf_plasticity.cli.compare as cli_compare

    output = tmp_path / "out"
    output.mkdir()
    real_load = cli_compare.load_data
    loads = []
    monkeypatch.setattr(cli_compare, "load_data", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    argv = ["compare", str(workspace / "tiny-vit"), "--data", str(workspace / "images"), "--arms", "standard",
            "--seeds", "1", "--epochs", "1", "--batch-size", "8", *GRID, "--output", str(output),
            "--no-progress"]  # fmt: skip
    with FileLock(str(output / LOCK_FILE), timeout=0):  # another process's comparison, running
        assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert f"Output directory {str(output)!r} is in use by another compare process" in error
    assert repr(str(output / LOCK_FILE)) in error and loads == []
    assert main(argv) == 0
    assert len(records(output)) == 2 and not (output / LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------------ inputs
def test_max_train_samples_one_below_the_split_trains_on_that_many(workspace, tmp_path):
    """28 images: 6 for the test, 3 for validation, 19 to train on; 18 of them keep both classes (one short of the
    split, where what is left out cannot hold one example of each class)."""
    summary = compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(tmp_path / "out"),
                      progress=False, max_train_samples=18, **ONE)  # fmt: skip
    assert summary["splits"]["sizes"] == {"train": 18, "val": 3, "test": 6}
    assert summary["splits"]["how"]["train"] == "split 'train', 18 examples of it (stratified)"


@pytest.mark.parametrize(
    "fraction, option", [("test_fraction", "--test-fraction"), ("val_fraction", "--val-fraction")]
)
def test_a_split_too_small_to_carve_names_the_options_that_exist(workspace, tmp_path, fraction, option):
    settings = {**ONE, fraction: 0.95}
    with pytest.raises(ValueError, match=rf"Too few examples to carve the .* split.*a smaller {option}") as caught:
        compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(tmp_path / "out"), progress=False,
                **settings)  # fmt: skip
    assert "--train-split" not in str(caught.value) and not (tmp_path / "out").exists()


def _unusable_outputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    (tmp_path / "a-file").write_text("x")
    return {
        "empty": ("", "--output is empty"),
        "under a file": (str(tmp_path / "a-file" / "cmp"), "is not a directory"),
        "a file": (str(tmp_path / "a-file"), "is a file"),
        "in /proc": ("/proc/hf-plasticity-compare-test/cmp", "/proc"),
    }


@pytest.mark.parametrize("case", ["empty", "under a file", "a file", "in /proc"])
def test_an_unusable_output_is_refused_before_anything_is_loaded(workspace, tmp_path, capsys, monkeypatch, case):
    import hf_plasticity.cli.compare as cli_compare

    if case == "in /proc" and not os.path.isdir("/proc"):
        pytest.skip("no /proc")
    output, expected = _unusable_outputs(tmp_path)[case]
    monkeypatch.setattr(cli_compare, "load_data", lambda *a, **k: pytest.fail("loaded the data"))
    argv = ["compare", str(workspace / "tiny-vit"), "--data", str(workspace / "images"), "--output", output]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("hf-plasticity compare: error:"), error
    assert expected in error and "Errno" not in error


def test_paths_may_be_pathlib_paths_and_one_arm_a_string(workspace, tmp_path):
    """`pathlib.Path` for the model, the data and the output; ``arms="standard"`` is that arm, not its letters; a
    value that is no path is refused naming the argument, before anything is created."""
    output = tmp_path / "out"
    summary = compare(workspace / "tiny-vit", workspace / "images", output=output, progress=False,
                      **{**ONE, "arms": "standard"})  # fmt: skip
    assert list(summary["arms"]) == ["standard"] and len(records(output)) == 2
    saved = json.loads((output / "settings.json").read_text())
    assert saved["model"] == str(workspace / "tiny-vit") and saved["data"] == str(workspace / "images")
    with pytest.raises(TypeError, match=r"`data` must be a str or a path \(os.PathLike\), got int 3"):
        compare(workspace / "tiny-vit", 3, output=tmp_path / "other", progress=False, **ONE)
    assert not (tmp_path / "other").exists()


def test_a_home_relative_path_is_expanded(tmp_path, monkeypatch):
    """``output="~/cmp"`` (and the model and data) through the API is under the home folder, as a shell would have
    expanded it, not a folder named ``~`` in the working directory."""
    from hf_plasticity.cli.compare import _path_argument

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert _path_argument("output", "~/cmp") == str(tmp_path / "home" / "cmp")
    assert _path_argument("data", Path("~") / "images") == str(tmp_path / "home" / "images")
    assert _path_argument("model", "org/model") == "org/model"  # a Hub id is left alone
    with pytest.raises(ValueError):
        compare("~/no-model", "~/no-data", output="~/cmp", progress=False, **ONE)
    assert not (tmp_path / "~").exists()


def test_overwrite_resumes_the_same_comparison_after_a_kill(workspace, tmp_path, monkeypatch):
    """A job that carries --overwrite, killed during its third run (of four) and started again with the same command,
    trains only the runs it lacks (with a warning saying why); --overwrite over other settings still starts afresh."""
    model, images, output = str(workspace / "tiny-vit"), str(workspace / "images"), str(tmp_path / "out")
    argv = ["compare", model, "--data", images, "--arms", "standard", "restore", "--seeds", "1", "--epochs", "1",
            "--batch-size", "8", *GRID, "--output", output, "--overwrite", "--no-progress"]  # fmt: skip
    _counting(monkeypatch, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert len(records(Path(output))) == 2
    trained = _counting(monkeypatch)
    with pytest.warns(UserWarning, match=r"holds this comparison .* it is resumed"):
        assert main(argv) == 0
    assert len(trained) == 2 and len(records(Path(output))) == 4
    trained.clear()
    assert main([*argv[:-4], "--epochs", "2", *argv[-4:]]) == 0  # other settings: afresh
    assert len(trained) == 4 and len(records(Path(output))) == 4


def test_local_data_makes_no_network_request(workspace, tmp_path, monkeypatch):
    """Without HF_HUB_OFFLINE, `datasets` counts each `load_dataset` with a HEAD request to the Hub, also for an
    imagefolder on local files: compare loads local data without opening a connection (or resolving a name)."""
    import datasets

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network in this test")

    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as without HF_HUB_OFFLINE (read at import)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ValueError, match="max_train_samples is 1"):  # refused after the data is loaded
        compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(tmp_path / "out"),
                progress=False, max_train_samples=1, **ONE)  # fmt: skip
    assert attempts == []
    assert datasets.config.HF_UPDATE_DOWNLOAD_COUNTS is True  # restored


@pytest.mark.parametrize(
    "option, value, expected",
    [("--seeds", "-1", "--seeds must be a positive integer, got -1."),
     ("--split-seed", "-1", "--split-seed must be an integer in [0, 4294967295], got -1."),
     ("--split-seed", str(2**32), "--split-seed must be an integer in [0, 4294967295], got 4294967296."),
     ("--max-train-samples", "0", "--max-train-samples must be a positive integer, got 0.")],
)  # fmt: skip
def test_a_bad_option_is_named_as_typed(workspace, tmp_path, capsys, option, value, expected):
    argv = ["compare", str(workspace / "tiny-vit"), "--data", str(workspace / "images"), option, value,
            "--output", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"hf-plasticity compare: error: {expected}" and not (tmp_path / "out").exists()
