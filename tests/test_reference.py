"""Reference runs (helpers.reference): shipped, hash-checked, and trained by the code that loads them."""
import json
import types

import pytest
import torch

from helpers import profiles, reference, runs
from helpers.chapters import ch01
from helpers.synthretina import synthretina_table


def _norm(x):
    return json.loads(json.dumps(dict(x)))


@pytest.mark.parametrize("method", sorted(reference.METHODS))
def test_the_shipped_reference_run_is_what_the_code_would_train(method):
    rec = reference.provenance(method)
    assert rec is not None, f"no reference run of {method} is shipped: python -m helpers.pretrain {method} " \
                            "--profile reference"
    K = profiles.load(reference.PROFILE)[method]
    assert rec["knobs"] == _norm(K), (f"the {method} reference run was trained with other knobs than the "
                                      f"reference profile's: retrain with `{rec['command']}`")
    assert rec["epochs"] == K["epochs"] and rec["seed"] in [s for s in K["seeds"]]
    assert reference.up_to_date(method, rec), (
        f"the code of {rec['modules']} changed since the {method} reference run was trained: retrain with "
        f"`{rec['command']}` (or, for a change that computes nothing new, prove it: tools/certify_reference.py)")
    assert sorted(int(e) for e in rec["files"]) == sorted(set(K["save_at"]) | {K["epochs"]})
    for key in ("command", "wall_time_s", "machine", "trained"):
        assert rec[key], key
    enc, _ = reference.load(method)  # the hash of every file is checked on load
    assert sum(p.numel() for p in enc.parameters()) > 0


def test_shipped_reference_runs_are_small():
    total = sum(p.stat().st_size for p in reference.SHIPPED.glob("*"))
    assert 0 < total <= 60e6, f"{total / 1e6:.1f} MB shipped"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    table = synthretina_table(32, 8, 8, size=32, seed=0, progress=False)
    K = profiles.load("smoke").simclr
    folder = tmp_path_factory.mktemp("ckpt")
    model, hist = ch01.pretrain(table, K, 0, "cpu", epochs=2, save_at=[1, 2], bar=False)
    return model, hist, K, folder


def test_ship_then_load_round_trip_and_refuse_a_changed_file(tiny_run, tmp_path):
    model, hist, K, _ = tiny_run
    hist = {**hist, "epochs": 2}
    out = reference.ship("simclr", model, hist, K, 0, "python -m helpers.pretrain simclr --profile reference",
                         folder=tmp_path)
    rec = json.loads(out.read_text())
    assert sorted(rec["files"]) == ["1", "2"] and rec["code_hash"] == reference.recipe_hash("simclr")
    enc, _ = reference.load("simclr", folder=tmp_path)
    for a, b in zip(enc.state_dict().values(), model.encoder.state_dict().values()):
        assert torch.equal(a, b.cpu())
    early, _ = reference.load("simclr", epoch=1, folder=tmp_path)
    assert any(not torch.equal(a, b) for a, b in zip(early.state_dict().values(), enc.state_dict().values()))
    with pytest.raises(ValueError, match="shipped after epochs"):
        reference.load("simclr", epoch=7, folder=tmp_path)
    (tmp_path / rec["files"]["2"]["name"]).write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(ValueError, match="SHA-256"):
        reference.load("simclr", folder=tmp_path)
    with pytest.raises(FileNotFoundError, match="--profile reference"):
        reference.load("mae", folder=tmp_path)
    with pytest.raises(ValueError, match="no reference run for"):
        reference.provenance("byol")


def test_code_hash_ignores_docstrings_and_comments_and_sees_code(tmp_path):
    def module(file, src):  # one module name ("recipe"), three versions of its code
        path = tmp_path / f"{file}.py"
        path.write_text(src)
        m = types.ModuleType("recipe")
        m.__file__ = str(path)
        exec(compile(src, str(path), "exec"), m.__dict__)
        return m
    base = runs.code_hash(module("v1", 'def loss(x):\n    """Sum."""\n    return x.sum()  # a comment\n'))
    reworded = runs.code_hash(module("v2", 'def loss(x):\n    """The sum, reworded."""\n    return x.sum()\n'))
    edited = runs.code_hash(module("v3", 'def loss(x):\n    """Sum."""\n    return x.mean()\n'))
    assert base == reworded and base != edited
    assert runs.code_hash("helpers.methods.simclr") != runs.code_hash("helpers.methods.dino")


def test_the_pretrain_command_ships_a_reference_run(tmp_path, monkeypatch):
    """`python -m helpers.pretrain simclr --profile reference` trains, then ships what the chapters load."""
    from helpers import pretrain
    tiny = profiles._merge(profiles._PROFILES["smoke"], {
        "data": {"n_train": 32, "n_valid": 16, "n_test": 16},
        "simclr": {"epochs": 2, "seeds": [0], "save_at": [1, 2]}})
    monkeypatch.setitem(profiles._PROFILES, "reference", tiny)
    monkeypatch.setattr(reference, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path / "cache"))
    assert pretrain.main(["simclr", "--profile", "reference"]) == 0
    rec = reference.provenance("simclr")
    assert rec["command"] == "python -m helpers.pretrain simclr --profile reference" and rec["epochs"] == 2
    assert rec["knobs"] == _norm(profiles.load("reference").simclr) and rec["data"]
    assert reference.budgets("simclr") == [1, 2] and "this code" in reference.describe("simclr")
    table = synthretina_table(16, 8, 8, size=32, seed=0, progress=False)
    g = reference.gains("simclr", table, ["dr_grade", "amd"], max_iter=100)
    assert list(g.epoch.unique()) == [1, 2] and set(g.task) == {"dr_grade", "amd", "mean"}
    assert (g.lo <= g["diff"]).all() and (g["diff"] <= g.hi).all()
    assert not reference.same_table("simclr", table)
    # a quick try with other epochs is not a reference run: nothing new is shipped
    before = (tmp_path / "shipped" / "simclr.json").read_text()
    assert pretrain.main(["simclr", "--profile", "reference", "--epochs", "1"]) == 0
    assert (tmp_path / "shipped" / "simclr.json").read_text() == before


def test_only_a_bitwise_certificate_from_the_training_code_keeps_a_run_up_to_date():
    rec = {"code_hash": "trained", "equivalent_code": []}
    now = reference.recipe_hash("simclr")
    good = {"code_hash": now, "from_code_hash": "trained", "max_abs_diff": 0.0, "epochs_compared": 1}
    assert not reference.up_to_date("simclr", rec)
    assert reference.up_to_date("simclr", dict(rec, equivalent_code=[good]))
    for bad in ({"max_abs_diff": 1e-7}, {"from_code_hash": "another"}, {"code_hash": "stale"}, {"epochs_compared": 0}):
        assert not reference.up_to_date("simclr", dict(rec, equivalent_code=[{**good, **bad}])), bad
    assert reference.up_to_date("simclr", {"code_hash": now})

