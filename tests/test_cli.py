"""The `hf-plasticity prepare` and `diagnose` commands, end to end in subprocesses, on a tiny model saved locally
and an imagefolder made here. Independent calls of one test run concurrently to keep the suite short."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import AutoModelForImageClassification, ViTImageProcessor

from hf_plasticity import PlasticityConfig
from hf_plasticity.cli._common import CommandError, looks_like_path
from hf_plasticity.cli.main import main
from hf_plasticity.cli.params import build_config

from .hub_server import LocalHub, point_client_at
from .models import IMAGE_SIZE, batches, pretrained

CLASSES = ("cats", "dogs")
SCRIPT = Path(sys.executable).with_name("hf-plasticity")  # the console script; `python -m` when not installed
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "hf_plasticity.cli.main"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 'pretrained' ViT (3 labels) with its image processor, and an imagefolder of 2 classes."""
    root = tmp_path_factory.mktemp("cli")
    pretrained("vit", root / "tiny-vit")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "tiny-vit")
    for c, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (200 * c, 40 * i, 90)).save(root / "images" / name / f"{i}.png")
    return root


def base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("HF_PLASTICITY_DEBUG", None)
    return env


def run_all(*calls: tuple[list[str], dict[str, str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Runs several `hf-plasticity` calls concurrently; returns their results in order."""
    processes = [
        subprocess.Popen(
            [*COMMAND, *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv, env in calls
    ]
    results = []
    for process, (argv, _) in zip(processes, calls):
        stdout, stderr = process.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))
    return results


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batches(1, 4)[0]["pixel_values"]).logits


# -------------------------------------------------------------------------------------------------- success
def test_help_of_every_command(capsys):
    for argv, expected in ((["prepare", "--help"], "--push-to-hub REPO_ID"), (["diagnose", "--help"], "--plot PNG")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0 and expected in capsys.readouterr().out


def test_prepare_and_diagnose_with_data(workspace, tmp_path):
    env = base_env(tmp_path / "home")
    out = tmp_path / "restored"
    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    selective = ["--strategy", "selective", "--param", "utility=grad_x_weight", "fraction=0.05"]
    prepare, diagnose = run_all(
        (["prepare", model, *selective, "--param", "calibration_batch_size=4", "--data", images, "--output", str(out)],
         env),
        (["diagnose", model, "--data", images, "--batches", "2", "--batch-size", "4", "--plot",
          str(tmp_path / "plots" / "d.png"), "--json", str(tmp_path / "d.json")], env),
        cwd=tmp_path,
    )  # fmt: skip
    assert prepare.returncode == 0, prepare.stderr
    assert "Plasticity restore: strategy=selective" in prepare.stdout
    assert "New classification head with 2 labels." in prepare.stdout and "dormant_ratio" in prepare.stdout
    assert "reading data" in prepare.stderr  # the progress bar while scoring
    assert {"README.md", "config.json", "model.safetensors", "plasticity_config.json", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()
    }
    restored = AutoModelForImageClassification.from_pretrained(out)
    assert restored.config.id2label == dict(enumerate(CLASSES))
    assert restored.config.plasticity["strategy"] == "selective"
    config = PlasticityConfig.from_pretrained(out)
    assert config.strategy == "selective" and config.fraction == 0.05 and config.calibration_batch_size == 4
    card = (out / "README.md").read_text()
    assert "library_name: hf-plasticity" in card and "<!-- hf-plasticity:start -->" in card
    assert "| `dormant_ratio` |" in card  # the diagnostics measured on --data reach the card

    assert diagnose.returncode == 0, diagnose.stderr
    assert "Plasticity diagnostics on 8 samples (2 batches), tau=0.1" in diagnose.stdout
    assert (tmp_path / "plots" / "d.png").stat().st_size > 0
    assert json.loads((tmp_path / "d.json").read_text())["samples"] == 8


def test_prepare_push_to_hub(workspace, tmp_path, monkeypatch):
    model = str(workspace / "tiny-vit")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "notes.txt").write_text("mine")  # --overwrite writes into a non-empty folder, keeping it
    with LocalHub() as hub:
        (pushed,) = run_all(
            (["prepare", model, "--strategy", "reinit_layers", "--output", str(tmp_path / "ok"), "--push-to-hub",
              "user/tiny-restored", "--private", "--overwrite"], hub.env(tmp_path / "home")),
            cwd=tmp_path,
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        assert f"Pushed to {hub.url}/user/tiny-restored/commit/" in pushed.stdout
        assert (tmp_path / "ok" / "notes.txt").read_text() == "mine"
        repo = hub.repos["user/tiny-restored"]
        assert repo.private is True
        assert {"README.md", "config.json", "model.safetensors", "plasticity_config.json"} <= set(repo.head.files)
        point_client_at(hub, monkeypatch, tmp_path / "cache")
        from_hub = AutoModelForImageClassification.from_pretrained("user/tiny-restored")
        assert torch.equal(logits(from_hub), logits(AutoModelForImageClassification.from_pretrained(tmp_path / "ok")))


def test_failed_push_exits_with_one_line_and_keeps_the_output(workspace, tmp_path, monkeypatch, capsys):
    with LocalHub() as broken:
        broken.fail_with = 500
        point_client_at(broken, monkeypatch, tmp_path / "cache")
        argv = ["prepare", str(workspace / "tiny-vit"), "--strategy", "reinit_layers", "--output"]
        assert main([*argv, str(tmp_path / "kept"), "--push-to-hub", "user/tiny-restored"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-plasticity")]
    assert len(lines) == 1 and lines[0].startswith("hf-plasticity prepare: error: Could not push to 'user/tiny")
    assert "500" in lines[0] and str(tmp_path / "kept") in lines[0]
    assert (tmp_path / "kept" / "model.safetensors").is_file() and (tmp_path / "kept" / "README.md").is_file()


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_exits_with_one_line_and_writes_nothing(workspace, tmp_path):
    env = base_env(workspace / "home-bad")
    (workspace / "home-bad").mkdir(exist_ok=True)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    model, out = str(workspace / "tiny-vit"), str(tmp_path / "out")
    cases = {
        "no such directory": ["prepare", str(tmp_path / "missing-model"), "--strategy", "reinit_layers",
                              "--output", out],
        "pass --data": ["prepare", model, "--strategy", "selective", "--output", out],
        "Unknown strategy 'bogus'. Accepted strategies: ": ["prepare", model, "--strategy", "bogus", "--output", out],
        "exists and is not empty; pass --overwrite": ["prepare", model, "--strategy", "reinit_layers",
                                                      "--output", str(full)],
    }  # fmt: skip
    before = {**tree(tmp_path), **{f"ws/{k}": v for k, v in tree(workspace).items()}}
    results = run_all(*[(argv, env) for argv in cases.values()], cwd=tmp_path)
    for expected, result in zip(cases, results):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, (expected, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("hf-plasticity "), (expected, result.stderr)
        assert expected in lines[0] and "Traceback" not in result.stderr
        assert result.stdout == ""
    after = {**tree(tmp_path), **{f"ws/{k}": v for k, v in tree(workspace).items()}}
    assert after == before  # nothing written anywhere


# --------------------------------------------------------------------------------------------- in process
def test_more_bad_input_in_process(workspace, tmp_path, capsys):
    model, out = str(workspace / "tiny-vit"), str(tmp_path / "out")
    cases = {
        "Unknown parameter 'blocks' for strategy 'reinit_layers'. Accepted: exclude_modules": [
            "prepare", model, "--strategy", "reinit_layers", "--param", "blocks=2", "--output", out],
        "`num_blocks` must be a positive integer or None, got 0": [
            "prepare", model, "--strategy", "reinit_layers", "--param", "num_blocks=0", "--output", out],
        "Cannot load data": [
            "prepare", model, "--strategy", "reinit_layers", "--data", str(tmp_path / "nowhere"), "--output", out],
        "--private applies to --push-to-hub": [
            "prepare", model, "--strategy", "reinit_layers", "--private", "--output", out],
        "is a file": [
            "prepare", model, "--strategy", "reinit_layers", "--output", str(workspace / "images" / "cats" / "0.png")],
        "--num-labels is 5 but the data has 2 classes": [
            "diagnose", model, "--data", str(workspace / "images"), "--num-labels", "5"],
        "acts during training only (use PlasticityCallback); prepare runs the one-shot strategies: ": [
            "prepare", model, "--strategy", "rifle", "--output", out],
    }  # fmt: skip
    before = tree(tmp_path)
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], (expected, captured.err)
    assert tree(tmp_path) == before


def test_build_config_reads_json_values_and_lists():
    config = build_config(
        "selective", ["utility=magnitude", "fraction=0.05", "include-bias=true", "target_modules=fc1,fc2", "seed=3"]
    )
    assert (config.utility, config.fraction, config.include_bias, config.seed) == ("magnitude", 0.05, True, 3)
    assert config.target_modules == ["fc1", "fc2"]
    assert build_config("selective", ['target_modules=["a.b"]']).target_modules == ["a.b"]
    with pytest.raises(CommandError, match="key=value"):
        build_config("selective", ["fraction"])
    with pytest.raises(CommandError, match=r"`fraction` must be a finite number in \(0, 1\]"):
        build_config("selective", ["fraction=2"])


def test_catalogue_commands_are_valid():
    from hf_plasticity.cli.main import build_parser
    from hf_plasticity.cli.prepare import check_one_shot

    text = (Path(__file__).resolve().parents[1] / "model_cards" / "CATALOGUE.md").read_text()
    commands = [line for line in text.splitlines() if line.startswith("hf-plasticity prepare ")]
    assert len(commands) == 6
    bases = {"google/vit-base-patch16-224", "facebook/convnext-tiny-224", "microsoft/resnet-50"}
    assert {shlex.split(c)[2] for c in commands} == bases
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        config = build_config(args.strategy, args.params)
        check_one_shot(config)
        assert not config.requires_data and args.data is None  # data-free: one checkpoint for every task
        assert args.push_to_hub.startswith("NAMESPACE/") and args.push_to_hub.endswith(args.output)


def test_looks_like_path():
    assert looks_like_path("/abs/model") and looks_like_path("./model") and looks_like_path("a/b/c")
    assert not looks_like_path("google/vit-base-patch16-224") and not looks_like_path("gpt2")


def test_example_command_restores_offline_and_prints_the_report(capsys):
    from hf_plasticity.cli.main import main

    assert main(["example", "--strategy", "selective"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plasticity restore: strategy=selective")
    assert "vit.layers.3.mlp.fc2.weight" in out


# ------------------------------------------------------------------------------------------- user-facing details
def test_prepare_defaults_to_the_library_strategy(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", str(workspace / "tiny-vit"), "--output", str(out)]) == 0
    assert PlasticityConfig.from_pretrained(out).strategy == "reinit_layers"
    assert "reinit_layers" in capsys.readouterr().out


def test_param_and_data_errors_name_what_the_strategy_accepts(workspace, tmp_path, capsys):
    model, out = str(workspace / "tiny-vit"), str(tmp_path / "out")
    cases = {
        "Parameters of 'reinit_layers': exclude_modules, layer_scale, num_blocks, seed.": [
            "prepare", model, "--param", "num_blocks=0", "--output", out],
        "pass --data DIR_OR_DATASET, or choose a data-free strategy (reinit_layers, shrink_perturb).": [
            "prepare", model, "--strategy", "auto", "--output", out],
        "or choose a data-free setting (--param utility=magnitude or utility=random)": [
            "prepare", model, "--strategy", "selective", "--output", out],
    }  # fmt: skip
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        err = capsys.readouterr().err
        assert expected in err, (expected, err)
        assert "utility=magnitude" not in err or "selective" in argv


def test_progress_bars_count_what_they_read_from_one(capsys):
    from hf_plasticity.integrations.datasets_io import BatchProgress

    rows = {"pixel_values": torch.zeros(10, 3, 4, 4), "labels": torch.zeros(10, dtype=torch.long)}

    class Rows:
        def __len__(self):
            return 10

        def __getitem__(self, item):
            return {k: v[item] for k, v in rows.items()}

    read = [batch for _, batch in zip(range(2), BatchProgress(Rows(), batch_size=2, description="reading"))]
    assert len(read) == 2
    err = capsys.readouterr().err
    assert "reading: " in err and "1/5" in err and "0/5" not in err and "0batch" not in err


def test_plots_from_the_command_line(workspace, tmp_path, capsys):
    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    folder = tmp_path / "figures"
    folder.mkdir()
    assert main(["diagnose", model, "--data", images, "--batches", "1", "--plot", str(folder)]) == 0
    assert f"Wrote {folder / 'plasticity.png'}" in capsys.readouterr().out  # a directory gets plasticity.png
    assert (folder / "plasticity.png").read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "restored"
    assert main(["prepare", model, "--data", images, "--plot", str(tmp_path / "prepare"), "--output", str(out)]) == 0
    assert f"Wrote {tmp_path / 'prepare.png'}" in capsys.readouterr().out  # no extension: .png added
    assert (tmp_path / "prepare.png").is_file() and (out / "plasticity.png").is_file()
    assert "](plasticity.png)" in (out / "README.md").read_text()
    assert main(["prepare", model, "--plot", "x.png", "--output", str(tmp_path / "other")]) == 2
    assert "--plot draws the diagnostics before and after the restore" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_plot_without_matplotlib_says_how_to_install_it_from_the_index_and_from_a_checkout(
    workspace, tmp_path, capsys, monkeypatch
):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # as if matplotlib were not installed
    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    assert main(["diagnose", model, "--data", images, "--plot", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "hf-plasticity[plot]"' in err and 'pip install -e ".[plot]"' in err, err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- paths checked before the work
def test_an_empty_or_current_output_is_refused_before_anything_is_read(workspace, tmp_path, monkeypatch, capsys):
    """`--output "$OUT"` with OUT unset saved into the current directory, over the user's files, and exited 0."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "model.safetensors").write_text("my weights")
    monkeypatch.chdir(mine)
    before = tree(mine)
    model = str(workspace / "tiny-vit")
    cases = {
        "": "--output is empty",
        "   ": "--output is empty",
        ".": "--output '.' is the current directory",
        str(mine): "is the current directory",
    }
    for output, expected in cases.items():
        assert main(["prepare", model, "--output", output]) == 2, output
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], (output, lines)
        # the blank case is refused even with --overwrite: an unset variable is never meant as "here"
        assert output.strip() or main(["prepare", model, "--output", output, "--overwrite"]) == 2
        capsys.readouterr()
    assert tree(mine) == before and (mine / "model.safetensors").read_text() == "my weights"


def test_every_path_a_command_writes_is_checked_before_the_work(workspace, tmp_path, capsys):
    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "a-dir").mkdir()
    diagnose = ["diagnose", model, "--data", images, "--batches", "1"]
    prepare = ["prepare", model, "--data", images, "--output", str(tmp_path / "out")]
    cases = {
        "--json '{d}/a-dir' is a directory; give a file path": [*diagnose, "--json", "{d}/a-dir"],
        "--json '{d}/a-file/r.json': '{d}/a-file' is not a directory": [*diagnose, "--json", "{d}/a-file/r.json"],
        "--json is empty": [*diagnose, "--json", ""],
        "--plot '{d}/a-file/sub/p.png': '{d}/a-file' is not a directory": [
            *diagnose, "--plot", "{d}/a-file/sub/p.png"],
        "--plot '{d}/a-file/p.png': '{d}/a-file' is not a directory": [*prepare, "--plot", "{d}/a-file/p.png"],
        "--output '{d}/a-file/out': '{d}/a-file' is not a directory": [
            "prepare", model, "--output", "{d}/a-file/out"],
    }  # fmt: skip
    before = tree(tmp_path)
    for expected, argv in cases.items():
        argv = [arg.format(d=tmp_path) for arg in argv]
        assert main(argv) == 2, expected
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and expected.format(d=tmp_path) in lines[0], (expected, captured.err)
        assert "diagnosing" not in captured.err and captured.out == ""  # refused before any batch was read
    assert tree(tmp_path) == before


def test_a_path_on_a_read_only_file_system_is_refused_before_the_work(workspace, tmp_path, capsys, monkeypatch):
    """os.access says whether a folder takes new files (root included, on a read-only mount): simulated here."""
    import hf_plasticity.cli._common as common

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(common.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    argv = ["diagnose", str(workspace / "tiny-vit"), "--data", str(workspace / "images"), "--json"]
    assert main([*argv, str(locked / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"--json '{locked / 'r.json'}': cannot write into '{locked}'" in err and "diagnosing" not in err


def test_errors_name_the_option_the_user_typed(workspace, tmp_path, capsys):
    model, images, out = str(workspace / "tiny-vit"), str(workspace / "images"), str(tmp_path / "out")
    cases = {
        "--tau must be a finite number >= 0, got nan.": ["diagnose", model, "--data", images, "--tau", "nan"],
        "--seed must be an integer >= 0, got -1.": ["diagnose", model, "--data", images, "--seed", "-1"],
        "--batches must be a positive integer, got 0.": ["diagnose", model, "--data", images, "--batches", "0"],
        "--batch-size must be a positive integer, got -1.": [
            "diagnose", model, "--data", images, "--batch-size", "-1"],
        "--push-to-hub 'bad id!!' is not a valid Hub repository id": [
            "prepare", model, "--output", out, "--push-to-hub", "bad id!!"],
    }  # fmt: skip
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1, (expected, lines)
        assert lines[0].startswith(f"hf-plasticity {argv[0]}: error: {expected}"), (expected, lines)
        assert captured.out == "", expected  # refused before the model was loaded or restored
    assert not (tmp_path / "out").exists()


def test_diagnose_usage_shows_data_as_required_and_prints_the_feature_rank_it_promises(workspace, capsys):
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    help_text = capsys.readouterr().out
    usage = " ".join(help_text.split("\n\n")[0].split())
    assert "--data DIR_OR_DATASET" in usage and "[--data DIR_OR_DATASET]" not in usage
    assert "rank of the penultimate features" in " ".join(help_text.split())
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", str(workspace / "tiny-vit")])
    assert exit_info.value.code == 2 and "the following arguments are required: --data" in capsys.readouterr().err
    assert main(["diagnose", str(workspace / "tiny-vit"), "--data", str(workspace / "images"), "--batches", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[1]  # after the new-head line
    assert re.search(r"penultimate features: effective rank \d+\.\d, stable rank \d+ of 32$", first), first


# ------------------------------------------------------------------------------------------- --param, typed
def test_param_values_are_read_as_their_field_type_and_errors_name_the_key():
    config = build_config("reinit_layers", ["num_blocks=none", "layer_scale=0.5", "exclude_modules=vit.layers.0"])
    assert (config.num_blocks, config.layer_scale, config.exclude_modules) == (None, 0.5, ["vit.layers.0"])
    assert build_config("reinit_layers", ["layer_scale=keep"]).layer_scale == "keep"
    assert build_config("rifle", ["epochs=[1, 2.5]"]).epochs == [1.0, 2.5]
    cases = {
        "include_bias=1": "--param include_bias=1: include_bias takes true or false, got '1'.",
        "include_bias=yes": "--param include_bias=yes: include_bias takes true or false, got 'yes'.",
        "seed=1.5": "--param seed=1.5: seed takes an integer, got '1.5'.",
        "calibration_batches=none": "--param calibration_batches=none: calibration_batches takes an integer, got",
        "fraction=x": "--param fraction=x: fraction takes a number, got 'x'.",
        "last_k_blocks=x": "--param last_k_blocks=x: last_k_blocks takes an integer or none, got 'x'.",
        "fraction=2": "--param fraction=2: `fraction` must be a finite number in (0, 1], got 2.0.",
        "utility=bogus": "--param utility=bogus: `utility` must be one of ['grad_x_weight', 'grad', 'magnitude',",
    }
    for param, expected in cases.items():
        with pytest.raises(CommandError) as error:
            build_config("selective", ["utility=magnitude", param] if "utility" not in param else [param])
        assert str(error.value).startswith(expected), (param, str(error.value))
    with pytest.raises(CommandError, match="--param fraction is given twice"):
        build_config("selective", ["fraction=0.1", "fraction=0.2"])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_param_value_gives_a_config_or_one_error_naming_the_key(data):
    from hf_plasticity import available_strategies, get_config_class
    from hf_plasticity.cli.params import parameter_fields

    strategy = data.draw(st.sampled_from(available_strategies()))
    key = data.draw(st.sampled_from(sorted(parameter_fields(get_config_class(strategy)))))
    raw = data.draw(
        st.one_of(
            st.sampled_from(
                ["true", "false", "none", "0", "1", "-1", "0.5", "nan", "inf", "1e-3", "[1, 2]", "a,b", ""]
            ),
            st.text(max_size=8),
        )
    )
    try:
        config = build_config(strategy, [f"{key}={raw}"])
    except CommandError as error:
        message = str(error)
        assert "\n" not in message.strip() and (f"--param {key}=" in message or "Unknown" not in message), message
        assert key in message
    else:
        assert config.strategy == strategy


def test_prepare_help_lists_the_parameters_of_the_strategy(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--strategy", "selective", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--push-to-hub REPO_ID" in out  # the usual help first
    assert "Parameters of strategy 'selective' (--param KEY=VALUE ...):" in out
    assert "  fraction=FLOAT  (default: 0.01)" in out and "Share of each tensor re-initialized" in out
    assert "  include_bias=true|false  (default: false)" in out and "  every_n_steps=INT|none  (default: none)" in out
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "Parameters of strategy 'reinit_layers'" in capsys.readouterr().out  # the default strategy's


def test_a_negative_seed_with_data_is_refused_before_loading(workspace, tmp_path, capsys):
    """The data is shuffled with the strategy's seed, which datasets takes only >= 0 ('expected non-negative
    integer', after the model was loaded)."""
    argv = ["prepare", str(workspace / "tiny-vit"), "--param", "seed=-1", "--data", str(workspace / "images")]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "--param seed=-1: the seed also shuffles --data, which needs a seed >= 0." in captured.err
    assert captured.out == "" and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ determinism and what reaches the Hub
def test_a_new_head_is_drawn_from_the_seed_so_the_same_command_gives_the_same_result(workspace, tmp_path, capsys):
    """The data has 2 classes and the model 3: the new head was drawn from the unseeded global RNG, and a gradient-
    scored strategy scores through it, so two identical commands gave different checkpoints (backbone included)."""
    from safetensors.torch import load_file

    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    selective = ["--strategy", "selective", "--param", "fraction=0.1", "seed=7", "calibration_batch_size=4"]
    outputs, reports = [], []
    for run, global_seed in enumerate((1, 2)):  # another state of the caller's global RNG each time
        torch.manual_seed(global_seed)
        state = torch.random.get_rng_state()
        out, report = tmp_path / f"run{run}", tmp_path / f"{run}.json"
        assert main(["prepare", model, *selective, "--data", images, "--output", str(out)]) == 0
        assert main(["diagnose", model, "--data", images, "--batches", "1", "--json", str(report)]) == 0
        assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left as it was
        outputs.append(load_file(out / "model.safetensors"))
        reports.append({k: v for k, v in json.loads(report.read_text()).items() if not k.endswith("seconds")})
    capsys.readouterr()
    assert outputs[0].keys() == outputs[1].keys()
    assert [k for k in outputs[0] if not torch.equal(outputs[0][k], outputs[1][k])] == []
    assert reports[0] == reports[1] and reports[0]["layers"]


def test_hub_options_are_kept_when_the_head_is_replaced(workspace, monkeypatch, capsys):
    """`local_files_only` (the Hub unreachable, the files cached) was dropped when the head was replaced."""
    import transformers

    import hf_plasticity.cli._common as common

    seen: list[dict] = []
    config = transformers.AutoConfig.from_pretrained(workspace / "tiny-vit")  # 3 labels, the data 2

    def fake_model(name, **kwargs):
        seen.append(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(common, "hub_access", lambda repo_id, repo_type: {"local_files_only": True})
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda name, **kwargs: config)
    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", fake_model)
    assert main(["diagnose", "someone/cached-model", "--data", str(workspace / "images")]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen and seen[0]["local_files_only"] is True and seen[0]["ignore_mismatched_sizes"] is True


# --------------------------------------------------------------------------- more paths checked before the work
def test_plot_json_and_output_values_that_would_go_wrong_after_the_work_are_refused(workspace, tmp_path, capsys):
    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    work = tmp_path / "work"  # checked untouched (a broken link beside it: tree() cannot stat one)
    work.mkdir()
    (tmp_path / "broken-link").symlink_to(tmp_path / "nowhere")
    diagnose = ["diagnose", model, "--data", images, "--batches", "1"]
    prepare = ["prepare", model, "--data", images, "--output", "{d}/out"]
    cases = {
        "--plot is empty": [*diagnose, "--plot", ""],  # was silently ignored
        "--plot is empty ": [*prepare, "--plot", " "],
        "--plot '{d}/fig.json': matplotlib cannot save a figure as .json; give a path ending with one of ": [
            *diagnose, "--plot", "{d}/fig.json"],  # was refused after the work
        "--json '{d}/d1/' ends with a path separator; give a file path": [*diagnose, "--json", "{d}/d1/"],
        "--output '{d}/../broken-link' exists and is not a directory": [
            "prepare", model, "--output", "{d}/../broken-link"],
    }  # fmt: skip
    if os.path.exists(os.devnull):
        cases["--output '/dev/null' exists and is not a directory"] = ["prepare", model, "--output", os.devnull]
    before = tree(work)
    for expected, argv in cases.items():
        argv = [arg.format(d=work) for arg in argv]
        assert main(argv) == 2, expected
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and expected.strip().format(d=work) in lines[0], (expected, captured.err)
        assert "diagnosing" not in captured.err and captured.out == ""  # refused before any batch was read
    assert tree(work) == before


def test_plot_into_a_folder_that_does_not_exist_yet(workspace, tmp_path, capsys):
    """`--plot figdir/` wrote the hidden file figdir/.png.png and printed another path."""
    argv = ["diagnose", str(workspace / "tiny-vit"), "--data", str(workspace / "images"), "--batches", "1"]
    assert main([*argv, "--plot", f"{tmp_path / 'figdir'}{os.sep}"]) == 0
    assert f"Wrote {tmp_path / 'figdir' / 'plasticity.png'}\n" in capsys.readouterr().out
    assert os.listdir(tmp_path / "figdir") == ["plasticity.png"]
    assert main([*argv, "--plot", str(tmp_path / "fig.svg")]) == 0  # any format matplotlib saves
    assert (tmp_path / "fig.svg").read_text().lstrip().startswith("<?xml")


# ------------------------------------------------------------------------------------ values refused with their name
def test_empty_and_ambiguous_list_params_are_refused_with_the_json_form(workspace, tmp_path, capsys):
    """`target_modules=` meant the whole default scope; `exclude_modules=layer\\.{1,2}` became two patterns."""
    cases = {
        "target_modules=": "--param target_modules=: target_modules takes a non-empty list; leave the parameter out",
        "exclude_modules=[]": "--param exclude_modules=[]: exclude_modules takes a non-empty list",
        "exclude_modules=layer\\.{1,2}": "would split it at every comma into 'layer\\.{1' and '2}' (a comma is part "
        "of a {m,n} repeat); give the patterns as a JSON list instead, e.g. --param "
        "'exclude_modules=[\"layer\\\\.{1,2}\"]'",
        "exclude_modules=a(,b)": "into 'a(' and 'b)' ('a(' is not a regular expression)",
    }
    for param, expected in cases.items():
        argv = ["prepare", str(workspace / "tiny-vit"), "--strategy", "shrink_perturb", "--param", param]
        assert main([*argv, "--output", str(tmp_path / "out")]) == 2, param
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and expected in err, (param, err)
    assert build_config("shrink_perturb", ['exclude_modules=["layer\\\\.{1,2}"]']).exclude_modules == ["layer\\.{1,2}"]
    assert build_config("shrink_perturb", ["exclude_modules=fc1,fc2"]).exclude_modules == ["fc1", "fc2"]
    assert not (tmp_path / "out").exists()


def test_a_seed_torch_cannot_take_is_refused_with_its_range(capsys):
    assert main(["example", "--seed=99999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert "--seed must be an integer in [-2**63, 2**64 - 1] (what torch takes), got 99999999999999999999." in err
