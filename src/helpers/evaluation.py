"""The shared evaluation protocol: frozen features once, linear probe and k-NN, metrics fit for the label.

Built in chapter 1 (SimCLR) and reused by every later chapter::

    feats = extract_features(encoder, table, device=device, size=64)        # cached
    res = probe(feats, table, "dr_grade")                                    # linear probe + k-NN
    df = protocol({"SimCLR": {0: f0, 1: f1, 2: f2}, "random": {...}}, table,
                  tasks=["dr_grade", "hr_grade", "glaucoma", "amd", "site_id"], fractions=(0.01, 0.1, 1.0))
    paired_gain(df, "SimCLR", "random")                                      # mean, sd, 95 % interval over seeds

Metrics: accuracy, balanced accuracy, macro AUROC (one-vs-rest) and, for
ordinal grades, quadratic weighted kappa.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .data import dataloaders
from .env import atomic_write, cache_dir, lock
from .runs import array_fingerprint, cached_json, run_key, weights_fingerprint
from .table import ImageTable


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, table: ImageTable, device=None, size: int | None = None,
                     bs: int = 128, cache: bool = True, folder: Path | None = None) -> dict:
    """Features of every split ``{"train": [N, D], "valid": ..., "test": ...}``, computed once and cached.

    The cache key is a hash of every weight of the encoder, of every image and
    label of the table (``table.fingerprint()``) and of ``size``: a new encoder
    or changed data is recomputed, the same one is read back. Safe across
    processes (a lock, then an atomic rename).
    """
    key = f"{weights_fingerprint(encoder)}-{table.fingerprint()}-{size}"
    path = (Path(folder) if folder else cache_dir("features")) / f"{key}.npz"
    if not cache:
        return _extract(encoder, table, device, size, bs, tqdm)
    with lock(path):
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        out = _extract(encoder, table, device, size, bs, tqdm)
        atomic_write(path, lambda tmp: _savez(tmp, out))
    return out


def _savez(path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _extract(encoder, table, device, size, bs, tqdm) -> dict:
    device = device or next(encoder.parameters()).device
    was_training = encoder.training
    encoder = encoder.to(device).eval()
    out = {}
    dls = dataloaders(table, None, bs=bs, size=size, device=device, augment=False, inference=True)
    for split, dl in zip(("train", "valid", "test"), dls.loaders):
        feats = []
        for xb, _ in tqdm(dl, desc=f"features ({split})", leave=False, disable=len(dl) < 20):
            with torch.autocast(device_type=torch.device(device).type, enabled=torch.device(device).type == "cuda"):
                feats.append(encoder(xb).float().cpu())
        out[split] = torch.cat(feats).numpy() if feats else np.zeros((0, 0), np.float32)
    encoder.train(was_training)
    return out


def metrics(y_true: np.ndarray, proba: np.ndarray, ordinal: bool = False) -> dict:
    """Accuracy, balanced accuracy, Cohen's κ, macro F1, macro AUROC (one-vs-rest); with two classes sensitivity and
    specificity (chapter 6 reports the hypertensive-retinopathy study's metrics); if ``ordinal``, quadratic κ."""
    pred = proba.argmax(1)
    out = {"accuracy": float(accuracy_score(y_true, pred)),
           "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
           "kappa": float(cohen_kappa_score(y_true, pred)) if len(np.unique(np.r_[y_true, pred])) > 1 else 0.0,
           "f1": float(f1_score(y_true, pred, average="macro", labels=np.arange(proba.shape[1]), zero_division=0))}
    if proba.shape[1] == 2:
        pos, neg = y_true == 1, y_true == 0
        out["sensitivity"] = float((pred[pos] == 1).mean()) if pos.any() else float("nan")
        out["specificity"] = float((pred[neg] == 0).mean()) if neg.any() else float("nan")
    present = np.unique(y_true)
    try:
        if proba.shape[1] == 2:
            out["auroc"] = float(roc_auc_score(y_true, proba[:, 1]))
        elif len(present) > 1:
            p = proba[:, present] / proba[:, present].sum(1, keepdims=True)
            out["auroc"] = float(roc_auc_score(y_true, p, multi_class="ovr", average="macro", labels=present)) \
                if len(present) > 2 else float(roc_auc_score(y_true == present[1], p[:, 1]))
        else:
            out["auroc"] = float("nan")
    except ValueError:
        out["auroc"] = float("nan")
    if ordinal:
        out["quadratic_kappa"] = float(cohen_kappa_score(y_true, pred, weights="quadratic"))
    return out


def _full_proba(model, x, n_classes):
    p = np.zeros((len(x), n_classes))
    p[:, model.classes_] = model.predict_proba(x)
    return p


def linear_probe(train_x, train_y, test_x, test_y, n_classes: int, ordinal: bool = False,
                 max_iter: int = 1000, C: float = 1.0) -> dict:
    """Logistic regression on standardised frozen features; metrics on the test features."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
    with threadpool_limits(1):  # problems this small run ~10x faster on one BLAS thread (measured)
        clf.fit(train_x, train_y)
        return metrics(test_y, _full_proba(clf, test_x, n_classes), ordinal)


def knn_probe(train_x, train_y, test_x, test_y, n_classes: int, k: int = 10, ordinal: bool = False) -> dict:
    """k-nearest neighbours with cosine distance on frozen features."""
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine", weights="distance")
    with threadpool_limits(1):
        knn.fit(train_x, train_y)
        return metrics(test_y, _full_proba(knn, test_x, n_classes), ordinal)


def probe(features: dict, table: ImageTable, target, max_iter: int = 1000, k: int = 10) -> dict:
    """Linear probe and k-NN on ``features`` (train -> test) for label column ``target``.

    ``target`` may be a list of columns — the 0/1 columns of a multi-label task (kind ``multi``, e.g. a
    CSV read by ``helpers.byo.from_csv``) or several tasks: then one probe per column, each column's
    metrics under ``per_label`` and their mean (AUROC, balanced accuracy, ...) at the top level. A 0/1
    label with a single value in the training split cannot be probed: its metrics are NaN, with a warning.
    """
    if not isinstance(target, str):
        cols = list(target)
        per = {c: probe(features, table, c, max_iter, k) for c in cols}
        out = {}
        for kind in ("linear", "knn"):
            by = {c: per[c][kind] for c in cols}
            common = [m for m in by[cols[0]] if all(m in by[c] for c in cols)]
            with np.errstate(all="ignore"):
                out[kind] = {m: float(np.nanmean([by[c][m] for c in cols])) if any(
                    np.isfinite(by[c][m]) for c in cols) else float("nan") for m in common}
            out[kind]["per_label"] = by
        return out
    kind = table.tasks.get(target)
    y = table.labels[target].to_numpy().astype(np.int64) if kind == "multi" else table.target(target)
    ytr, yte = y[table.split_index("train")], y[table.split_index("test")]
    n = 2 if kind == "multi" else table.n_classes(target)
    if kind == "multi" and len(np.unique(ytr)) < 2:
        warnings.warn(f"{table.name}: label {target!r} has a single value in the training split; it cannot be "
                      "probed (its metrics are NaN)", stacklevel=2)
        nan = {m: float("nan") for m in ("accuracy", "balanced_accuracy", "kappa", "f1", "sensitivity",
                                         "specificity", "auroc")}
        return {"linear": dict(nan), "knn": dict(nan)}
    ordinal = kind == "ordinal"
    return {"linear": linear_probe(features["train"], ytr, features["test"], yte, n, ordinal, max_iter),
            "knn": knn_probe(features["train"], ytr, features["test"], yte, n, k, ordinal)}


def cached_protocol(name: str, by_seed: dict, table: ImageTable, knobs, tasks, fractions=(1.0,),
                    probes=("linear", "knn")) -> pd.DataFrame:
    """:func:`protocol` for one encoder's features over seeds, cached under a hash of every feature value (chapters
    1–4 run it once per encoder; a second run of a chapter reads it back). ``knobs`` is the profile's ``protocol``
    group; the cache is keyed by the features, not the name, which is set on the rows afterwards."""
    key = run_key(features={s: array_fingerprint(f) for s, f in by_seed.items()}, data=table.fingerprint(),
                  protocol=dict(knobs), tasks=list(tasks), fractions=list(fractions), probes=list(probes))
    rows = cached_json("protocol", key, lambda: protocol(
        {name: by_seed}, table, tasks, fractions, probes, max_iter=knobs["max_iter"], k=knobs["knn_k"]).to_dict("records"))
    return pd.DataFrame(rows).assign(encoder=name)


def budget_curve(name: str, histories: dict, encoder_at, table: ImageTable, knobs, tasks, steps_per_epoch: int,
                 probes=("linear",), device=None, size: int | None = None) -> pd.DataFrame:
    """The protocol on every checkpoint a run saved along the way (``history["checkpoints"]``: ``{epoch: path}``),
    one row per (seed, epoch, task, probe) with the optimiser ``step`` — the metric-vs-pretraining-budget curve of
    chapters 1 and 2, cached under the checkpoints' paths. ``encoder_at(path)`` loads one checkpoint's encoder."""
    def rows():
        out = []
        for seed, hist in histories.items():
            for epoch, path in sorted(hist["checkpoints"].items()):
                f = extract_features(encoder_at(path), table, device=device, size=size)
                df = protocol({name: {seed: f}}, table, tasks, (1.0,), probes, max_iter=knobs["max_iter"],
                              k=knobs["knn_k"])
                out += [dict(r, epoch=int(epoch), step=int(epoch) * steps_per_epoch) for r in df.to_dict("records")]
        return out
    key = run_key(ckpts={s: sorted(h["checkpoints"].values()) for s, h in histories.items()}, name=name,
                  data=table.fingerprint(), protocol=dict(knobs), tasks=list(tasks), probes=list(probes))
    return pd.DataFrame(cached_json("budget", key, rows))


def label_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions of a stratified ``fraction`` of the labels ``y`` (at least one per class), drawn with ``seed``.

    The label-efficiency curves of chapter 1 use it: 1 %, 10 % and 100 % of the training labels.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        keep.append(rng.choice(idx, max(1, int(round(fraction * len(idx)))), replace=False))
    return np.sort(np.concatenate(keep))


def shots_subset(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Positions of ``k`` labels per class (every one of a class with fewer), drawn with ``seed``: chapter 5's
    few-shot probes (1, 5, 10 labelled images per class)."""
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(y == c), min(int(k), int((y == c).sum())), replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(keep))


def protocol(features: dict, table: ImageTable, tasks, fractions=(1.0,), probes=("linear", "knn"),
             max_iter: int = 1000, k: int = 10):
    """The shared protocol over encoders, seeds, tasks and label fractions, as one tidy DataFrame.

    ``features`` maps an encoder name to ``{seed: features}`` (the output of
    :func:`extract_features` for the encoder pretrained, or initialised, with
    that seed); the label subset of each fraction is drawn with the same seed.
    One row per (encoder, seed, task, fraction, probe) with every metric.
    """
    tr, te = table.split_index("train"), table.split_index("test")
    rows = []
    for name, by_seed in features.items():
        for seed, f in by_seed.items():
            for task in tasks:
                y = table.target(task)
                ordinal, n = table.tasks.get(task) == "ordinal", table.n_classes(task)
                for frac in fractions:
                    sub = label_subset(y[tr], frac, seed)
                    xtr, ytr = f["train"][sub], y[tr][sub]
                    for kind in probes:
                        if kind == "linear":
                            m = linear_probe(xtr, ytr, f["test"], y[te], n, ordinal, max_iter)
                        elif kind == "knn":
                            m = knn_probe(xtr, ytr, f["test"], y[te], n, k, ordinal)
                        else:
                            raise ValueError(f"unknown probe {kind!r}; probes: linear, knn")
                        rows.append({"encoder": name, "seed": seed, "task": task, "fraction": frac,
                                     "probe": kind, **m})
    return pd.DataFrame(rows)


def _probe_predictions(features: dict, ytr, max_iter: int, k: int | None = None) -> np.ndarray:
    """Test-set predictions of a linear probe (``k=None``) or of the k-NN probe of :func:`knn_probe`."""
    if k:
        knn = KNeighborsClassifier(n_neighbors=min(k, len(ytr)), metric="cosine", weights="distance")
        return knn.fit(features["train"], ytr).predict(features["test"])
    with threadpool_limits(1):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)).fit(features["train"], ytr)
        return clf.predict(features["test"])


def bootstrap_difference(features_a: dict, features_b: dict, table: ImageTable, tasks, n_boot: int = 1000,
                         seed: int = 0, max_iter: int = 1000, k: int | None = None):
    """Linear-probe balanced accuracy of encoder a minus encoder b per task, with a 95 % bootstrap interval.

    ``k`` scores the k-NN probe instead (chapter 2's reference run).
    For comparisons made with a single pretraining seed (chapter 1's colour and
    temperature ablations): both probes are fitted once on all training labels,
    then the *same* resamples of the test set score both, so the interval holds
    the test set's sampling noise (not the seed's — say so when you use it).
    With several tasks a last row ``task="mean"`` gives the mean over them.
    """
    tr, te = table.split_index("train"), table.split_index("test")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(te)))
    np.add.at(counts, (np.repeat(np.arange(n_boot), len(te)), rng.integers(0, len(te), n_boot * len(te))), 1)
    rows, diffs = [], []
    for task in tasks:
        y = table.target(task)
        ytr, yte = y[tr], y[te]
        onehot = np.eye(table.n_classes(task))[yte]
        present = onehot.sum(0) > 0

        def bacc(pred):
            correct = (pred == yte)[:, None] * onehot
            with np.errstate(invalid="ignore", divide="ignore"):  # a class absent from a resample (or the test set)
                per_class = (counts @ correct) / (counts @ onehot)
                whole = correct.sum(0) / onehot.sum(0)
            return np.nanmean(per_class[:, present], axis=1), float(np.mean(whole[present]))
        (boot_a, a), (boot_b, b) = bacc(_probe_predictions(features_a, ytr, max_iter, k)), \
            bacc(_probe_predictions(features_b, ytr, max_iter, k))
        d = boot_a - boot_b
        diffs.append(d)
        rows.append({"task": task, "a": a, "b": b, "diff": a - b, "lo": float(np.percentile(d, 2.5)),
                     "hi": float(np.percentile(d, 97.5))})
    if len(rows) > 1:  # the mean over tasks, on the same resamples
        d = np.mean(diffs, axis=0)
        rows.append({"task": "mean", "a": float(np.mean([r["a"] for r in rows])),
                     "b": float(np.mean([r["b"] for r in rows])), "diff": float(np.mean([r["diff"] for r in rows])),
                     "lo": float(np.percentile(d, 2.5)), "hi": float(np.percentile(d, 97.5))})
    return pd.DataFrame(rows)


def interval(values, confidence: float = 0.95) -> dict:
    """Mean, standard deviation and a Student-t confidence interval of the mean of ``values`` (over seeds)."""
    v = np.asarray(values, float)
    mean, n = float(v.mean()), len(v)
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n": n, "lo": mean - half, "hi": mean + half}


def seeds_to_decide(iv: dict, threshold: float, confidence: float = 0.95, most: int = 10_000):
    """How many seeds an interval from :func:`interval` would need to clear ``threshold`` on one side, if the mean
    and the standard deviation stayed as measured: the smallest n with t(n − 1) · sd / √n < |mean − threshold|.
    ``None`` where the mean sits on the threshold or more than ``most`` seeds would be needed (chapter 6)."""
    gap, sd = abs(iv["mean"] - threshold), iv["sd"]
    if not np.isfinite(sd) or gap == 0:
        return None
    for n in range(2, most + 1):
        if stats.t.ppf((1 + confidence) / 2, n - 1) * sd / np.sqrt(n) < gap:
            return n
    return None


def summarise(df, metric: str = "balanced_accuracy", by=("encoder", "task", "fraction", "probe")):
    """Mean ± sd and the 95 % interval of ``metric`` over seeds, one row per ``by`` group."""
    rows = [{**dict(zip(by, key if isinstance(key, tuple) else (key,))), **interval(g[metric])}
            for key, g in df.groupby(list(by), sort=False)]
    return pd.DataFrame(rows)


def paired_gain(df, a: str, b: str, metric: str = "balanced_accuracy", by=("task", "fraction", "probe")):
    """``a`` minus ``b`` seed by seed (same seed = same label subset), with its mean, sd and 95 % interval."""
    wide = df.pivot_table(index=list(by) + ["seed"], columns="encoder", values=metric).reset_index()
    wide["gain"] = wide[a] - wide[b]
    rows = [{**dict(zip(by, key)), **interval(g["gain"])} for key, g in wide.groupby(list(by), sort=False)]
    return pd.DataFrame(rows)


def embed_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D embedding of features: PCA, or t-SNE (initialised by PCA)."""
    x = StandardScaler().fit_transform(x)
    if method == "tsne":
        return TSNE(2, init="pca", random_state=seed, perplexity=min(30, max(5, len(x) // 10))).fit_transform(x)
    return PCA(2, random_state=seed).fit_transform(x)


def monitor_set(table: ImageTable, target: str, n: int = 500, size: int | None = None) -> dict:
    """A small labelled set to watch a self-supervised run with: the first ``n`` training images (the k-NN
    memory) and the first ``n`` validation images (the queries), normalised as the probes see them, with their
    ``target`` labels. Chapter 2 passes it to :func:`collapse_diagnostics` after every DINO epoch.
    """
    dls = dataloaders(table, target, bs=n, size=size, device="cpu", augment=False, inference=True,
                      splits=("train", "valid"))
    out = {"n_classes": table.n_classes(target)}
    for split, dl in zip(("train", "valid"), dls.loaders):
        out[f"x_{split}"], out[f"y_{split}"] = dl.one_batch()
    return out


@torch.no_grad()
def collapse_diagnostics(encoder: torch.nn.Module, monitor: dict, k: int = 10, embed=None) -> dict:
    """Two signs of collapse in an encoder's features (chapter 2, after every DINO epoch), on a :func:`monitor_set`:

    - ``embedding_std``: the spread of the L2-normalised embeddings ``embed(features)`` (the features themselves
      without ``embed``; DINO passes its head's bottleneck) across images, averaged over dimensions and
      scaled by √D — about 1 when they fill the sphere, 0 when every image maps to the same point;
    - ``knn``: k-NN balanced accuracy (cosine, ``k`` neighbours) of the validation images against the training
      ones — what the DINO authors watch during training instead of the loss.
    """
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    f_tr = encoder(monitor["x_train"].to(dev)).float().cpu()
    f_va = encoder(monitor["x_valid"].to(dev)).float()
    z = torch.nn.functional.normalize((embed(f_va) if embed else f_va).float().cpu(), dim=1)
    f_va = f_va.cpu()
    encoder.train(was)
    std = float(z.std(0).mean() * z.shape[1] ** 0.5)
    knn = knn_probe(f_tr.numpy(), monitor["y_train"].numpy(), f_va.numpy(), monitor["y_valid"].numpy(),
                    monitor["n_classes"], k=k)
    return {"embedding_std": std, "knn": knn["balanced_accuracy"]}
