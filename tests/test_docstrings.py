"""Every `>>>` example in the docstrings of the public names (and of their methods) runs and prints what it says."""

from __future__ import annotations

import doctest
import inspect

import pytest

import hf_plasticity

PUBLIC = [name for name in hf_plasticity.__all__ if name != "__version__"]


def _docstrings(obj):
    yield getattr(obj, "__name__", repr(obj)), inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if callable(member) or isinstance(member, property):
                yield f"{obj.__name__}.{name}", inspect.getdoc(member) or ""


def _examples():
    for name in PUBLIC:
        obj = getattr(hf_plasticity, name)
        for qualname, doc in _docstrings(obj):
            if ">>>" in doc:
                yield pytest.param(qualname, doc, inspect.getmodule(obj), id=qualname)


@pytest.mark.parametrize("qualname, doc, module", list(_examples()))
def test_docstring_example_runs(qualname, doc, module):
    # The examples sit in Markdown fences (transformers style); the fence lines are not expected output. As with
    # doctest, an example sees the globals of the module that defines it.
    text = "\n".join("" if line.strip().startswith("```") else line for line in doc.splitlines())
    test = doctest.DocTestParser().get_doctest(text, dict(vars(module)), qualname, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"{qualname}: {runner.failures} failing example(s)"


def test_main_entry_points_have_examples():
    names = {p.values[0].split(".")[0] for p in _examples()}
    for name in (
        "prepare_pretrained",
        "PlasticityConfig",
        "LayerReinitConfig",
        "SelectiveReinitConfig",
        "diagnose",
        "register_strategy",
        "get_layout",
        "save_restored",
    ):
        assert name in names, f"{name} has no runnable example"
