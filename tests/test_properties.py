"""Property-based tests (hypothesis): configs, scopes and calibration batches drawn at random, hostile ones included
(NaN, infinities, negative or huge values, wrong types, broken or non-matching patterns, NaN pixels, float or
out-of-range labels). The invariant: either a clear error (ValueError / TypeError naming the problem) and the model
bitwise untouched, or a restore that changed exactly what its report says (never a tensor it does not name, never more
entries than it counts as re-initialized or edited) and recorded it."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hf_plasticity import (
    DashConfig,
    LayerReinitConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    prepare_pretrained,
    restore_record,
)

from .models import IMAGE_SIZE, NUM_LABELS, build, perturb

HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 10**6),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
)
PATTERNS = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from(
            ["vit.layers.1", r".*\.layers\.2\..*", "fc1", "layers.[1", "", "nothing.matches", r"(", "features.0"]
        ),
        max_size=3,
    ),
)
#: Per strategy, a valid draw for each field; one field at a time may instead get a HOSTILE value.
FIELDS = {
    LayerReinitConfig: {
        "num_blocks": st.one_of(st.none(), st.integers(1, 3)),
        "layer_scale": st.one_of(st.sampled_from(["init", "keep"]), st.floats(1e-6, 1)),
        "exclude_modules": PATTERNS,
        "seed": st.integers(0, 5),
    },
    SelectiveReinitConfig: {
        "utility": st.sampled_from(["grad_x_weight", "grad", "magnitude", "random"]),
        "selection": st.sampled_from(["proportional", "threshold"]),
        "fraction": st.floats(1e-3, 1),
        "threshold": st.floats(0, 2),
        "granularity": st.sampled_from(["weight", "unit"]),
        "exclude_modules": PATTERNS,
        "target_modules": PATTERNS,
        "include_bias": st.booleans(),
        "calibration_batches": st.integers(1, 2),
    },
    ShrinkPerturbConfig: {
        "shrink": st.floats(0, 1),
        "perturb": st.floats(0, 3),
        "include_bias": st.booleans(),
        "include_norm": st.booleans(),
    },
    DashConfig: {"lambda_min": st.floats(0, 1), "alpha": st.floats(1e-3, 1), "calibration_batches": st.integers(1, 2)},
}


@st.composite
def configs(draw) -> tuple[type, dict]:
    """A strategy and its keyword arguments: valid, or (one time in three) with one field hostile."""
    config_class = draw(st.sampled_from(list(FIELDS)))
    values = {name: draw(field) for name, field in FIELDS[config_class].items()}
    hostile = draw(st.sampled_from([None, None, *values]))
    if hostile is not None:
        values[hostile] = draw(HOSTILE)
    return config_class, values


@st.composite
def calibration(draw) -> list[dict[str, torch.Tensor]]:
    """Two batches of 4 images; sometimes a NaN or an infinity in the pixels, float labels, or labels out of range."""
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    data = [
        {
            "pixel_values": torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
            "labels": torch.randint(0, NUM_LABELS, (4,), generator=generator),
        }
        for _ in range(2)
    ]
    flaw = draw(st.sampled_from(["none", "none", "none", "nan", "inf", "float_labels", "label_range"]))
    victim = data[draw(st.integers(0, 1))]
    if flaw in ("nan", "inf"):
        victim["pixel_values"][draw(st.integers(0, 3)), 0, 0, 0] = math.nan if flaw == "nan" else math.inf
    elif flaw == "float_labels":
        victim["labels"] = victim["labels"].float()
    elif flaw == "label_range":
        victim["labels"] = victim["labels"] + NUM_LABELS
    return data


@pytest.fixture(scope="module")
def base_models():
    torch.manual_seed(0)
    return {arch: perturb(build(arch)) for arch in ("vit", "resnet", "cnn")}


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arch=st.sampled_from(["vit", "resnet", "cnn"]), drawn=configs(), data=calibration())
def test_a_clear_error_and_an_untouched_model_or_exactly_what_the_report_says(base_models, arch, drawn, data):
    model = copy.deepcopy(base_models[arch])
    before = state(model)
    config_class, values = drawn
    try:
        report = prepare_pretrained(model, config_class(**values), data=data, diagnostics=False)
    except (ValueError, TypeError) as error:  # ScopeError, CalibrationDataError, UnitMapError are ValueErrors
        event(f"refused: {type(error).__name__}")
        message = str(error)
        assert len(message) > 15 and "\n" not in message.strip(), f"unclear error: {message!r}"
        after = model.state_dict()
        assert all(torch.equal(after[k], before[k]) for k in before), f"changed before failing: {message}"
        assert restore_record(model) is None
        return
    event(f"restored with {config_class.__name__}")
    after = model.state_dict()
    changed = {k: int((after[k] != before[k]).sum()) for k in before if not torch.equal(after[k], before[k])}
    reported = {t.name: t.reinitialized + t.edited for t in report.tensors}
    assert set(changed) <= set(reported), f"changed but not reported: {sorted(set(changed) - set(reported))}"
    assert all(count <= reported[name] for name, count in changed.items())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert restore_record(model).total_reinitialized == report.total_reinitialized


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=configs(), data=calibration())
def test_the_same_inputs_give_bitwise_the_same_weights(base_models, drawn, data):
    config_class, values = drawn
    results = []
    for _ in range(2):
        model = copy.deepcopy(base_models["resnet"])
        try:
            prepare_pretrained(model, config_class(**values), data=data, diagnostics=False)
        except (ValueError, TypeError) as error:
            results.append(type(error))
            continue
        results.append(state(model))
    first, second = results
    if isinstance(first, dict):
        assert isinstance(second, dict) and all(torch.equal(first[k], second[k]) for k in first)
    else:
        assert first is second
