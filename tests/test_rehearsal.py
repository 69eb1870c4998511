"""The real path, rehearsed: every chapter in the `rehearsal` profile (the gpu profile's knobs and code path, tiny
sizes) against tools/fixture_hub.py's faithful copies of the hubs, on 127.0.0.1, with no GPU and no internet; each
chapter as on a fresh Colab runtime (nothing cached by another chapter)."""
import os

import pytest

import bookrunner as book
from helpers import profiles

NOTEBOOKS = book.discover()
NAMES = [p.stem for p in NOTEBOOKS]
BUDGET_S = 90  # per chapter on 2 CPU cores


@pytest.fixture(scope="session")
def rehearsal_runs(tmp_path_factory, real_hub):
    """Every chapter in rehearsal, each as on a fresh Colab runtime: its own empty cache, data folder and Hugging
    Face cache, so a chapter that needs an earlier chapter's runs has to train them itself."""
    stage = tmp_path_factory.mktemp("rehearsal")
    runs, saved = {}, {k: os.environ.get(k) for k in ("RETINA_CACHE", "RETINA_DATA")}
    try:
        for path in NOTEBOOKS:
            fresh = stage / path.stem
            os.environ["RETINA_CACHE"], os.environ["RETINA_DATA"] = str(fresh / "cache"), str(fresh / "data")
            with real_hub.environment(hf_home=fresh / "hf"):
                start, start_unlisted = len(real_hub.log), len(real_hub.unlisted)
                run = book.execute(path, stage / path.name, "rehearsal", timeout=300, progress=False)
                runs[path.stem] = (run, real_hub.log[start:], real_hub.unlisted[start_unlisted:])
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.update({k: v})
    return runs


def test_rehearsal_is_the_gpu_profile_with_only_sizes_changed():
    gpu, reh = profiles.load("gpu"), profiles.load("rehearsal")
    size_words = ("n_", "epochs", "batch", "size", "seeds", "save_at", "steps", "dim", "local", "channels",
                  "images", "counts", "shots", "fractions", "iter", "knn_k", "depth", "heads", "about",
                  "num_workers", "embedding", "architectures", "efficiency_models", "decoder", "cache")
    def walk(a, b, where=""):
        for k in set(a) | set(b):
            if isinstance(a.get(k), dict) and isinstance(b.get(k), dict) and k != "architectures":
                walk(a[k], b[k], f"{where}{k}.")
            elif a.get(k) != b.get(k):
                assert any(w in k for w in size_words), f"rehearsal changes {where}{k}: {a.get(k)!r} -> {b.get(k)!r}"
    walk(dict(gpu.knobs), dict(reh.knobs))
    assert reh.data.source == gpu.data.source and reh.pretrained and reh.world == "real"
    assert [m["init"] for m in reh.mae.efficiency_models] == [m["init"] for m in gpu.mae.efficiency_models]
    profiles.load("smoke")  # leave no architecture overrides behind


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_chapter_runs_the_real_path_in_rehearsal(rehearsal_runs, name):
    run, log, unlisted = rehearsal_runs[name]
    assert run.error is None, f"{name} failed in rehearsal:\n{run.error}"
    assert run.seconds < BUDGET_S, f"{name} took {run.seconds:.0f} s in rehearsal (budget {BUDGET_S} s)"
    assert not unlisted, f"the book asked for files the manifest does not list: {unlisted}"
    for rec in run.reports:
        assert rec["profile"] == "rehearsal"

