"""Every input checked before anything changes, and every failure bounded and clear: the regression tests of the
hostile-user review (NaN data and values, broken patterns, wrong objects, a failed save over a checkpoint, a Hub that
never answers, a second callback, the command line's bad input)."""

from __future__ import annotations

import dataclasses
import math
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from hf_plasticity import (
    AutoReinitConfig,
    ContinualBackpropConfig,
    DashConfig,
    LayerReinitConfig,
    PlasticityCallback,
    PlasticityTrainer,
    ReDoConfig,
    RifleConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    diagnose,
    get_config_class,
    prepare_pretrained,
    save_restored,
)
from hf_plasticity.cli.main import main
from hf_plasticity.core.data import CalibrationDataError
from hf_plasticity.integrations.hub import HubPushError, push_restored, redact

from .models import batches
from .test_callback import training_args
from .test_training import learnable_dataset


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def untouched(model, before) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def with_nan(data, batch: int = 1):
    data = [dict(b) for b in data]
    pixels = data[batch]["pixel_values"].clone()
    pixels[0, 0, 0, 0] = float("nan")
    data[batch]["pixel_values"] = pixels
    return data


# ------------------------------------------------------------------------------------------------ the data
@pytest.mark.parametrize(
    "arch, config, one_pass",
    [
        ("resnet", LayerReinitConfig(num_blocks=1), False),  # the NaN would reach the re-estimated BatchNorm stats
        ("vit", SelectiveReinitConfig(fraction=0.05, calibration_batches=2), True),  # scores from a one-pass iterator
    ],
)
def test_a_nan_pixel_is_named_and_the_model_is_untouched(make_model, arch, config, one_pass):
    model = make_model(arch)
    before = snapshot(model)
    data = with_nan(batches(2))
    with pytest.raises(CalibrationDataError, match="Calibration batch 1 holds 1 NaN or infinite pixel values"):
        prepare_pretrained(model, config, data=iter(data) if one_pass else data, diagnostics=False)
    assert untouched(model, before) and getattr(model.config, "plasticity", None) is None
    with pytest.raises(CalibrationDataError, match="Calibration batch 1 holds 1 NaN"):  # not a linalg error
        diagnose(model, data)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: {**b, "labels": b["labels"].float()}, "`labels` must hold integer class indices"),
        (lambda b: {**b, "labels": b["labels"][:2]}, "one class index per image"),
        (lambda b: {**b, "labels": b["labels"] - 5}, "`labels` must be >= 0"),
        (lambda b: {**b, "labels": b["labels"] + 7}, "labels go up to .* but the model's head has 3 outputs"),
        (lambda b: {**b, "pixel_values": b["pixel_values"][0, 0, 0]}, "must be a batch"),
    ],
)
def test_bad_labels_and_shapes_are_named(make_model, change, message):
    model = make_model("convnext")
    before = snapshot(model)
    data = batches(2)
    data[0] = change(data[0])
    with pytest.raises(CalibrationDataError, match=message):
        prepare_pretrained(model, SelectiveReinitConfig(fraction=0.05, calibration_batches=2), data=data)
    assert untouched(model, before)


# ------------------------------------------------------------------------------------------------ the values
def is_number_field(field) -> bool:
    """A float field (not layer_scale's 'init' | number, nor RIFLE's list of epochs: both tested on their own)."""
    kind = str(field.type)
    return "float" in kind and "str" not in kind and "list" not in kind


NUMERIC_FIELDS = [
    (config_class, field.name)
    for config_class in (
        AutoReinitConfig,
        ContinualBackpropConfig,
        DashConfig,
        ReDoConfig,
        SelectiveReinitConfig,
        ShrinkPerturbConfig,
    )
    for field in dataclasses.fields(config_class)
    if is_number_field(field)
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("config_class, name", NUMERIC_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_nan_and_inf_are_refused_in_every_numeric_field(config_class, name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be a finite number"):
        config_class(**{name: value})


def test_nan_epochs_and_layer_scale_are_refused():
    with pytest.raises(ValueError, match="`epochs` must be a non-empty list of positive numbers"):
        RifleConfig(epochs=[1.0, math.nan])
    with pytest.raises(ValueError, match="`layer_scale` must be 'init', 'keep' or a finite number > 0"):
        LayerReinitConfig(layer_scale=math.inf)


@pytest.mark.parametrize("dtype, value", [(torch.float32, 1e39), (torch.float16, 1e5)])
def test_a_layer_scale_the_model_s_dtype_cannot_hold_is_refused_before_anything_changes(make_model, dtype, value):
    model = make_model("convnext", dtype=dtype)
    before = snapshot(model)
    message = rf"`layer_scale`={re.escape(f'{value:g}')} does not fit .*layer_scale.* \({dtype}, at most"
    with pytest.raises(ValueError, match=message):
        prepare_pretrained(model, LayerReinitConfig(layer_scale=value))
    assert untouched(model, before)


@pytest.mark.parametrize("field", ["exclude_modules", "target_modules"])
def test_a_broken_regular_expression_is_named(field):
    with pytest.raises(ValueError, match=rf"`{field}` entry 'layers\.\[1' is not a valid regular expression"):
        SelectiveReinitConfig(**{field: [r"layers.[1"]})


def test_an_excluded_block_stays_excluded(make_model):
    model = make_model("vit")
    last = model.vit.layers[2].mlp.fc1.weight.detach().clone()
    prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", exclude_modules=[r"vit\.layers\.2\..*"]))
    assert torch.equal(model.vit.layers[2].mlp.fc1.weight, last)


# ------------------------------------------------------------------------------------------------ the objects
def test_another_models_optimizer_and_report_are_refused(make_model, tmp_path):
    model, other = make_model("vit"), make_model("convnext")
    before = snapshot(model)
    with pytest.raises(ValueError, match="holds none of this model's parameters"):
        prepare_pretrained(model, optimizer=torch.optim.AdamW(other.parameters()))
    assert untouched(model, before)
    report = prepare_pretrained(other)
    prepare_pretrained(model)
    with pytest.raises(ValueError, match="This report was made on another model"):
        save_restored(model, tmp_path / "out", report=report)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ atomic saves
def test_a_save_that_fails_half_way_leaves_the_existing_checkpoint_as_it_was(make_model, tmp_path, monkeypatch):
    import transformers.modeling_utils
    from transformers import AutoModelForImageClassification

    model = make_model("vit")
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    folder = save_restored(model, tmp_path / "checkpoint")
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = transformers.modeling_utils.safe_save_file

    def fail_half_way(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # half the file is on disk, then the disk is full
            f.truncate(Path(filename).stat().st_size // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fail_half_way)
    with torch.no_grad():
        model.vit.layers[0].mlp.fc1.weight.add_(1.0)  # new weights that never make it to disk
    with pytest.raises(OSError, match="No space left"):
        save_restored(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == saved  # bitwise the same files
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".checkpoint.saving-")]  # nothing left over
    monkeypatch.undo()
    loaded = AutoModelForImageClassification.from_pretrained(folder)
    assert loaded.config.plasticity["strategy"] == "reinit_layers"


# ------------------------------------------------------------------------------------------------ the network
@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_a_push_to_a_server_that_never_answers_fails_within_its_timeout(make_model, tmp_path, monkeypatch,
                                                                        silent_server):  # fmt: skip
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://user:s3cret@127.0.0.1:{silent_server}")
    model = make_model("vit")
    prepare_pretrained(model)
    outcome: list[BaseException] = []

    def push() -> None:
        try:
            push_restored(model, "user/never", save_directory=tmp_path / "kept", token="hf_abcdefghijklmnop",
                          timeout=0.5)  # fmt: skip
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=push, daemon=True)
    worker.start()
    worker.join(120)  # a liveness bound for the test itself, far above the push's own
    assert not worker.is_alive(), "the push is still waiting for the server"
    (error,) = outcome
    assert isinstance(error, HubPushError) and "The checkpoint is kept in" in str(error)
    assert "s3cret" not in str(error) and "hf_abcdefghijklmnop" not in str(error)
    assert (tmp_path / "kept" / "model.safetensors").is_file()


def test_credentials_are_redacted():
    text = "ConnectError for https://alice:pa55@hub.internal/api/models with token hf_0123456789abcdef"
    assert redact(text) == "ConnectError for https://***@hub.internal/api/models with token hf_***"


# ------------------------------------------------------------------------------------------------ the callback
def test_a_second_callback_added_after_construction_is_refused(make_model, tmp_path):
    trainer = PlasticityTrainer(model=make_model("convnext"), args=training_args(tmp_path, max_steps=1),
                                train_dataset=learnable_dataset(32), callbacks=[PlasticityCallback()])  # fmt: skip
    trainer.add_callback(PlasticityCallback(ReDoConfig(every_n_steps=1)))
    before = snapshot(trainer.model)
    with pytest.raises(ValueError, match="one PlasticityCallback"):
        trainer.train()
    assert untouched(trainer.model, before)


# ------------------------------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def cli_workspace(tmp_path_factory):
    from transformers import ViTImageProcessor

    from .models import IMAGE_SIZE, pretrained

    root = tmp_path_factory.mktemp("cli-validation")
    pretrained("vit", root / "tiny-vit")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "tiny-vit")
    for c, name in enumerate(("cats", "dogs")):
        (root / "images" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (200 * c, 40 * i, 90)).save(root / "images" / name / f"{i}.png")
    (root / "one-class" / "cats").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 40), (10, 40 * i, 90)).save(root / "one-class" / "cats" / f"{i}.png")
    (root / "truncated" / "cats").mkdir(parents=True)
    (root / "truncated" / "dogs").mkdir(parents=True)
    for c, name in enumerate(("cats", "dogs")):
        for i in range(2):
            Image.new("RGB", (40, 40), (200 * c, 80 * i, 30)).save(root / "truncated" / name / f"{i}.png")
    broken = root / "truncated" / "dogs" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])
    return root


PROGRESS = re.compile(r"\d+%\|.*\|")  # tqdm bars (e.g. transformers loading the weights), not messages


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(cli_workspace, tmp_path, capsys):
    model, out = str(cli_workspace / "tiny-vit"), str(tmp_path / "out")
    cases = {
        "Unknown strategy 'nope'. Accepted strategies: ": ["example", "--strategy", "nope"],
        "`perturb` must be a finite number >= 0, got nan": [
            "prepare", model, "--strategy", "shrink_perturb", "--param", "perturb=NaN", "--output", out],
        "--tau must be a finite number >= 0, got nan": [
            "diagnose", model, "--data", str(cli_workspace / "images"), "--tau", "nan"],
        "an image-classification dataset needs one sub-folder per class, and at least two classes": [
            "prepare", model, "--data", str(cli_workspace / "one-class"), "--output", out],
        "Cannot read image ": [
            "prepare", model, "--strategy", "selective", "--data", str(cli_workspace / "truncated"),
            "--output", out],
        "--timeout must be a finite number of seconds > 0": [
            "prepare", model, "--push-to-hub", "me/x", "--timeout", "0", "--output", out],
        "Cannot load model 'someone/not-here': it is not a local directory, the Hub is offline": [
            "prepare", "someone/not-here", "--output", out],
    }  # fmt: skip
    before = tree(tmp_path)
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip() and not PROGRESS.search(line)]
        assert len(lines) == 1 and expected in lines[0], (expected, captured.err)
        assert "Traceback" not in captured.err
    assert tree(tmp_path) == before
    assert "dogs/1.png" in main_error(["prepare", model, "--strategy", "selective", "--data",
                                       str(cli_workspace / "truncated"), "--output", out], capsys)  # fmt: skip


def main_error(argv: list[str], capsys) -> str:
    main(argv)
    return capsys.readouterr().err


def test_a_hub_id_with_no_network_fails_fast_in_one_line(tmp_path):
    """No retries with back-off (and no walls of warnings): the Hub is probed once."""
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "home"),
           "PATH": "", "PYTHONWARNINGS": "ignore"}  # fmt: skip
    code = "import sys; from hf_plasticity.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "prepare", "someone/not-here", "--output",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2
    assert lines == [
        "hf-plasticity prepare: error: Cannot load model 'someone/not-here': it is not a local directory, "
        "http://127.0.0.1:9 cannot be reached, and it is not in the local cache."
    ]
    assert not (tmp_path / "out").exists()


def test_config_classes_are_all_covered():
    """The NaN test above reads every float field of every strategy config that has one."""
    names = {config_class.strategy for config_class, _ in NUMERIC_FIELDS}
    with_floats = {
        name
        for name in ("auto", "cbp", "dash", "redo", "selective", "shrink_perturb", "reinit_layers", "rifle")
        if any(is_number_field(f) for f in dataclasses.fields(get_config_class(name)))
    }
    assert with_floats <= names


@pytest.mark.parametrize("repo_id", ["no spaces/allowed", "a/b/c", "", 42])
def test_a_bad_repository_id_is_refused_before_anything_is_written(make_model, tmp_path, repo_id):
    model = make_model("vit")
    prepare_pretrained(model)
    with pytest.raises(ValueError, match="repo_id"):
        push_restored(model, repo_id, save_directory=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_restore_that_would_overflow_is_refused_and_changes_nothing(make_model):
    """Found by the property test: shrink 0 and perturb 3.4e38 (finite, accepted) made every re-drawn weight inf."""
    from hf_plasticity import ShrinkPerturbConfig, prepare_pretrained

    model = make_model("vit")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="infinite or NaN values into vit\\."):
        prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.0, perturb=3.4028235677973366e38), diagnostics=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert getattr(model.config, "plasticity", None) is None
