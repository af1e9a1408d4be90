"""Every `>>>` example in the docstrings of the public names (and of their methods), and of the research benchmark's
functions and classes, runs and prints what it says."""

from __future__ import annotations

import doctest
import inspect
import re

import pytest

import hf_plasticity

PUBLIC = [name for name in hf_plasticity.__all__ if name != "__version__"]


@pytest.fixture(autouse=True)
def _registries_restored():
    """An example may register an architecture (`register_architecture`): the table is as before after each test."""
    from hf_plasticity.core.architectures import ARCHITECTURES

    saved = dict(ARCHITECTURES)
    yield
    ARCHITECTURES.clear()
    ARCHITECTURES.update(saved)


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


def _benchmark_examples():
    import importlib
    import pkgutil

    import benchmarks

    for info in pkgutil.iter_modules(benchmarks.__path__):
        module = importlib.import_module(f"benchmarks.{info.name}")
        for name, obj in vars(module).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                doc = inspect.getdoc(obj) or ""
                if ">>>" in doc:
                    yield pytest.param(f"{module.__name__}.{name}", doc, module, id=f"{module.__name__}.{name}")


@pytest.mark.parametrize("qualname, doc, module", [*_examples(), *_benchmark_examples()])
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


# ------------------------------------------------------------------------------------------------ public surface
def _own_docstring(obj) -> str:
    """The object's own docstring: not a dataclass's generated signature, not one inherited from a base class."""
    doc = obj.__doc__ or ""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
    return "" if doc.startswith(f"{getattr(obj, '__name__', '')}(") else doc.strip()


def test_every_exported_name_is_documented_and_none_is_a_mutable_table():
    for name in PUBLIC:
        obj = getattr(hf_plasticity, name)
        assert inspect.isclass(obj) or callable(obj), f"{name} is exported but is data ({type(obj).__name__})"
        assert _own_docstring(obj), f"{name} has no docstring of its own"
    assert "ARCHITECTURES" not in hf_plasticity.__all__  # a mutable dict bypassed register_architecture's checks


def test_registered_architectures_is_read_only_and_follows_the_registry():
    table = hf_plasticity.registered_architectures()
    assert {"vit", "convnext", "convnextv2", "resnet"} <= set(table)
    with pytest.raises(TypeError):
        table["mine"] = table["vit"]  # read-only: register_architecture is the way in
    rule = table["vit"]
    hf_plasticity.register_architecture("my-vit", rule)
    assert hf_plasticity.registered_architectures()["my-vit"] == rule


#: The library's exception classes that public entry points cannot raise, and why; every other one is exported.
INTERNAL_ERRORS = {
    "CommandError": "the command line's own, printed as one line",
    "DataLoadError": "raised by integrations/datasets_io.py, which only the command line uses",
    "HubUnreachableError": "raised by hub.hub_access, which only the command line and datasets_io call",
}
#: The modules allowed to use each internal error (or the function that raises it).
INTERNAL_USERS = {
    "DataLoadError": ("hf_plasticity.integrations.datasets_io",),
    "HubUnreachableError": ("hf_plasticity.integrations.hub", "hf_plasticity.integrations.datasets_io"),
}


def _library_modules():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(hf_plasticity.__path__, "hf_plasticity."):
        yield importlib.import_module(info.name)


def test_every_exception_a_public_entry_point_can_raise_is_exported():
    errors = {}
    for module in _library_modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                errors[name] = module
    assert {"CalibrationDataError", "AlreadyRestoredError", "HubPushError"} <= set(errors)
    for name, module in errors.items():
        if name in INTERNAL_ERRORS:
            continue
        assert name in hf_plasticity.__all__, f"{name} ({module.__name__}) can reach users but is not exported"
        assert getattr(hf_plasticity, name) is vars(module)[name]
    # The internal ones stay internal: outside the command line, only the listed modules name them (or the
    # functions that raise them).
    for name, users in INTERNAL_USERS.items():
        raisers = {
            fn
            for fn, obj in vars(errors[name]).items()
            if inspect.isfunction(obj) and f"raise {name}(" in inspect.getsource(obj)
        }
        for module in _library_modules():
            if module.__name__.startswith("hf_plasticity.cli") or module.__name__ in users:
                continue
            text = inspect.getsource(module)
            named = [word for word in (name, *raisers) if re.search(rf"\b{word}\b", text)]
            assert not named, f"{module.__name__} uses {named}: {name} can reach users ({INTERNAL_ERRORS[name]}?)"
