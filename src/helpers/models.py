"""Encoders for every chapter: any timm backbone, randomly initialised or with pretrained weights.

Explained in chapter 1 (SimCLR), which compares the same encoder randomly
initialised, ImageNet-initialised (gpu profile) and self-supervised.
"""
from __future__ import annotations

import torch


def create_encoder(arch: str, init: str = "random", token: str | None = None, **timm_kwargs):
    """``(encoder, feature_dim)``: a timm model returning pooled features (``num_classes=0``).

    ``init`` is ``"random"`` or a name known to :mod:`helpers.weights`
    (``"imagenet"`` picks the ImageNet weights of ``arch``: resnet50 or a ViT-B/16).
    """
    import timm
    if init == "random":
        model = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
    else:
        from .weights import WEIGHTS, pretrained_encoder
        name = init
        if init == "imagenet":
            match = [w.name for w in WEIGHTS.values() if w.host == "timm" and w.arch == arch]
            if not match:
                raise ValueError(f"no ImageNet weights registered for {arch!r}; "
                                 f"registered: {[w.arch for w in WEIGHTS.values() if w.host == 'timm']}")
            name = match[0]
        model = pretrained_encoder(name, token=token)
    return model, int(model.num_features)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (keys the feature cache of chapter 1's evaluation protocol)."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes()[:4096])
        h.update(str(float(v.detach().float().sum())).encode())
    return h.hexdigest()[:16]
