"""Multi-process behaviour: two real CPU processes (gloo) under `accelerate launch`, and sharded (FSDP2 / DTensor)
parameters refused with advice to restore before wrapping."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_plasticity import PlasticityController, ShardedModelError, prepare_pretrained
from hf_plasticity.core.collectives import check_not_sharded, sharded_parameters

from .models import TinyCNN, batches

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_cli() -> str:
    local = Path(sys.executable).with_name("accelerate")
    return str(local) if local.exists() else shutil.which("accelerate")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Runs tests/dist_script.py on two processes once; returns each rank's JSON record."""
    out = tmp_path_factory.mktemp("dist")
    command = [
        accelerate_cli(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(ROOT / "tests" / "dist_script.py"), str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DIST_SCRIPT_TIMEOUT": "240"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_under_torchrun_on_cpu_compare_s_runs_train_together_and_a_gloo_only_trainer_is_warned(tmp_path):
    """Two real processes (``torchrun``, no GPU): with the options `compare` gives its runs the `Trainer` is in a
    distributed mode (DDP), and with the gloo backend alone (no ``use_cpu``) it is not, although its ``world_size``
    reads 2: the library's check says so, and its warning names ``use_cpu``."""
    script = str(ROOT / "tests" / "dist_args_script.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), script, str(tmp_path)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    for rank in (0, 1):
        record = json.loads((tmp_path / f"rank{rank}.json").read_text())
        compare_args, gloo_only = record["compare"], record["gloo_only"]
        assert compare_args["parallel_mode"] == "ParallelMode.DISTRIBUTED" and compare_args["trains_together"]
        assert compare_args["warning"] is None and compare_args["world_size"] == 2
        assert gloo_only["parallel_mode"] == "ParallelMode.NOT_PARALLEL" and gloo_only["world_size"] == 2
        assert not gloo_only["trains_together"] and "use_cpu=True" in gloo_only["warning"]


@pytest.mark.parametrize("loop", ["trainer", "accelerate"])
def test_parameters_are_bitwise_identical_on_every_rank(two_ranks, loop):
    rank0, rank1 = two_ranks[0][loop], two_ranks[1][loop]
    assert two_ranks[0]["world_size"] == 2
    assert rank0["sums"] == rank1["sums"]  # after the restore, after every periodic reset, at the end
    assert rank0["sums"]["before"] != rank0["sums"]["restore"]  # the restore did change the weights
    assert len(set(rank0["sums"].values())) == len(rank0["sums"]) - 1  # every reset step changed them ("end" repeats)
    assert rank0["steps"] == rank1["steps"]  # the strategy state followed rank 0 on rank 1 too


def test_the_plan_comes_from_rank_0_only(two_ranks):
    """The shards differ (so independent plans would differ); only rank 0 reads data and logs."""
    rank0, rank1 = two_ranks
    assert rank0["trainer"]["shard_label_sum"] != rank1["trainer"]["shard_label_sum"]
    assert rank0["trainer"]["logged"] > 0 and rank1["trainer"]["logged"] == 0
    assert rank0["trainer"]["batches_read"] == 2 and rank1["trainer"]["batches_read"] == 0
    # Plain loop: rank 1 holds 1 calibration batch where the strategy asks for 3; no deadlock, rank 0's 3 are used.
    assert rank0["accelerate"]["batches_read"] == 3 and rank1["accelerate"]["batches_read"] == 0
    # What rank 0's plan decided is recorded on every rank (rank 1's own data would have given another decision).
    assert rank0["accelerate"]["details"] and rank0["accelerate"]["details"] == rank1["accelerate"]["details"]


def test_the_recipe_gives_identical_groups_rates_and_resumes_on_every_rank(two_ranks):
    rank0, rank1 = two_ranks[0]["grouped"], two_ranks[1]["grouped"]
    assert rank0["sizes"] == rank1["sizes"] and rank0["sizes"]["redrawn"] > 0
    assert rank0["rates"] == rank1["rates"] and len(rank0["rates"]) == 4
    assert rank0["rates"][1]["redrawn"] == pytest.approx(10 * rank0["rates"][1]["backbone"])  # 1e-2 vs 1e-3
    assert rank0["end"] == rank1["end"]
    assert (
        rank0["resumed_end"] == rank1["resumed_end"] == rank0["end"]
    )  # stopped, resumed: where the straight run ends
    assert "plasticity_config.json" in rank0["files"] and "README.md" in rank0["files"]
    assert rank0["card_rates"] == ["| `redrawn` | 0.01 | 0 | " + f"{rank0['sizes']['redrawn']:,} |"]


@pytest.fixture
def fsdp2_model(tmp_path):
    """A TinyCNN wrapped with FSDP2 `fully_shard` in a one-process gloo group: its parameters are real DTensors."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = TinyCNN()
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        yield model
    finally:
        torch.distributed.destroy_process_group()


def test_fsdp2_dtensor_parameters_are_refused(fsdp2_model):
    assert sharded_parameters(fsdp2_model)
    with pytest.raises(ShardedModelError, match="restore before wrapping"):
        check_not_sharded(fsdp2_model)
    controller = PlasticityController("reinit_layers")
    with pytest.raises(ShardedModelError, match="prepare_pretrained"):
        controller.restore(fsdp2_model)
    with pytest.raises(ShardedModelError):
        controller.validate(fsdp2_model, has_data=True)


def test_restore_before_wrapping_is_the_supported_path():
    model = TinyCNN()
    assert not sharded_parameters(model)
    prepare_pretrained(model, data=batches(1))  # then wrap (FSDP / DDP) and train
    assert not sharded_parameters(nn.Sequential(model))
