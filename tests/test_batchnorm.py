"""Re-estimating re-drawn BatchNorm statistics from calibration data, inside the all-or-nothing restore."""

from __future__ import annotations

import pytest
import torch

from hf_plasticity import CalibrationDataError, LayerReinitConfig, get_layout, prepare_pretrained, restore_record

from .models import batches, pretrained


def _block_norms(model):
    block = model.get_submodule(get_layout(model).blocks[-1])
    return [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("arch", ["resnet", "cnn"])
def test_restore_with_data_re_estimates_the_redrawn_batchnorm_statistics(make_model, arch):
    model = make_model(arch)
    other = {n: b.clone() for n, b in model.named_buffers() if not n.startswith(get_layout(model).blocks[-1] + ".")}
    data = batches(2, size=8)
    model.train()
    prepare_pretrained(model, LayerReinitConfig(), data=data, diagnostics=False)
    for norm in _block_norms(model):
        assert not torch.allclose(norm.running_mean, torch.zeros_like(norm.running_mean))
        assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))
        assert norm.momentum == 0.1 and norm.training  # put back as they were
    after = dict(model.named_buffers())
    assert all(torch.equal(after[n], b) for n, b in other.items())  # only the re-drawn layers' statistics move

    # The statistics are those of the data: the first re-drawn norm's running mean is the mean of its inputs over the
    # calibration batches (later norms in the block see inputs normalized with batch statistics while estimating).
    model.eval()
    norm = _block_norms(model)[0]
    seen = []
    handle = norm.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        for batch in data:
            model(batch["pixel_values"])
    handle.remove()
    features = torch.cat(seen).transpose(0, 1).flatten(1)
    torch.testing.assert_close(norm.running_mean, features.mean(1), rtol=1e-4, atol=1e-5)


def test_opt_out_and_data_free_restores_leave_the_init_statistics(make_model):
    for kwargs in ({"data": batches(), "recalibrate_batchnorm": False}, {}):
        model = make_model("resnet")
        prepare_pretrained(model, LayerReinitConfig(), diagnostics=False, **kwargs)
        for norm in _block_norms(model):
            assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
            assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))


def test_a_failing_re_estimation_leaves_the_model_bitwise_unchanged(make_model):
    model = make_model("resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = [{"pixel_values": torch.randn(4, 5, 32, 32)}]  # wrong channel count: the forward pass fails
    with pytest.raises((RuntimeError, ValueError)):
        prepare_pretrained(model, LayerReinitConfig(), data=bad, diagnostics=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert getattr(model.config, "plasticity", None) is None


def test_recalibrate_needs_data(make_model):
    with pytest.raises(ValueError, match="needs `data=`"):
        prepare_pretrained(make_model("resnet"), LayerReinitConfig(), recalibrate_batchnorm=True)


@pytest.mark.parametrize(
    ("dtype", "scale", "buffer"),
    [(torch.float16, 255.0, "running_var"), (torch.float16, 1e4, "running_(mean|var)"), (torch.float32, 1e25, "")],
)
def test_statistics_that_overflow_are_refused_and_nothing_changes(tmp_path, dtype, scale, buffer):
    model = pretrained("resnet", tmp_path, dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [{"pixel_values": torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * scale}]
    with pytest.raises(CalibrationDataError, match=rf"BatchNorm layer '[^']+' .* NaN or infinite values in `{buffer}"):
        prepare_pretrained(model, LayerReinitConfig(), data=data, diagnostics=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert restore_record(model) is None
    # The message says what to do; without the re-estimation the restore goes through.
    prepare_pretrained(model, LayerReinitConfig(), data=data, diagnostics=False, recalibrate_batchnorm=False)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
