"""Property-based tests (hypothesis): configs, scopes and calibration batches drawn at random, hostile ones included
(NaN, infinities, negative or huge values, wrong types, broken or non-matching patterns, NaN pixels, float or
out-of-range labels), and hostile models (NaN or infinite weights, frozen parameters, a head tied to the backbone) and
data containers (a list, a one-pass iterator, a DataLoader, a Dataset with and without torch format; float, bool,
negative or out-of-range labels). The invariant: either a clear error (ValueError / TypeError naming the problem) and
the model bitwise untouched, or a restore that changed exactly what its report says (never a tensor it does not name,
never more entries than it counts as re-initialized or edited, never a frozen parameter) and recorded it."""

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
    get_layout,
    prepare_pretrained,
    restore_record,
)

from .models import IMAGE_SIZE, NUM_LABELS, build, perturb
from .test_calibration_data import containers, rows

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


LABEL_FLAWS = {
    "none": lambda labels: labels,
    "float": lambda labels: labels.float() + 0.5,
    "whole_float": lambda labels: labels.float(),
    "bool": lambda labels: labels % 2 == 0,
    "negative": lambda labels: labels - NUM_LABELS,
    "out_of_range": lambda labels: labels + NUM_LABELS,
}
MODEL_FLAWS = ("none", "nan", "inf", "frozen", "tied")


def flaw_model(model, flaw: str, draw) -> set[str]:
    """Makes ``model`` hostile in place; returns the names of the parameters frozen (if any)."""
    params = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    layout = get_layout(model)
    backbone = [(n, p) for n, p in params if not layout.in_head(n.rsplit(".", 1)[0])]
    if flaw in ("nan", "inf"):
        name, param = backbone[draw(st.integers(0, len(backbone) - 1))]
        with torch.no_grad():
            param.view(-1)[0] = math.nan if flaw == "nan" else math.inf
    elif flaw == "frozen":
        chosen = draw(st.lists(st.integers(0, len(backbone) - 1), min_size=1, max_size=len(backbone), unique=True))
        for index in chosen:
            backbone[index][1].requires_grad_(False)
        return {backbone[index][0] for index in chosen}
    elif flaw == "tied":  # the head's weight becomes a view of a backbone tensor's storage
        head_name = next(n for n, _ in params if layout.in_head(n.rsplit(".", 1)[0]) and n.endswith("weight"))
        head = model.get_submodule(head_name.rsplit(".", 1)[0])
        source = next(p for _, p in reversed(backbone) if p.numel() >= head.weight.numel())
        head.weight = torch.nn.Parameter(source.data.view(-1)[: head.weight.numel()].view(head.weight.shape))
    return set()


@st.composite
def hostile_containers(draw):
    """Two batches of 4 images in one of the accepted containers, the labels maybe of a hostile kind."""
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    flaw = draw(st.sampled_from(list(LABEL_FLAWS)))
    labels = LABEL_FLAWS[flaw](torch.randint(0, NUM_LABELS, (8,), generator=generator))
    pixels = torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    kind = draw(st.sampled_from(["list", "iterator", "dataloader", "dataset", "dataset_torch"]))
    event(f"container {kind}, labels {flaw}")
    return containers(rows(labels, pixels))[kind]


@pytest.mark.parametrize("flaw", MODEL_FLAWS)  # each model flaw drawn for sure, with random configs and data
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arch=st.sampled_from(["vit", "resnet", "cnn"]), drawn=configs(), data=hostile_containers(), choices=st.data())
def test_hostile_models_and_containers_a_clear_error_or_only_what_the_report_names(
    base_models, arch, drawn, flaw, data, choices
):
    model = copy.deepcopy(base_models[arch])
    frozen = flaw_model(model, flaw, choices.draw)
    before = state(model)
    config_class, values = drawn
    try:
        report = prepare_pretrained(model, config_class(**values), data=data, diagnostics=False)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert len(message) > 15 and "\n" not in message.strip(), f"unclear error: {message!r}"
        after = model.state_dict()
        assert all(_same(after[k], before[k]) for k in before), f"changed before failing: {message}"
        assert restore_record(model) is None
        return
    assert flaw not in ("nan", "inf", "tied"), f"a {flaw} model was restored"
    after = model.state_dict()
    changed = {k for k in before if not _same(after[k], before[k])}
    reported = {t.name for t in report.tensors}
    assert changed <= reported, f"changed but not reported: {sorted(changed - reported)}"
    if not values.get("target_modules"):
        assert not frozen & changed, f"frozen but written: {sorted(frozen & changed)}"
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, a NaN in the same place counting as equal."""
    if torch.equal(a, b):
        return True
    return a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


# ------------------------------------------------------------------------ a tensor tied across backbone modules
HIDDEN = ("0", "2", "4", "6")  # the hidden Linear blocks of `tied_mlp`; "8" is the head


def tied_mlp(first: str, second: str) -> torch.nn.Sequential:
    """Four hidden Linear blocks and a head, hidden layer ``second``'s weight the same Parameter as ``first``'s."""
    torch.manual_seed(0)
    layers = [m for _ in HIDDEN for m in (torch.nn.Linear(8, 8), torch.nn.ReLU())]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(8, 3))
    model.get_submodule(second).weight = model.get_submodule(first).weight
    return model


TARGETS = st.one_of(st.none(), st.lists(st.sampled_from(HIDDEN), min_size=1, max_size=4, unique=True))
TIED_CONFIGS = st.one_of(
    st.builds(LayerReinitConfig, num_blocks=st.integers(1, 4)),
    st.builds(LayerReinitConfig, exclude_modules=TARGETS),
    st.builds(ShrinkPerturbConfig, shrink=st.floats(0.1, 0.9), include_bias=st.booleans(), target_modules=TARGETS),
    st.builds(
        SelectiveReinitConfig, utility=st.just("magnitude"), fraction=st.floats(0.01, 1), target_modules=TARGETS
    ),
)


@settings(max_examples=40, deadline=None)
@given(pair=st.lists(st.sampled_from(HIDDEN), min_size=2, max_size=2, unique=True), config=TIED_CONFIGS)
def test_a_tensor_tied_across_backbone_modules_is_refused_or_counted_once(pair, config):
    """A write into a tied tensor changes every module holding it: either the plan covers them all and the report
    counts the tensor once (never more entries than the model has), or it is refused, naming both, untouched."""
    first, second = sorted(pair)
    model = tied_mlp(first, second)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    try:
        report = prepare_pretrained(model, config)
    except ValueError as error:
        message = str(error)  # the tie, naming both modules; or, say, every block excluded
        event("refused: the tie" if "(tied weights)" in message else "refused: another reason")
        assert "(tied weights)" not in message or (f"'{first}.weight'" in message and f"'{second}.weight'" in message)
        assert all(torch.equal(p, before[id(p)]) for p in model.parameters()) and restore_record(model) is None
        return
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[id(p)])}
    event(f"restored, the tied tensor {'written' if f'{first}.weight' in changed else 'untouched'}")
    names = [t.name for t in report.tensors]
    assert changed <= set(names) and len(names) == len(set(names))
    assert all(t.reinitialized <= t.numel and t.edited <= t.numel for t in report.tensors)
    assert report.total_reinitialized <= report.total_parameters and sum(report.by_block().values()) <= 251


def test_a_restore_writing_a_tied_tensor_outside_its_blocks_names_both_modules():
    model = tied_mlp("0", "6")
    before = {id(p): p.detach().clone() for p in model.parameters()}
    with pytest.raises(ValueError, match=r"write '6\.weight', which is the same tensor as '0\.weight' .* module '0'"):
        prepare_pretrained(model)  # the last block: its weight is block 0's too
    assert all(torch.equal(p, before[id(p)]) for p in model.parameters()) and restore_record(model) is None
    report = prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.5, perturb=0.0))  # every block: both modules
    assert report.total_reinitialized == 3 * 64 and report.total_parameters == 251
    assert [t.name for t in report.tensors] == ["0.weight", "2.weight", "4.weight"]
    assert torch.equal(model[0].weight, before[id(model[0].weight)] * 0.5)  # shrunk once
