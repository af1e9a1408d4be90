"""Kills `save_restored` with SIGKILL before each of its file-system steps (test code, run by tests/test_save_kill.py).

Usage: ``python -m tests.save_child WORK PROTOCOL...``, each PROTOCOL one of ``swap`` (the usual case),
``fallback`` (the swap without ``renameat2``), ``inside`` (the protocol for folders that cannot be renamed, forced)
and ``mount`` (a real tmpfs mount point as the target; needs root).

It writes ``WORK/old/ckpt`` and ``WORK/new/ckpt`` (the complete old and new checkpoints, saved normally), counts the
file-system steps of one save of the new model over the old checkpoint (renames, links, unlinks, mkdir, rmdir, the
folder swap), then for every step k: copies the old checkpoint (plus a user's files) to ``WORK/PROTOCOL/k/ckpt``,
forks a child that saves the new model there and, just before step k, tells the parent through a pipe and waits (a
slow file system); the parent kills it with SIGKILL. It prints a JSON summary per protocol: the steps and how each
child ended (or why the protocol was skipped). The test then checks each of those folders.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

STEPS = ("rename", "replace", "link", "unlink", "remove", "rmdir", "mkdir", "symlink")
USER_FILES = {"notes.txt": b"my notes\n", "runs/log.txt": b"a training log\n"}


def mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], check=True, capture_output=True)


def install_hook(at: int | None, pipe: int | None) -> tuple[list[str], list[tuple]]:
    """Wraps the file-system steps: counts them, and before step ``at`` signals ``pipe`` and sleeps until killed.
    Returns the steps seen and what to put back to undo the hook."""
    from hf_plasticity.integrations import atomic_save

    seen: list[str] = []
    undo: list[tuple] = []

    def wrap(owner, name):
        real = getattr(owner, name)
        undo.append((owner, name, real))

        def step(*args, **kwargs):
            if at is not None and len(seen) == at:
                os.write(pipe, b"k")
                time.sleep(600)  # the parent kills us here
            seen.append(name)
            return real(*args, **kwargs)

        setattr(owner, name, step)

    for name in STEPS:
        wrap(os, name)
    wrap(atomic_save, "_exchange")
    return seen, undo


def prepare_target(target: Path, old: Path, mount: bool) -> None:
    if mount:
        mount_tmpfs(target)
    shutil.copytree(old, target, dirs_exist_ok=True)
    for name, content in USER_FILES.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(content)


def kill_at_every_step(work: Path, protocol: str, new_model, old: Path) -> dict:
    """Saves ``new_model`` over ``old`` once per file-system step, killed before that step; see the module doc."""
    from hf_plasticity import save_restored
    from hf_plasticity.integrations import atomic_save

    mount = protocol == "mount"
    real_inside, real_exchange = atomic_save.inside_protocol, atomic_save._exchange
    if protocol == "inside":
        atomic_save.inside_protocol = lambda folder: True
    if protocol == "fallback":
        atomic_save._exchange = lambda source, target: False
    try:
        count = work / "count" / "ckpt"
        prepare_target(count, old, mount)
        steps, undo = install_hook(None, None)
        save_restored(new_model, count)
        for owner, name, real in undo:
            setattr(owner, name, real)
        ended = {}
        for k in range(len(steps)):
            target = work / str(k) / "ckpt"
            prepare_target(target, old, mount)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: save, slowed down at step k
                os.close(read)
                try:
                    install_hook(k, write)
                    save_restored(new_model, target)
                finally:
                    os._exit(0)
            os.close(write)
            signalled = os.read(read, 1) == b"k"
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            os.close(read)
            ended[k] = "killed" if signalled and os.WIFSIGNALED(status) else f"not killed ({status})"
    finally:
        atomic_save.inside_protocol, atomic_save._exchange = real_inside, real_exchange
    return {"steps": steps, "ended": ended}


def main(work: Path, protocols: list[str]) -> None:
    from hf_plasticity import SelectiveReinitConfig, prepare_pretrained, save_restored
    from tests.models import pretrained

    (work / "models").mkdir(parents=True)
    old_model = pretrained("vit", work / "models")
    prepare_pretrained(old_model, "reinit_layers")
    new_model = pretrained("vit", work / "models")
    prepare_pretrained(new_model, SelectiveReinitConfig(utility="magnitude", fraction=0.3, seed=1))
    save_restored(old_model, work / "old" / "ckpt", max_shard_size="100KB")  # sharded: the new save makes it stale
    save_restored(new_model, work / "new" / "ckpt")
    results = {}
    for protocol in protocols:
        if protocol == "mount":
            try:
                mount_tmpfs(work / "probe")
                subprocess.run(["umount", str(work / "probe")], check=True)
            except (OSError, subprocess.CalledProcessError) as error:
                results[protocol] = {"skipped": f"cannot mount a tmpfs here ({error})"}
                continue
        results[protocol] = kill_at_every_step(work / protocol, protocol, new_model, work / "old" / "ckpt")
    print(json.dumps(results))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), sys.argv[2:])
