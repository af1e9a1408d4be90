"""Re-estimating re-drawn BatchNorm statistics from calibration data, inside the all-or-nothing restore."""

from __future__ import annotations

import pytest
import torch

from hf_plasticity import LayerReinitConfig, get_layout, prepare_pretrained

from .models import batches


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
