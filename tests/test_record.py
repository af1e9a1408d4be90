"""The typed restore record: one `RestoreRecord` written into ``config.json`` and read back validated; records of
today's checkpoints load unchanged, older ones are upgraded or refused clearly, broken ones are named with their path
and what is wrong."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from hf_plasticity import (
    LayerReinitConfig,
    PlasticityConfig,
    RecordError,
    RestoreRecord,
    plasticity_param_groups,
    prepare_pretrained,
    restore_record,
)
from hf_plasticity.core.record import SCHEMA_VERSION, blocks_restore, record_periodic_reset

from .models import batches

#: The ``plasticity`` entry of a config.json written by hf-plasticity before the record was typed (schema 1).
TODAYS_RECORD = {
    "strategy": "reinit_layers",
    "config": {
        "exclude_modules": None,
        "hf_plasticity_version": "0.9.0",
        "last_k_blocks": None,
        "num_blocks": 1,
        "reinit_final_norm": True,
        "seed": 0,
        "strategy": "reinit_layers",
        "target_modules": None,
    },
    "reinitialized_per_block": {"2": 12640, "vit.layernorm": 64},
    "total_reinitialized": 12704,
    "total_parameters": 40000,
    "details": {"num_blocks": 1},
    "redrawn": {"whole": ["vit.layers.2", "vit.layernorm"], "partial": []},
}


def saved_with_record(make_model, tmp_path, record):
    """A tiny ViT checkpoint whose config.json carries ``record`` as its ``plasticity`` entry."""
    model = make_model("vit")
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    data = json.loads((folder / "config.json").read_text())
    data["plasticity"] = record
    (folder / "config.json").write_text(json.dumps(data))
    return folder, type(model)


def test_a_record_of_todays_checkpoints_reads_back_equal(make_model, tmp_path):
    folder, model_class = saved_with_record(make_model, tmp_path, TODAYS_RECORD)
    record = restore_record(model_class.from_pretrained(folder))
    assert isinstance(record, RestoreRecord) and record.schema_version == SCHEMA_VERSION
    written = record.to_dict()
    assert {key: written[key] for key in TODAYS_RECORD} == TODAYS_RECORD  # nothing lost or changed
    assert RestoreRecord.from_dict(written) == record
    assert PlasticityConfig.from_pretrained(folder) == LayerReinitConfig(num_blocks=1)


def test_a_restored_checkpoint_reads_back_the_record_it_was_saved_with(make_model, tmp_path):
    model = make_model("vit")
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=batches())
    model.save_pretrained(tmp_path / "restored")
    loaded = restore_record(type(model).from_pretrained(tmp_path / "restored"))
    assert loaded == restore_record(model) == report.record()
    assert loaded.blocks == ["vit.encoder.layer.0", "vit.encoder.layer.1", "vit.encoder.layer.2"]
    assert loaded.redrawn == {"whole": ["vit.layers.2", "vit.layernorm"], "partial": []}
    assert set(loaded.diagnostics) == {"before", "after"} and "dormant_ratio" in loaded.diagnostics["after"]
    assert set(loaded.versions) >= {"hf_plasticity", "torch", "transformers"}


def test_an_older_record_without_redrawn_is_refused_for_reinit_lr(make_model, tmp_path):
    """Before the ``redrawn`` field, `reinit_lr` silently did nothing on such a checkpoint."""
    older = {k: v for k, v in TODAYS_RECORD.items() if k != "redrawn"}
    folder, model_class = saved_with_record(make_model, tmp_path, older)
    model = model_class.from_pretrained(folder)
    assert restore_record(model).redrawn is None  # unknown: not guessed
    with pytest.raises(RecordError, match=r"predates the list of re-drawn parameters.*Pass them as `redrawn=`"):
        plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3)
    groups = plasticity_param_groups(model, lr=1e-4)  # no separate rate asked: nothing to know
    assert {g["name"].split(".")[0] for g in groups} == {"backbone", "head"}
    given_names = plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3, redrawn={"whole": ["vit.layers.2"]})
    assert any(g["name"] == "redrawn" and g["lr"] == 1e-3 for g in given_names)


@pytest.mark.parametrize(
    "strategy, total",
    [("shrink_perturb", 100), ("dash", 100), ("reinit_layers", 0)],
)
def test_an_older_record_without_redrawn_is_upgraded_where_it_is_known(strategy, total):
    """Shrink & perturb and DASH never re-draw; a restore that re-initialized nothing re-drew nothing."""
    older = dict(TODAYS_RECORD, strategy=strategy, total_reinitialized=total)
    del older["redrawn"]
    assert RestoreRecord.from_dict(older).redrawn == {"whole": [], "partial": []}


#: (change to a valid record, what the error must say)
BREAKAGES = [
    (lambda r: r.pop("strategy"), "the `strategy` field is missing"),
    (lambda r: r.pop("total_parameters"), "the `total_parameters` field is missing"),
    (lambda r: r.update(config="selective"), "`config` is 'selective', not a dict"),
    (lambda r: r.update(total_reinitialized=-3), "`total_reinitialized` is -3, not a non-negative integer"),
    (lambda r: r.update(total_reinitialized=True), "`total_reinitialized` is True, not a non-negative integer"),
    (lambda r: r["reinitialized_per_block"].update({"2": "many"}), r"`reinitialized_per_block\['2'\]` is 'many'"),
    (lambda r: r.update(redrawn={"wholes": []}), r"`redrawn` has unknown keys \['wholes'\]"),
    (lambda r: r.update(redrawn=["vit.layers.2"]), "`redrawn` must be a dict"),
    (lambda r: r.update(schema_version="2"), "`schema_version` is '2', not a positive integer"),
    (lambda r: r.update(blocks="vit.encoder.layer.2"), "`blocks` is 'vit.encoder.layer.2', not a list"),
    (lambda r: r.update(periodic={"strategy": "rifle"}), r"`periodic` is \{'strategy': 'rifle'\}, not a list"),
    (lambda r: r.update(periodic={}), r"`periodic` is \{\}, not a list"),
    (lambda r: r.update(periodic=0), "`periodic` is 0, not a list"),
    (lambda r: r.update(periodic=None), "`periodic` is None, not a list"),
    (lambda r: r.update(periodic=[{"strategy": "rifle", "config": {}, "resets": 1}]), "lacks the `total_reinit"),
    (
        lambda r: r.update(periodic=[{"strategy": "cbp", "config": {}, "resets": -1, "total_reinitialized": 0}]),
        "`periodic` list is unreadable: an entry's `resets` is -1, not a non-negative integer",
    ),
]


@pytest.mark.parametrize("change, problem", BREAKAGES)
def test_a_broken_record_in_config_json_is_named_with_its_path(make_model, tmp_path, change, problem):
    record = json.loads(json.dumps(TODAYS_RECORD))
    change(record)
    folder, model_class = saved_with_record(make_model, tmp_path, record)
    model = model_class.from_pretrained(folder)
    where = re.escape(f"{folder}/config.json (its `plasticity` entry) is broken: ")
    with pytest.raises(RecordError, match=f"{where}.*{problem}"):
        restore_record(model)
    with pytest.raises(RecordError, match=problem):
        PlasticityConfig.from_pretrained(folder)
    with pytest.raises(RecordError, match=problem):
        plasticity_param_groups(model, lr=1e-4)


def test_a_record_of_a_newer_schema_is_refused():
    newer = dict(TODAYS_RECORD, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(RecordError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer hf-plasticity"):
        RestoreRecord.from_dict(newer, source="ckpt/config.json")


@pytest.mark.parametrize("text, problem", [("{not json", "Expecting property name"), ("[1, 2]", "not a JSON object")])
def test_a_broken_plasticity_config_json_is_named_with_its_path(tmp_path, text, problem):
    (tmp_path / "plasticity_config.json").write_text(text)
    path = tmp_path / "plasticity_config.json"
    with pytest.raises(ValueError, match=re.escape(f"{path} is not a valid plasticity config: ") + f".*{problem}"):
        PlasticityConfig.from_pretrained(tmp_path)


names = st.lists(st.from_regex(r"[a-z]{1,4}(\.[0-9a-z]{1,3}){0,3}", fullmatch=True), max_size=4)
numbers = st.integers(min_value=0, max_value=10**9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(["reinit_layers", "selective", "redo", "auto"]),
    per_block=st.dictionaries(st.from_regex(r"[0-9a-z.]{1,12}", fullmatch=True), numbers, max_size=5),
    totals=st.tuples(numbers, numbers),
    redrawn=st.one_of(st.none(), st.fixed_dictionaries({"whole": names, "partial": names})),
    blocks=names,
    diagnostics=st.dictionaries(
        st.sampled_from(["before", "after"]),
        st.dictionaries(st.sampled_from(["dormant_ratio", "effective_rank"]), st.floats(0, 1e6)),
    ),
)
def test_every_record_survives_to_dict_and_json(strategy, per_block, totals, redrawn, blocks, diagnostics):
    record = RestoreRecord(
        strategy=strategy,
        config={"seed": 0},
        reinitialized_per_block=per_block,
        total_reinitialized=totals[0],
        total_parameters=totals[1],
        redrawn=redrawn,
        blocks=blocks,
        diagnostics=diagnostics,
    )
    assert RestoreRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_record_of_schema_3_reads_as_having_no_periodic_resets():
    older = dict(TODAYS_RECORD, schema_version=3)
    record = RestoreRecord.from_dict(older)
    assert record.periodic == [] and "periodic" not in record.to_dict()


def test_a_record_without_periodic_resets_is_written_in_the_schema_older_versions_read(monkeypatch):
    """Schema 4 only added ``periodic``: a record without it is written as schema 3, which a reader of schema 3
    (it refuses newer schemas) still reads; one with periodic resets is written as schema 4."""
    import hf_plasticity.core.record as record_module

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    written = prepare_pretrained(model, "reinit_layers").record().to_dict()
    assert written["schema_version"] == 3
    record_periodic_reset(model, "rifle", {"strategy": "rifle"}, 5)
    assert restore_record(model).to_dict()["schema_version"] == SCHEMA_VERSION == 4
    monkeypatch.setattr(record_module, "SCHEMA_VERSION", 3)  # a reader that predates the field
    assert RestoreRecord.from_dict(written).total_reinitialized == written["total_reinitialized"]


resets = st.lists(
    st.tuples(st.sampled_from(["cbp", "rifle"]), st.sampled_from([0, 1]), st.integers(min_value=0, max_value=10**6)),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(resets=resets, restored=st.booleans())
def test_periodic_resets_are_counted_per_strategy_and_config(resets, restored):
    """Each reset adds one to the entry of its strategy and config (entries in the order they first acted), on the
    one-shot restore's record when there is one (left as it was otherwise), else on a record of strategy "none" that
    does not block a later restore; the record survives JSON."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    one_shot = prepare_pretrained(model, "reinit_layers").record() if restored else None
    for strategy, seed, count in resets:
        record_periodic_reset(model, strategy, {"strategy": strategy, "seed": seed}, count)
    record = restore_record(model)
    if not resets:
        assert record == one_shot
        return
    expected: dict[tuple[str, int], list[int]] = {}
    for strategy, seed, count in resets:
        expected.setdefault((strategy, seed), []).append(count)
    assert [(e.strategy, e.config["seed"], e.resets, e.total_reinitialized) for e in record.periodic] == [
        (strategy, seed, len(counts), sum(counts)) for (strategy, seed), counts in expected.items()
    ]
    if restored:
        assert dataclasses.replace(record, periodic=[]) == one_shot
    else:
        assert (record.strategy, record.total_reinitialized, blocks_restore(record)) == ("none", 0, False)
    assert RestoreRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_broken_record_blocks_a_restore_until_force_replaces_it(make_model, tmp_path):
    folder, model_class = saved_with_record(make_model, tmp_path, {"strategy": "reinit_layers"})
    model = model_class.from_pretrained(folder)
    with pytest.raises(RecordError, match="the `config` field is missing"):
        prepare_pretrained(model)
    report = prepare_pretrained(model, force=True)
    assert restore_record(model) == report.record()
