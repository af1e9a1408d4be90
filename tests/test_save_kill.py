"""`save_restored` survives ``kill -9`` at every step: the folder always loads with plain transformers as the complete
old checkpoint or the complete new one, and the next save recovers or removes what a killed one left behind.

tests/save_child.py runs the saves in a subprocess and kills them (SIGKILL, from the parent) just before each
file-system step, for each protocol of `hf_plasticity.integrations.atomic_save`: the folder swap, its two-rename
fallback (no ``renameat2``), the inside protocol (forced), and a real tmpfs mount point as the target (root only).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForImageClassification

from hf_plasticity import prepare_pretrained, save_restored
from hf_plasticity.integrations import atomic_save

from .save_child import USER_FILES

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("swap", "fallback", "inside", "mount")


def mounts_under(path: Path) -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as f:
        points = [line.split()[1] for line in f]
    return sorted((p for p in points if p.startswith(str(path))), reverse=True)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Runs tests/save_child.py once for all protocols; yields its work folder and summary."""
    work = tmp_path_factory.mktemp("kill")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.save_child", str(work), *PROTOCOLS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        yield work, json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        for point in mounts_under(work) if sys.platform == "linux" else []:
            subprocess.run(["umount", "-l", point], check=False)


def checkpoint_files(folder: Path) -> dict[str, bytes] | None:
    """What transformers and the library read: the folder's files, the user's own files aside."""
    if not folder.is_dir():
        return None
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in USER_FILES}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def leftovers(target: Path) -> list[str]:
    outside = [p.name for p in target.parent.iterdir() if p.name != target.name]
    inside = [p.name for p in target.glob(atomic_save.INSIDE_PREFIX + "*")]
    return outside + inside


def user_files_intact(target: Path) -> bool:
    return all((target / name).read_bytes() == content for name, content in USER_FILES.items())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_kill_at_every_step_leaves_the_old_or_the_new_checkpoint_and_the_next_save_cleans_up(killed, protocol):
    work, summary = killed
    result = summary[protocol]
    if "skipped" in result:
        pytest.skip(result["skipped"])  # the inside protocol is still covered by "inside" and the EXDEV test
    steps, ended = result["steps"], result["ended"]
    assert "_exchange" in steps or protocol in ("inside", "mount")  # the swap really ran where it should
    assert len(steps) >= 10 and set(ended.values()) == {"killed"}, ended
    old, new = checkpoint_files(work / "old" / "ckpt"), checkpoint_files(work / protocol / "count" / "ckpt")
    assert old != new and "model.safetensors.index.json" in old and "model.safetensors.index.json" not in new
    reference = {"old": weights(work / "old" / "ckpt"), "new": weights(work / protocol / "count" / "ckpt")}
    assert any(not torch.equal(a, reference["new"][k]) for k, a in reference["old"].items())
    model = AutoModelForImageClassification.from_pretrained(work / "new" / "ckpt")  # carries the plasticity record
    fresh = checkpoint_files(save_restored(model, work / protocol / "fresh" / "ckpt"))
    fresh.pop("README.md")
    kinds, loaded = {}, set()
    for k in map(str, range(len(steps))):
        target = work / protocol / k / "ckpt"
        state = checkpoint_files(target)
        kind = "old" if state == old else "new" if state == new else "missing" if state is None else "mixed"
        if kind == "missing":  # only between the two renames of the fallback, with the new folder complete
            assert protocol == "fallback" and list(target.parent.glob(".ckpt.replaced-*")), (k, steps[int(k)])
        if kind == "mixed":  # only while the inside protocol moves files in, after its journal was committed
            assert protocol in ("inside", "mount"), (k, steps[int(k)], sorted(state))
            assert list(target.glob(f"{atomic_save.INSIDE_PREFIX}*/{atomic_save.JOURNAL}")), (k, sorted(state))
        if kind in ("old", "new"):
            assert user_files_intact(target)
            if kind not in loaded:  # the same bytes load the same way: load each kind once, with plain transformers
                loaded.add(kind)
                got = weights(target)
                assert got.keys() == reference[kind].keys()
                assert all(torch.equal(got[name], tensor) for name, tensor in reference[kind].items())
        kinds[k] = kind
        # What the next save does first, on a copy: a save killed after its commit point is completed, the rest
        # of what it left is removed.
        copy = work / protocol / f"{k}-copy" / "ckpt"
        shutil.copytree(target.parent, copy.parent, symlinks=True)
        committed = bool(list(target.glob(f"{atomic_save.INSIDE_PREFIX}*/{atomic_save.JOURNAL}")))
        atomic_save.recover(copy)
        assert checkpoint_files(copy) == (new if committed or kind in ("missing", "mixed", "new") else old)
        assert user_files_intact(copy) and leftovers(copy) == []
        # The next save itself (public API): it cleans up and writes its checkpoint, the user's files kept.
        save_restored(model, target)
        assert leftovers(target) == [] and user_files_intact(target)
        assert {n: b for n, b in checkpoint_files(target).items() if n != "README.md"} == fresh
    assert {"old", "new"} <= set(kinds.values()), kinds  # the kills hit both sides of the commit


def test_a_mount_point_that_cannot_be_swapped_is_updated_from_inside(make_model, tmp_path, monkeypatch):
    """A bind mount looks like a plain folder (same device as its parent) until the swap fails with EXDEV (or EBUSY):
    the save then moves its files in from inside the folder. Old code: "Invalid cross-device link" after all the
    work."""
    from hf_plasticity import prepare_pretrained

    model = make_model("vit")
    prepare_pretrained(model, "reinit_layers")
    target = save_restored(model, tmp_path / "mnt" / "volume", max_shard_size="100KB")
    (target / "notes.txt").write_text("mine")
    with torch.no_grad():
        model.vit.layers[0].mlp.fc1.weight.add_(1.0)

    def cross_device(source, destination):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(destination))

    monkeypatch.setattr(atomic_save, "_exchange", cross_device)
    monkeypatch.setattr(os, "rename", cross_device)  # the fallback's renames fail the same way
    save_restored(model, target)
    monkeypatch.undo()
    assert (target / "notes.txt").read_text() == "mine" and leftovers(target) == []
    assert not (target / "model.safetensors.index.json").exists() and not list(target.glob("model-*"))
    got = weights(target)
    assert all(torch.equal(got[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("bad", ["", "file", "file/below"])
def test_a_bad_save_directory_is_refused_before_anything_is_written(make_model, tmp_path, bad):
    from hf_plasticity import prepare_pretrained

    model = make_model("vit")
    prepare_pretrained(model, "reinit_layers")
    (tmp_path / "file").write_text("a file")
    before = sorted(p.name for p in tmp_path.iterdir())
    path = str(tmp_path / bad) if bad else bad
    with pytest.raises(ValueError, match=r"`save_directory`.*(file|folder path)"):
        save_restored(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "file").read_text() == "a file"


LEFTOVERS = ("staging", "replaced", "inside", "inside-committed")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """A restored tiny ViT, its checkpoint saved sharded (the old one) and the files a fresh save of it writes."""
    from hf_plasticity import prepare_pretrained

    from .models import pretrained

    work = tmp_path_factory.mktemp("references")
    model = pretrained("vit", work)
    prepare_pretrained(model, "reinit_layers")
    old = save_restored(model, work / "old", max_shard_size="100KB")
    fresh = checkpoint_files(save_restored(model, work / "fresh"))
    fresh.pop("README.md")
    return model, old, fresh


@settings(max_examples=12, deadline=None)
@given(
    target_exists=st.booleans(),
    matching_staging=st.booleans(),
    leftovers_drawn=st.lists(st.sampled_from(LEFTOVERS), max_size=4),
    garbage=st.binary(max_size=64),
)
def test_the_next_save_recovers_or_removes_whatever_a_killed_save_left(
    references, tmp_path_factory, target_exists, matching_staging, leftovers_drawn, garbage
):
    """Hostile folder states as killed saves leave them: half-written staging folders, an old folder renamed away
    (with or without its complete replacement), staging folders inside the target with or without a committed
    journal. The next save always ends with its complete checkpoint, the user's files and no leftovers."""
    model, old, fresh = references
    target = tmp_path_factory.mktemp("state") / "parent" / "ckpt"
    target.parent.mkdir()

    def with_user_files(folder: Path) -> Path:
        shutil.copytree(old, folder)
        for name, content in USER_FILES.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        return folder

    if target_exists:
        with_user_files(target)
    else:  # killed between the two renames of the fallback swap
        with_user_files(target.parent / ".ckpt.replaced-x1")
        if matching_staging:
            with_user_files(target.parent / ".ckpt.saving-x1")
    for i, kind in enumerate(leftovers_drawn):
        if kind == "staging":
            (target.parent / f".ckpt.saving-g{i}").mkdir()
            (target.parent / f".ckpt.saving-g{i}" / "model.safetensors").write_bytes(garbage)
        elif kind == "replaced" and target_exists:
            with_user_files(target.parent / f".ckpt.replaced-g{i}")
        elif kind.startswith("inside") and target.is_dir():
            staging = target / f"{atomic_save.INSIDE_PREFIX}g{i}"
            staging.mkdir()
            (staging / "config.json").write_bytes(garbage)
            if kind == "inside-committed":  # moves its (garbage) config.json in and deletes a stale shard
                journal = {"move": ["config.json"], "delete": ["model-00001-of-00002.safetensors"]}
                (staging / atomic_save.JOURNAL).write_text(json.dumps(journal))
    save_restored(model, target)
    assert leftovers(target) == []
    assert {n: b for n, b in checkpoint_files(target).items() if n != "README.md"} == fresh
    assert user_files_intact(target)


def test_saving_into_the_working_directory_keeps_it_usable(references, tmp_path, monkeypatch):
    """A swap would leave the process in the old, deleted folder (`os.getcwd()` fails): it updates from inside."""
    model, old, fresh = references
    target = tmp_path / "here"
    shutil.copytree(old, target)
    monkeypatch.chdir(target)
    save_restored(model, ".")
    assert Path(os.getcwd()) == target and Path("config.json").is_file()
    assert {n: b for n, b in checkpoint_files(target).items() if n != "README.md"} == fresh and leftovers(target) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_new_checkpoint_folder_gets_the_umask_s_permissions_and_an_old_one_keeps_its_own(
    make_model, tmp_path, umask
):
    """The staging folder is private (mkdtemp: 0700); the checkpoint it becomes is not, unless the umask says so."""
    model = make_model("vit")
    prepare_pretrained(model)
    previous = os.umask(umask)
    try:
        save_restored(model, tmp_path / "new")
        (tmp_path / "old").mkdir(mode=0o750)
        os.chmod(tmp_path / "old", 0o750)
        save_restored(model, tmp_path / "old")
    finally:
        os.umask(previous)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "old").stat().st_mode & 0o777 == 0o750
