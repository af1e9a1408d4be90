"""Flags are validated as flags: every boolean argument of a public entry point and every boolean config field takes
True or False (None where documented) and nothing else; `0`, `1`, `"yes"` are refused with the argument's name before
anything changes (`recalibrate_batchnorm=0` re-estimated BatchNorm: `x not in (None, True, False)` let 0 through)."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_plasticity import available_strategies, get_config_class, prepare_pretrained
from hf_plasticity.core.validators import check_flag

from .models import batches

NOT_FLAGS = st.one_of(
    st.sampled_from([0, 1, 0.0, 1.0, "True", "yes", "", np.bool_(True), torch.tensor(True), [True]]),
    st.integers(),
    st.text(max_size=4),
)
#: The flag arguments of prepare_pretrained, and whether None is accepted.
PREPARE_FLAGS = {"force": False, "diagnostics": True, "recalibrate_batchnorm": True}


def bool_fields() -> list[tuple[type, str]]:
    found = []
    for name in available_strategies():
        config_class = get_config_class(name)
        hints = typing.get_type_hints(config_class)
        unused = set(config_class.unused_scope_fields)
        found += [
            (config_class, f.name)
            for f in dataclasses.fields(config_class)
            if hints[f.name] is bool and f.init and f.name not in unused
        ]
    return found


@settings(max_examples=60, deadline=None)
@given(value=NOT_FLAGS, allow_none=st.booleans())
def test_check_flag_takes_true_or_false_only(value, allow_none):
    with pytest.raises(ValueError, match=r"^`name` must be True or False") as error:
        check_flag("name", value, allow_none=allow_none)
    assert ("or None" in str(error.value)) == allow_none
    check_flag("name", True)
    check_flag("name", False, allow_none=allow_none)
    check_flag("name", None, allow_none=True)
    with pytest.raises(ValueError):
        check_flag("name", None)


def test_allow_none_is_keyword_only():
    with pytest.raises(TypeError):
        check_flag("name", None, True)


@pytest.mark.parametrize("name", sorted(PREPARE_FLAGS))
@pytest.mark.parametrize("value", [0, 1, "yes", np.bool_(False)])
def test_prepare_pretrained_refuses_a_non_flag_before_anything_changes(make_model, name, value):
    model = make_model("resnet")  # BatchNorm layers: recalibrate_batchnorm=0 used to re-estimate them
    before = {k: v.clone() for k, v in model.state_dict().items()}
    accepted = "True or False or None" if PREPARE_FLAGS[name] else "True or False"
    with pytest.raises(ValueError, match=rf"^`{name}` must be {accepted}, got"):
        prepare_pretrained(model, "reinit_layers", data=batches(2, 4), **{name: value})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert getattr(model.config, "plasticity", None) is None


def test_config_bool_fields_are_flags():
    fields = bool_fields()
    assert {name for _, name in fields} >= {"include_bias", "include_norm", "every_parameter"}
    for config_class, name in fields:
        for value in (0, 1, "true", None):
            with pytest.raises(ValueError, match=rf"`{name}` must be True or False"):
                config_class(**{name: value})


@pytest.mark.parametrize(("name", "value"), [("private", 1), ("private", "no"), ("create_pr", 0), ("create_pr", None)])
def test_push_restored_refuses_a_non_flag_before_anything_is_written(make_model, tmp_path, name, value):
    from hf_plasticity import push_restored

    model = make_model("vit")
    prepare_pretrained(model)
    folder = tmp_path / "out"
    accepted = "True or False or None" if name == "private" else "True or False"
    with pytest.raises(ValueError, match=rf"^`{name}` must be {accepted}, got"):
        push_restored(model, "me/restored", save_directory=folder, **{name: value})
    assert not folder.exists()  # refused before the save: no Hub call, no folder
