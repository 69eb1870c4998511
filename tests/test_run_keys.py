"""A run's key holds the hash of the code that defines it (helpers.chapters): editing a loss trains the run again,
rewording a docstring does not, and each chapter's ``CODE`` names every module its Learner's pieces come from."""
import importlib.util
import inspect
import sys

import pytest
import torch

from helpers import chapters, data, models, profiles, runs
from helpers.chapters import ch01, ch02, ch03, ch05
from helpers.methods import simclr
from helpers.synthretina import synthretina_table


NAME = "simclr_as_edited"  # one module name for every variant: the hash also holds where the code lives
CODE = ch01.CODE  # as shipped (the tests below patch the module's)


def _load_as(source: str, path):
    """``source`` (a copy of chapter 1's SimCLR module with one edit) imported as the module ``NAME``."""
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(NAME, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = mod
    spec.loader.exec_module(mod)


@pytest.fixture()
def use_simclr(tmp_path, monkeypatch):
    """``use(variant)``: chapter 1's recipe keyed by its SimCLR module as is, with its loss's docstring reworded,
    or with its loss edited."""
    src = inspect.getsource(simclr).replace("from .. import", "from helpers import").replace("from ..", "from helpers.")
    loss = inspect.getsource(simclr.nt_xent_loss)
    doc = loss.split('"""')[1]
    assert "return F.cross_entropy(sim, targets)" in loss and doc
    variants = {"same": src, "reworded": src.replace(doc, "The NT-Xent loss, reworded."),
                "edited": src.replace("return F.cross_entropy(sim, targets)", "return F.cross_entropy(2 * sim, targets)")}

    def use(variant):
        _load_as(variants[variant], tmp_path / f"{variant}.py")
        monkeypatch.setattr(ch01, "CODE", tuple(NAME if p == "helpers.methods.simclr" else p for p in CODE))
    yield use
    sys.modules.pop(NAME, None)


def test_the_key_follows_the_code_not_its_docstrings(use_simclr):
    table = synthretina_table(16, 4, 4, size=32, seed=0, progress=False)
    K = profiles.load("smoke").simclr
    keys = {}
    for variant in ("same", "reworded", "edited"):
        use_simclr(variant)
        keys[variant] = ch01.key(table, K, 0, K.temperature, K.epochs, None)
    assert keys["same"] == keys["reworded"] != keys["edited"]


def test_editing_the_loss_trains_the_run_again(use_simclr, tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path / "cache"))
    table = synthretina_table(16, 4, 4, size=32, seed=0, progress=False)
    K = profiles.load("smoke").simclr
    use_simclr("same")
    _, first = ch01.pretrain(table, K, 0, "cpu", epochs=1, bar=False)
    _, again = ch01.pretrain(table, K, 0, "cpu", epochs=1, bar=False)
    use_simclr("reworded")
    _, reworded = ch01.pretrain(table, K, 0, "cpu", epochs=1, bar=False)
    use_simclr("edited")
    _, edited = ch01.pretrain(table, K, 0, "cpu", epochs=1, bar=False)
    assert [first["loaded"], again["loaded"], reworded["loaded"], edited["loaded"]] == [False, True, True, False]


def _helpers_modules(learn) -> set:
    """The helpers modules that define the classes of a Learner's model, loss and callbacks (and their parts)."""
    objs = list(learn.model.modules()) + [learn.loss_func] + list(learn.cbs)
    objs += [v for cb in learn.cbs for v in vars(cb).values() if isinstance(v, torch.nn.Module)]
    return {type(o).__module__ for o in objs if type(o).__module__.startswith("helpers.")}


def _covered(code) -> set:
    return {part.partition(":")[0] for part in code}


@pytest.mark.parametrize("recipe, group, build", [
    (ch01, "simclr", lambda dls, enc, K: simclr.simclr_learner(dls, enc, proj_dim=K["proj_dim"])),
    (ch02, "dino", lambda dls, enc, K: importlib.import_module("helpers.methods.dino").dino_learner(dls, enc)),
    (ch03, "mae", lambda dls, enc, K: importlib.import_module("helpers.methods.mae").mae_learner(dls, enc)),
])
def test_each_recipes_code_names_every_module_its_learner_is_built_from(recipe, group, build):
    K = profiles.load("smoke")[group]
    table = synthretina_table(8, 4, 0, size=K["image_size"], seed=0, progress=False)
    dls = data.dataloaders(table, None, bs=4, size=K["image_size"], device="cpu", augment=False, normalize=False)
    enc, _ = models.create_encoder(K["encoder"], **K.get("encoder_kwargs", {}))
    missing = _helpers_modules(build(dls, enc, K)) - _covered(recipe.CODE) - {"helpers.progress"}
    assert not missing, f"{recipe.__name__}.CODE leaves out {missing}: an edit there would not retrain the run"


def test_every_chapter_recipe_keys_its_runs_with_its_code():
    for mod in (ch01, ch02, ch03, ch05, importlib.import_module("helpers.chapters.ch04")):
        src = inspect.getsource(mod)
        assert src.count("runs.run_key(") == src.count("code=code(CODE)") > 0, mod.__name__
        assert chapters.code(mod.CODE) == runs.code_hash(*mod.CODE)


def test_a_trained_classifier_is_keyed_by_its_code(tmp_path, monkeypatch):
    """Chapter 4's grader (``transfer.train_classifier``): its key holds the hash of ``CLASSIFIER_CODE``, which
    names every helpers module its Learner is built from; an edited loss gives another key, a docstring does not."""
    from helpers import transfer
    table = synthretina_table(8, 4, 0, size=32, seed=0, progress=False)
    seen = {}
    monkeypatch.setattr(runs, "load_or_train", lambda learn, key, *a, **k: seen.update(learn=learn, key=key))
    transfer.train_classifier(table, ["dr_grade"], epochs=1, bs=4, size=32)
    missing = _helpers_modules(seen["learn"]) - _covered(transfer.CLASSIFIER_CODE) - {"helpers.progress"}
    assert not missing, f"transfer.CLASSIFIER_CODE leaves out {missing}"
    src = inspect.getsource(transfer).replace("from . import", "from helpers import").replace("from .", "from helpers.")
    line = "return sum(F.cross_entropy(p, y[:, i], label_smoothing=self.label_smoothing,"
    assert line in src
    keys = {}
    for variant, text in {"same": src, "reworded": src.replace("Sum over tasks of", "The sum over tasks of"),
                          "edited": src.replace(line, line.replace("sum(", "0.5 * sum("))}.items():
        _load_as(text, tmp_path / f"t_{variant}.py")
        monkeypatch.setattr(transfer, "CLASSIFIER_CODE", tuple(p.replace("helpers.transfer", NAME)
                                                                for p in transfer.CLASSIFIER_CODE))
        transfer.train_classifier(table, ["dr_grade"], epochs=1, bs=4, size=32)
        keys[variant] = seen["key"]
    sys.modules.pop(NAME, None)
    assert keys["same"] == keys["reworded"] != keys["edited"]
