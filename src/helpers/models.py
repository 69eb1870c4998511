"""Encoders for every chapter: any timm backbone or the book's CPU-sized CNN; MLP heads.

Explained in chapter 1 (SimCLR), which compares the same encoder randomly
initialised, ImageNet-initialised (gpu profile) and self-supervised. Every
encoder maps ``[B, 3, H, W]`` to pooled features ``[B, encoder.num_features]``.
"""
from __future__ import annotations

import timm
from torch import nn

from .profiles import architecture
from .weights import WEIGHTS, pretrained_encoder


class SmallCNN(nn.Module):
    """A plain CNN sized for a CPU: ``len(widths)`` stride-2 stages of two 3×3 conv-BN-ReLU, then global pooling.

    With the default widths (32, 64, 128, 256) it has 1.2 M parameters and sees
    several times more images per second than a ResNet on two cores — which is
    what self-supervised pretraining needs (chapter 1 measures gain per
    CPU-minute). ``num_features`` is the last width, like a timm model's.
    """

    def __init__(self, widths=(32, 64, 128, 256), in_chans: int = 3):
        super().__init__()
        layers, c = [], in_chans
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


def small_vit(img_size: int = 48, patch_size: int = 6, embed_dim: int = 96, depth: int = 4, num_heads: int = 3,
              **kw):
    """A timm Vision Transformer sized for a CPU (0.45 M parameters at the defaults): 6-px patches, so a 48-px
    fundus is an 8 × 8 grid of tokens plus CLS; ``dynamic_img_size`` lets DINO's smaller local crops through.

    Chapter 2 trains it with DINO to read its CLS attention maps.
    """
    return timm.models.vision_transformer.VisionTransformer(
        img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        num_classes=0, dynamic_img_size=True, **kw)


BOOK_ARCHS = {"small_cnn": lambda **kw: SmallCNN(**kw),
              "small_cnn_narrow": lambda **kw: SmallCNN(widths=(16, 32, 64, 128), **kw),
              "small_vit": small_vit}


class MLPHead(nn.Sequential):
    """Linear -> BatchNorm -> ReLU -> Linear: the projection head of SimCLR (chapter 1) and its successors."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def create_encoder(arch: str, init: str = "random", token: str | None = None, **timm_kwargs):
    """``(encoder, feature_dim)``: a timm model returning pooled features (``num_classes=0``),
    or one of the book's CPU-sized encoders (``"small_cnn"``, ``"small_cnn_narrow"``, ``"small_vit"``).

    ``init`` is ``"random"`` or a name known to :mod:`helpers.weights`
    (``"imagenet"`` picks the ImageNet weights of ``arch``: resnet50 or a ViT-B/16).
    """
    if arch in BOOK_ARCHS:
        if init != "random":
            raise ValueError(f"{arch!r} is one of the book's own encoders: it has no {init!r} weights "
                             "(use init='random')")
        model = BOOK_ARCHS[arch](**timm_kwargs)
        return model, int(model.num_features)

    if init == "random":  # the profile's size overrides win (rehearsal: the same architecture, tiny)
        model = timm.create_model(arch, pretrained=False, num_classes=0, **{**timm_kwargs, **architecture(arch)})
    else:
        name = init
        if init == "imagenet":
            match = [w.name for w in WEIGHTS.values() if w.host == "timm" and w.arch == arch]
            if not match:
                raise ValueError(f"no ImageNet weights registered for {arch!r}; "
                                 f"registered: {[w.arch for w in WEIGHTS.values() if w.host == 'timm']}")
            name = match[0]
        model = pretrained_encoder(name, token=token)
    return model, int(model.num_features)
