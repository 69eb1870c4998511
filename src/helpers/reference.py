"""Reference runs: the book's pretraining runs at a longer budget, trained once and shipped with the book.

Book page "Reproduction report". A chapter trains its own encoder at the chapter's budget (a few minutes on a
laptop); its claims are then measured a second time on the *reference run* of the same recipe — the ``reference``
profile, longer pretraining on the same SynthRetina table — which ``make book`` loads and never trains::

    python -m helpers.pretrain simclr --profile reference     # trains it (≈ 10–25 min on 2 CPU cores), ships it

Each method ships, under ``src/helpers/reference_runs/``, the encoder (safetensors; a small CNN or ViT of about
1 MB) after each budget in the profile's ``save_at``, and ``<method>.json``: the provenance (command, knobs, seed,
the hash of the code that trained it, wall time, machine) and the SHA-256 of every file, checked on load.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import pandas as pd

from . import chapters, efficiency, env, evaluation, models, runs

PROFILE = "reference"
SHIPPED = Path(__file__).resolve().parent / "reference_runs"
ENCODER_OF = {  # method -> how to take the encoder out of the trained model
    "simclr": lambda model: model.encoder,
    "dino": lambda model: model.teacher[0],  # the teacher is what DINO evaluates
    "mae": lambda model: model.encoder,
}
METHODS = tuple(ENCODER_OF)


def recipe_hash(method: str) -> str:
    """The hash of the code that defines ``method``'s run: its chapter module's ``CODE``, the hash its run keys hold
    (:mod:`helpers.chapters`)."""
    return chapters.code(_code(method))


def _code(method: str) -> tuple:
    if method not in ENCODER_OF:
        raise ValueError(f"no reference run for {method!r}; there is one for {', '.join(ENCODER_OF)}")
    return chapters.recipe(method).CODE


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ship(method: str, model, hist: dict, knobs: dict, seed: int, command: str, data: str = "",
         code_hash: str | None = None, folder: Path | None = None) -> Path:
    """Write ``method``'s reference run (its encoder at every saved budget) and its provenance; returns the JSON.

    Called by ``python -m helpers.pretrain METHOD --profile reference`` after training (or finding) the run;
    ``code_hash`` is :func:`recipe_hash` taken before training (default: now).
    """
    code = _code(method)  # refuses a method without a reference run
    encoder_of = ENCODER_OF[method]
    folder = Path(folder) if folder else SHIPPED
    folder.mkdir(parents=True, exist_ok=True)
    knobs = json.loads(json.dumps(dict(knobs)))
    files = {}
    arch = lambda: models.create_encoder(knobs["encoder"], **knobs.get("encoder_kwargs", {}))[0]  # noqa: E731
    for epoch, path in sorted(hist["checkpoints"].items(), key=lambda kv: int(kv[0])):
        if int(epoch) == int(hist["epochs"]):
            continue  # the final weights come from `model` below
        m = copy.deepcopy(model)  # the checkpoint holds the whole pretraining model: read it into a copy
        runs.load_weights(m, Path(path))
        files[int(epoch)] = _save_encoder(encoder_of(m), arch, folder / f"{method}-e{int(epoch):03d}.safetensors")
    files[int(hist["epochs"])] = _save_encoder(encoder_of(model), arch, folder / f"{method}.safetensors")
    record = {
        "method": method, "profile": PROFILE, "command": command, "seed": seed, "epochs": int(hist["epochs"]),
        "data": data,
        "knobs": knobs, "code_hash": code_hash or recipe_hash(method), "modules": list(code),
        "wall_time_s": round(float(hist["seconds"]), 1), "machine": _machine(),
        "trained": time.strftime("%Y-%m-%d", time.gmtime()),
        "final_train_loss": float(hist["train"][-1]) if hist.get("train") else None,
        "train_epoch": [round(float(v), 5) for v in hist.get("train_epoch", [])],
        "files": {str(e): {"name": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size}
                  for e, p in sorted(files.items())},
    }
    out = folder / f"{method}.json"
    env.atomic_write(out, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))
    return out


def _machine() -> str:
    """The machine a run trained on, in words (chapter 3's :func:`helpers.efficiency.machine`, plus cores)."""
    return efficiency.describe_machine(env.get_device())


def _save_encoder(encoder, arch, path: Path) -> Path:
    """Save ``encoder`` alone (checked to load into a fresh encoder of the same architecture)."""
    runs.save_weights(encoder, path)
    runs.load_weights(arch(), path)
    return path


def provenance(method: str, folder: Path | None = None) -> dict | None:
    """``method``'s provenance record, or None when no reference run is shipped."""
    _code(method)
    path = Path(folder or SHIPPED) / f"{method}.json"
    return json.loads(path.read_text()) if path.exists() else None


def budgets(method: str, folder: Path | None = None) -> list[int]:
    """The pretraining epochs at which ``method``'s reference encoder is shipped (the reference budget curve)."""
    rec = provenance(method, folder)
    return sorted(int(e) for e in rec["files"]) if rec else []


def load(method: str, epoch: int | None = None, device=None, folder: Path | None = None):
    """``(encoder, provenance)``: the shipped reference encoder of ``method`` after ``epoch`` (default: the last).

    The file's SHA-256 is checked against the provenance; the encoder is built from the knobs that trained it.
    """
    rec = provenance(method, folder)
    if rec is None:
        raise FileNotFoundError(f"no reference run of {method} is shipped in {folder or SHIPPED}; train it with "
                                f"`python -m helpers.pretrain {method} --profile reference`")
    epoch = rec["epochs"] if epoch is None else int(epoch)
    entry = rec["files"].get(str(epoch))
    if entry is None:
        raise ValueError(f"the {method} reference run is shipped after epochs {budgets(method, folder)}, not {epoch}")
    path = Path(folder or SHIPPED) / entry["name"]
    if _sha256(path) != entry["sha256"]:
        raise ValueError(f"{path} does not match its recorded SHA-256: the file changed or is incomplete "
                         f"(a Git LFS pointer?); restore it or train it again")
    K = rec["knobs"]
    encoder, _ = models.create_encoder(K["encoder"], **K.get("encoder_kwargs", {}))
    runs.load_weights(encoder, path)
    return encoder.to(device or "cpu").eval(), rec


def up_to_date(method: str, rec: dict | None = None) -> bool:
    """Whether the shipped run is what this code trains: trained by it (same recipe hash), or by code that
    ``tools/certify_reference.py`` found to train identical weights (an ``equivalent_code`` entry for this hash,
    from the hash that trained it, with no difference at all)."""
    rec = rec or provenance(method)
    if rec is None:
        return False
    now = recipe_hash(method)
    return rec["code_hash"] == now or any(
        e.get("code_hash") == now and e.get("from_code_hash") == rec["code_hash"] and e.get("max_abs_diff") == 0.0
        and e.get("epochs_compared", 0) >= 1 for e in rec.get("equivalent_code", []))


def describe(method: str, folder: Path | None = None) -> str:
    """One line on ``method``'s reference run for a chapter: budget, seed, wall time, machine, code up to date."""
    rec = provenance(method, folder)
    if rec is None:
        return f"no reference run of {method} is shipped"
    now = recipe_hash(method)
    same = [e for e in rec.get("equivalent_code", []) if e["code_hash"] == now]
    current = "the code that trained it is this code" if rec["code_hash"] == now else (
        f"trained by code hash {rec['code_hash']}; this code ({now}) trains the same weights bit for bit "
        f"(checked over {same[-1]['epochs_compared']} epoch on {same[-1]['checked']}: `{same[-1]['command']}`)"
        if up_to_date(method, rec) else
        f"**trained by an earlier version of the code** (hash {rec['code_hash']}, now {now}): "
        f"retrain with `{rec['command']}`")
    return (f"reference run of {method}: {rec['epochs']} epochs, seed {rec['seed']}, trained in "
            f"{rec['wall_time_s'] / 60:.1f} min on {rec['machine']} ({rec['trained']}); {current}")


def features(method: str, table, device=None, epoch: int | None = None, random_seed: int | None = None,
             folder: Path | None = None) -> dict:
    """``{split: array}`` features of ``table`` from ``method``'s reference encoder after ``epoch`` — or, with
    ``random_seed``, from a random-init encoder of the same architecture (the baseline) — at the image size the
    reference run trained at (chapters 1–3)."""
    rec = provenance(method, folder)
    if rec is None:
        raise FileNotFoundError(f"no reference run of {method} is shipped in {folder or SHIPPED}")
    K = rec["knobs"]
    if random_seed is None:
        encoder, _ = load(method, epoch, device, folder)
    else:
        env.seed_everything(random_seed)
        encoder, _ = models.create_encoder(K["encoder"], **K.get("encoder_kwargs", {}))
    return evaluation.extract_features(encoder.eval(), table, device=device, size=K["image_size"])


def gains(method: str, table, tasks, seed: int = 0, device=None, max_iter: int = 1000, k: int | None = None,
          folder: Path | None = None):
    """The linear-probe (or, with ``k``, k-NN) gain of every shipped checkpoint of ``method`` over a random-init
    encoder of seed ``seed``, per task with a 95 % test-set bootstrap interval (and a ``mean`` row): columns
    ``epoch, task, a, b, diff, lo, hi``. Cached by the features' values (chapters 1 and 2)."""
    base = features(method, table, device, random_seed=seed, folder=folder)
    frames = []
    for epoch in budgets(method, folder):
        f = features(method, table, device, epoch, folder=folder)
        key = runs.run_key(a=runs.array_fingerprint(f), b=runs.array_fingerprint(base), data=table.fingerprint(),
                           tasks=list(tasks), seed=seed, max_iter=max_iter, k=k)
        rows = runs.cached_json("reference-gain", key, lambda: evaluation.bootstrap_difference(
            f, base, table, tasks, seed=seed, max_iter=max_iter, k=k).to_dict("records"))
        frames.append(pd.DataFrame(rows).assign(epoch=epoch))
    return pd.concat(frames, ignore_index=True)


def same_table(method: str, table, folder: Path | None = None) -> bool:
    """Whether ``table`` is the table ``method``'s reference run trained on (a chapter says so when it is not)."""
    rec = provenance(method, folder)
    return bool(rec) and rec.get("data") == table.fingerprint()
