"""The shared evaluation protocol: frozen features once, linear probe and k-NN, metrics fit for the label.

Built in chapter 1 (SimCLR) and reused by every later chapter::

    feats = extract_features(encoder, table, device=device, size=64)        # cached
    res = probe(feats, table, "dr_grade")                                    # linear probe + k-NN
    plot_embedding(feats["test"], {"DR grade": ..., "site": ...})

Metrics: accuracy, balanced accuracy, macro AUROC (one-vs-rest) and, for
ordinal grades, quadratic weighted kappa.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data import ImageTable, dataloaders
from .env import cache_dir
from .models import weights_fingerprint


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, table: ImageTable, device=None, size: int | None = None,
                     bs: int = 128, cache: bool = True, folder: Path | None = None) -> dict:
    """Features of every split ``{"train": [N, D], "valid": ..., "test": ...}``, computed once and cached.

    The cache key is the encoder's weights fingerprint plus the table's name,
    size and image count: a new encoder or new data is recomputed, the same one is read back.
    """
    from tqdm.auto import tqdm
    key = f"{weights_fingerprint(encoder)}-{table.name}-{size}-{len(table)}-{int(table.images[:64].sum()) if table.images is not None else 0}"
    path = (Path(folder) if folder else cache_dir("features")) / f"{key}.npz"
    if cache and path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    device = device or next(encoder.parameters()).device
    encoder = encoder.to(device).eval()
    out = {}
    dls = dataloaders(table, None, bs=bs, size=size, device=device, augment=False, inference=True)
    for split, dl in zip(("train", "valid", "test"), dls.loaders):
        feats = []
        for xb, _ in tqdm(dl, desc=f"features ({split})", leave=False):
            with torch.autocast(device_type=torch.device(device).type, enabled=torch.device(device).type == "cuda"):
                feats.append(encoder(xb).float().cpu())
        out[split] = torch.cat(feats).numpy() if feats else np.zeros((0, 0), np.float32)
    if cache:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **out)
        tmp.replace(path)
    return out


def metrics(y_true: np.ndarray, proba: np.ndarray, ordinal: bool = False) -> dict:
    """Accuracy, balanced accuracy, macro AUROC (one-vs-rest) and, if ``ordinal``, quadratic kappa."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, cohen_kappa_score, roc_auc_score
    pred = proba.argmax(1)
    out = {"accuracy": float(accuracy_score(y_true, pred)),
           "balanced_accuracy": float(balanced_accuracy_score(y_true, pred))}
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
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
    clf.fit(train_x, train_y)
    return metrics(test_y, _full_proba(clf, test_x, n_classes), ordinal)


def knn_probe(train_x, train_y, test_x, test_y, n_classes: int, k: int = 10, ordinal: bool = False) -> dict:
    """k-nearest neighbours with cosine distance on frozen features."""
    from sklearn.neighbors import KNeighborsClassifier
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine", weights="distance")
    knn.fit(train_x, train_y)
    return metrics(test_y, _full_proba(knn, test_x, n_classes), ordinal)


def probe(features: dict, table: ImageTable, target: str, max_iter: int = 1000, k: int = 10) -> dict:
    """Linear probe and k-NN on ``features`` (train -> test) for label column ``target``."""
    ordinal = table.tasks.get(target) == "ordinal"
    y = table.target(target)
    ytr, yte = y[table.split_index("train")], y[table.split_index("test")]
    n = table.n_classes(target)
    return {"linear": linear_probe(features["train"], ytr, features["test"], yte, n, ordinal, max_iter),
            "knn": knn_probe(features["train"], ytr, features["test"], yte, n, k, ordinal)}


def results_table(results: dict):
    """``{encoder name: probe(...)}`` as a tidy DataFrame (one row per encoder and probe)."""
    import pandas as pd
    rows = [{"encoder": name, "probe": kind, **vals} for name, res in results.items() for kind, vals in res.items()]
    return pd.DataFrame(rows)


def embed_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D embedding of features: PCA, or t-SNE (initialised by PCA)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    x = StandardScaler().fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(2, init="pca", random_state=seed, perplexity=min(30, max(5, len(x) // 10))).fit_transform(x)
    return PCA(2, random_state=seed).fit_transform(x)


def plot_embedding(features: np.ndarray, colourings: dict, method: str = "pca", title: str = "", seed: int = 0):
    """Scatter the 2-D embedding of ``features`` once per colouring (``{"DR grade": labels, "site": ...}``)."""
    import matplotlib.pyplot as plt
    xy = embed_2d(features, method, seed)
    fig, axes = plt.subplots(1, len(colourings), figsize=(4.5 * len(colourings), 4), squeeze=False)
    for ax, (name, labels) in zip(axes[0], colourings.items()):
        labels = np.asarray(labels)
        for value in np.unique(labels):
            sel = labels == value
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.7, label=str(value))
        ax.set_title(f"{title} — coloured by {name}" if title else name, fontsize=9)
        ax.legend(fontsize=7, markerscale=2, loc="best")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
