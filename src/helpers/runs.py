"""Runs: keys for what produced them, load-or-train with checkpoints along the way, an EMA teacher.

Shared by every pretraining chapter; explained in chapter 1 ("SimCLR on fundus
photographs", section Train). A run is saved as one safetensors file whose
metadata holds its loss history, written atomically under a file lock, so two
processes asking for the same run train it once and both get it::

    key = runs.run_key(chapter="01", seed=SEED, knobs=dict(K), data=table.fingerprint())
    hist = runs.load_or_train(learn, key, epochs, lr, name="simclr", save_at=(2, 4, 8))
    hist["checkpoints"]    # {epoch: path} — the budget curve reads them, no extra training
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import inspect
import json
import math
import textwrap
import time
from pathlib import Path

import fastai.callback.fp16  # noqa: F401  (adds Learner.to_fp16 / to_bf16)
import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle)
import numpy as np
import torch
from fastai.callback.core import Callback
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import distributed, progress  # noqa: F401  (progress: fastai's epoch table folded under one line)
from .env import atomic_write, cache_dir, lock


def run_key(**parts) -> str:
    """A short hash of everything that produced a run (keys checkpoints and features)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_hash(*parts) -> str:
    """A short hash of the code of ``parts``, blind to comments and docstrings.

    Each part is a module, a function or class, or its name (``"helpers.methods.simclr"``,
    ``"helpers.runs:load_or_train"``). A reference run (book page "Reproduction report") records the hash of the
    code that trained it, so a test can tell when an edit to its loss, model or recipe leaves the shipped checkpoint
    behind the code that loads it.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):  # read from the module's file, so a patched attribute cannot change the hash
            module, _, qualname = part.partition(":")
            part = importlib.import_module(module)
            owner, name = part.__name__, qualname
            tree = _definition(part, qualname) if qualname else ast.parse(inspect.getsource(part))
        else:
            module_part = inspect.ismodule(part)
            owner = part.__name__ if module_part else (getattr(part, "__module__", None) or part.__name__)
            name = "" if module_part else getattr(part, "__qualname__", "")
            tree = ast.parse(textwrap.dedent(inspect.getsource(part)))
        for node in ast.walk(tree):  # drop docstrings: rewording one does not change the run
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(getattr(body[0], "value", None), ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(f"{owner}:{name}".encode())
        h.update(ast.dump(tree, annotate_fields=False).encode())
    return h.hexdigest()[:16]


def _definition(module, qualname: str) -> ast.Module:
    """The definition ``qualname`` (``"f"``, ``"Cls"`` or ``"Cls.method"``) as written in ``module``'s file."""
    body = ast.parse(inspect.getsource(module)).body
    node = None
    for name in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            raise ValueError(f"{module.__name__} defines no {qualname!r}")
        body = node.body
    return ast.Module(body=[node], type_ignores=[])


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer of ``model`` (keys the feature cache of the evaluation protocol)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(repr((tuple(v.shape), str(v.dtype))).encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def array_fingerprint(arrays: dict) -> str:
    """A hash of every value in ``{name: array}`` (e.g. extracted features), keying results computed from them."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(repr((k, a.shape, str(a.dtype))).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def save_weights(model: torch.nn.Module, path: Path, metadata: dict | None = None) -> Path:
    """Save ``model``'s state as safetensors (``metadata`` as JSON strings), atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def load_weights(model: torch.nn.Module, path: Path) -> dict:
    """Load a safetensors checkpoint into ``model``; returns its metadata (decoded)."""
    state, own = load_file(str(path)), model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:  # some libraries' modules load non-strictly: refuse another architecture here
        raise ValueError(f"{path} was saved from another architecture (missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}); delete it to train again")
    model.load_state_dict(state)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) for k, v in meta.items()}


def cached_json(name: str, key: str, compute, folder: Path | None = None):
    """``compute()`` once per ``key`` (a JSON-able result, e.g. probe or fine-tuning metrics), then read back.

    Chapter 1 caches its fine-tuning and budget-curve results this way, so a
    second run of the chapter takes seconds. Locked and atomic like the checkpoints.
    """
    folder = Path(folder) if folder else cache_dir("results")
    path = folder / f"{name}-{key}.json"
    with lock(path):
        if path.exists():
            return json.loads(path.read_text())
        value = compute()
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value)))
    return value


class SaveCheckpoints(Callback):
    """Save the model after the epochs in ``epochs`` (1-based) to ``path_for(epoch)``: the budget curve's points.

    On several processes only rank 0 writes (every process has the same weights).
    """
    order = 90

    def __init__(self, epochs, path_for):
        super().__init__()
        self.epochs, self.path_for, self.saved = set(int(e) for e in epochs), path_for, {}

    def after_epoch(self):
        e = self.epoch + 1
        if e in self.epochs:
            path = self.path_for(e)
            if distributed.is_main():
                save_weights(distributed.unwrap(self.learn.model), path, {"epoch": e})
            self.saved[e] = str(path)


def load_or_train(learn, key: str, epochs: int, lr: float, name: str, folder: Path | None = None,
                  save_at=(), extra=None, bar: bool = True) -> dict:
    """Train ``learn`` with ``fit_one_cycle`` and save it, or load the run saved under ``name``-``key``.

    ``save_at`` lists epochs after which a checkpoint is kept as well (for a
    budget curve). Returns the history ``{"train": [per batch], "train_epoch":
    [...], "valid": [per epoch, the real validation loss], "checkpoints":
    {epoch: path}, "seconds": training time, "loaded": bool}``, plus what
    ``extra(learn)`` returns after training (a JSON-able dict saved with the
    run: chapter 2 keeps its per-epoch collapse diagnostics there). ``bar=False``
    trains without fastai's progress bar and epoch table (runs read back in passing).

    Under ``torchrun`` (book page "Scaling out") every process trains inside
    :func:`helpers.distributed.trainer`; rank 0 alone takes the lock, decides
    whether to load or train, and writes the checkpoints (the history then
    records ``world_size``), so the chapters read the run back unchanged.
    """
    folder = Path(folder) if folder else cache_dir("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{key}.safetensors"
    ckpt = lambda e: folder / f"{name}-{key}-e{e:03d}.safetensors"  # noqa: E731
    main, world = distributed.is_main(), distributed.world_size()
    with lock(path) if main else contextlib.nullcontext():
        if distributed.broadcast_object(path.exists()):  # rank 0's answer on every process
            # (a process on another node without a shared cache folder keeps its weights; rank 0's are the run)
            hist = distributed.broadcast_object(load_weights(learn.model, path)["history"] if main else None)
            if not main and path.exists():
                load_weights(learn.model, path)
            hist["checkpoints"] = {int(e): str(folder / n) for e, n in hist.get("checkpoints", {}).items()
                                   if (folder / n).exists()}
            if main:
                print(f"loaded the saved run {path.name} (delete it to train again)")
            return {**hist, "loaded": True}
        saver = SaveCheckpoints([e for e in save_at if e < epochs], ckpt)
        t0 = time.perf_counter()
        with distributed.trainer(learn):
            if bar:
                learn.fit_one_cycle(epochs, lr, cbs=[saver])
            else:
                with learn.no_bar(), learn.no_logging():
                    learn.fit_one_cycle(epochs, lr, cbs=[saver])
        seconds = time.perf_counter() - t0
        values = [v for v in learn.recorder.values if v]
        hist = {"train": [float(x) for x in learn.recorder.losses],
                "train_epoch": [float(v[0]) for v in values],
                "valid": [float(v[1]) for v in values if len(v) > 1],
                "checkpoints": {e: Path(p).name for e, p in saver.saved.items()}, "seconds": seconds,
                "epochs": epochs, **(extra(learn) if extra else {})}
        if world > 1:
            hist["world_size"] = world
        if epochs in set(save_at):
            hist["checkpoints"][epochs] = path.name
        if main:
            save_weights(distributed.unwrap(learn.model), path, {"history": hist})
        distributed.barrier()  # the other processes return once the run is on disk
    hist["checkpoints"] = {e: str(folder / n) for e, n in hist["checkpoints"].items()}
    return {**hist, "loaded": False}


def amp_mode(device) -> str | None:
    """The mixed precision a device trains with (book page "Scaling out"): ``"bf16"`` on GPUs from Ampere on
    (A100, L4, H100: fp32's range, no loss scaling), ``"fp16"`` with loss scaling on older ones (Colab's T4, whose
    bf16 would only be emulated), ``None`` on a CPU or Apple GPU."""
    if device is None or torch.device(device).type != "cuda":
        return None
    return "bf16" if torch.cuda.get_device_capability(torch.device(device)) >= (8, 0) else "fp16"


def mixed_precision(learn):
    """``learn`` set to train in :func:`amp_mode` of its dataloaders' device (fastai's ``to_bf16``/``to_fp16``)."""
    mode = amp_mode(learn.dls.device)
    return learn.to_bf16() if mode == "bf16" else learn.to_fp16() if mode == "fp16" else learn


@torch.no_grad()
def ema_update(student: torch.nn.Module, teacher: torch.nn.Module, momentum: float) -> None:
    """teacher ← m · teacher + (1 − m) · student, parameter by parameter (as ``lightly.utils.update_momentum``)."""
    for ps, pt in zip(student.parameters(), teacher.parameters()):
        pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)


def cosine_momentum(pct: float, base: float, final: float = 1.0) -> float:
    """The momentum at fraction ``pct`` of training: ``base`` rising to ``final`` on a half cosine (BYOL, DINO)."""
    return final - (final - base) * (math.cos(math.pi * min(max(pct, 0.0), 1.0)) + 1) / 2


def horizon_momentum(steps: int, horizon: float, ceiling: float = 0.996) -> float:
    """The EMA momentum whose time constant, 1 / (1 − m) optimiser steps, is ``horizon`` of a ``steps``-long run.

    Chapter 2: DINO's 0.996 means a teacher averaging over the last ~250 steps — 0.2 % of the paper's 125,000-step
    run, but most of a 300-step CPU run, so that teacher stays near its random initialisation. ``m = min(ceiling,
    1 − 1 / (horizon · steps))`` keeps the paper's value for long runs (≥ 250 / ``horizon`` steps) and lets a short
    run's teacher follow its student: 0.967 for 300 steps at ``horizon`` 0.1, 0.867 for 75.
    """
    if steps < 1 or not 0 < horizon <= 1:
        raise ValueError(f"need steps >= 1 and 0 < horizon <= 1; got steps={steps}, horizon={horizon}")
    return float(min(ceiling, max(0.0, 1.0 - 1.0 / (horizon * steps))))


class EMA(Callback):
    """fastai Callback: after every optimiser step, move a teacher toward its student (an exponential moving average).

    ``student`` and ``teacher`` are functions of the Learner's model returning
    the two modules (so the callback works with any model layout). The momentum
    follows :func:`cosine_momentum` from ``momentum`` to ``final`` (with ``horizon``, from the base that
    :func:`horizon_momentum` gives the run's length); chapter 2's DINO teacher and chapter 4's EMA of the
    denoiser use it.
    """
    order = 70

    def __init__(self, student, teacher, momentum: float = 0.996, final: float = 1.0, horizon: float | None = None):
        super().__init__()
        self.get_student, self.get_teacher, self.base, self.final = student, teacher, momentum, final
        self.momentum, self.horizon, self.given = momentum, horizon, momentum

    def before_fit(self):
        """With a ``horizon``, scale the base momentum to the run's length (:func:`horizon_momentum`)."""
        if self.horizon:
            steps = int(getattr(self.learn, "n_epoch", 1)) * max(len(self.learn.dls.train), 1)
            self.base = horizon_momentum(steps, self.horizon, self.given)  # `momentum` is the ceiling
            self.momentum = self.base

    def after_step(self):
        self.momentum = cosine_momentum(float(getattr(self.learn, "pct_train", 0.0)), self.base, self.final)
        model = distributed.unwrap(self.learn.model)  # inside DistributedDataParallel on several processes
        ema_update(self.get_student(model), self.get_teacher(model), self.momentum)
