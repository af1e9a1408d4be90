"""The plasticity picture: one figure per model, a column per backbone block (named), four panels, re-drawn blocks
shaded, before dashed and after solid; from Python, the CLI, the saved checkpoint and its card, the pushed repository,
and TensorBoard."""

from __future__ import annotations

import glob
import re

import matplotlib
import pytest
from matplotlib.lines import Line2D

from hf_plasticity import LayerReinitConfig, PlasticityCallback, diagnose, prepare_pretrained, save_restored
from hf_plasticity.diagnostics.figure import FIGURE_NAME, PANELS, short_names
from hf_plasticity.integrations.hub import push_restored

from .hub_server import LocalHub, point_client_at
from .models import batches

matplotlib.use("Agg")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def drawn_lines(ax) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_xdata() is not None and len(line.get_xdata())]


def shaded_blocks(ax) -> list[float]:
    """The centres of the shaded spans of one panel."""
    centres = []
    for patch in ax.patches:
        x0, x1 = patch.get_extents().x0, patch.get_extents().x1
        data = ax.transData.inverted().transform([[x0, 0], [x1, 0]])
        centres.append(round(float(data[:, 0].mean()), 3))
    return centres


@pytest.mark.parametrize("arch", ["vit", "convnext", "resnet"])
def test_diagnostics_alone_draw_one_column_per_named_block(make_model, arch, tmp_path):
    model = make_model(arch)
    report = diagnose(model, batches(2, 8))
    figure = report.plot()
    axes = figure.axes
    assert [ax.get_ylabel() for ax in axes] == [label for _, label in PANELS]
    labels = [t.get_text() for t in axes[-1].get_xticklabels()]
    assert labels == short_names(report.blocks) and len(labels) == 3
    assert all(block.endswith(label) for block, label in zip(report.blocks, labels))
    for ax in axes:
        (line,) = drawn_lines(ax)  # no "before": one solid line per panel
        assert line.get_linestyle() == "-" and len(line.get_xdata()) == 3
        assert not ax.patches  # nothing re-drawn
    assert not re.search(r"\d\.\d{4,}", figure._suptitle.get_text())  # numbers for people: 3 significant digits
    path = report.plot(tmp_path / "diag.png")
    assert open(path, "rb").read(8) == PNG_MAGIC


def test_a_restore_draws_before_dashed_after_solid_and_shades_the_redrawn_block(make_model, tmp_path):
    model = make_model("convnext")
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=batches(2, 8))
    figure = report.plot()
    for ax in figure.axes:
        styles = sorted(line.get_linestyle() for line in drawn_lines(ax))
        assert styles == ["-", "--"]
        assert shaded_blocks(ax) == [2.0]  # the last of 3 blocks, and only it
    assert "->" in figure._suptitle.get_text()  # ranks before -> after
    with pytest.raises(ValueError, match="holds no diagnostics to draw"):
        prepare_pretrained(make_model("vit"), LayerReinitConfig(num_blocks=1)).plot()


def test_the_saved_checkpoint_and_the_pushed_repository_show_the_figure(make_model, tmp_path, monkeypatch):
    model = make_model("vit")
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=batches(2, 8))
    folder = save_restored(model, tmp_path / "restored", report=report)
    assert (folder / FIGURE_NAME).read_bytes()[:8] == PNG_MAGIC
    assert f"]({FIGURE_NAME})" in (folder / "README.md").read_text()  # a relative link in the card
    without = save_restored(make_model("vit"), tmp_path / "plain", report=prepare_pretrained(make_model("vit")))
    assert not (without / FIGURE_NAME).exists() and f"]({FIGURE_NAME})" not in (without / "README.md").read_text()
    with LocalHub() as hub:
        point_client_at(hub, monkeypatch, tmp_path / "hf-cache")
        push_restored(model, "user/with-figure", report=report)
        files = hub.repos["user/with-figure"].head.files
        assert files[FIGURE_NAME][:8] == PNG_MAGIC and f"]({FIGURE_NAME})" in files["README.md"].decode()


def test_the_callback_logs_the_figure_to_tensorboard(make_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from .test_callback import run

    run(make_model("convnext"), tmp_path, PlasticityCallback(diagnostics_every=2), max_steps=4,
        report_to=["tensorboard"])  # fmt: skip
    steps = []
    for path in glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True):
        accumulator = EventAccumulator(path)
        accumulator.Reload()
        if "plasticity/blocks" in accumulator.Tags()["images"]:
            steps += [event.step for event in accumulator.Images("plasticity/blocks")]
    assert sorted(steps) == [0, 2, 4]  # before training, then every 2 steps


def test_short_names_keep_context():
    assert short_names(["convnext.encoder.stages.0.layers.0", "convnext.encoder.stages.1.layers.0"]) == [
        "stages.0.layers.0",
        "stages.1.layers.0",
    ]
    assert short_names(["features.0", "features.1"]) == ["features.0", "features.1"]
    assert short_names(["only"]) == ["only"]


def test_a_redrawn_stage_shades_its_blocks_in_distinct_colours_on_a_readable_scale(make_model, tmp_path):
    """The record names the highest module re-drawn whole: here ConvNeXt's last stage's blocks as one name
    (``...stages.1.layers``), which contains blocks 1 and 2 and used to shade nothing."""
    model = make_model("convnext")  # blocks: stage 0 (1), stage 1 (2)
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=2), data=batches(2, 8))
    assert "convnext.encoder.stages.1.layers" in report.redrawn["whole"]
    figure = report.plot()
    for ax in figure.axes:
        assert shaded_blocks(ax) == [1.0, 2.0]
        before, after = sorted(drawn_lines(ax), key=lambda line: line.get_linestyle() != "--")
        assert before.get_linestyle() == "--" and after.get_linestyle() == "-"
        assert matplotlib.colors.to_rgb(before.get_color()) != matplotlib.colors.to_rgb(after.get_color())
    weights = figure.axes[[key for key, _ in PANELS].index("mean_abs_weight")]
    low, high = weights.get_ylim()
    values = [v for line in drawn_lines(weights) for v in line.get_ydata()]
    assert low == 0.0 and max(values) <= high <= 1.5 * max(values)  # from 0, not zoomed into the values' band
    report.plot(tmp_path / "stage.png")


def test_a_whole_stage_or_a_part_of_a_block_is_shaded_by_what_it_covers():
    from hf_plasticity.diagnostics.figure import blocks_redrawn

    blocks = ["s.0.layers.0", "s.1.layers.0", "s.1.layers.1"]
    assert blocks_redrawn(blocks, {"whole": ["s.1"], "partial": []}) == {1: 1.0, 2: 1.0}
    assert blocks_redrawn(blocks, {"whole": ["s.0.layers.0.conv"], "partial": ["s.1.layers.1.fc.weight"]}) == {
        0: 0.4,
        2: 0.4,
    }
    assert blocks_redrawn(blocks, {"whole": ["head"], "partial": []}) == {}
