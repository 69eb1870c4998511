"""Each method's diagram, as data for :func:`helpers.figures.method_diagram` (chapters 1–6 draw them).

A box is ``key: (column, row, text)``; an arrow ``(from, to, kind[, label])``, where ``kind`` says what flows
along it: ``grad`` (data forward, gradients back), ``data`` (data only), ``stop`` (a stop-gradient) or ``ema``
(weights copied as a moving average). The tests draw every diagram and check that no box, label or arrow runs
into another, that every loss has its inputs, and that DINO's shows its EMA and its stop-gradient.
"""

SIMCLR = dict(
    boxes={"x": (0, 1, "fundus x"),
           "v1": (1, 0, "view 1"), "v2": (1, 2, "view 2"),
           "f1": (2, 0, "encoder f"), "f2": (2, 2, "encoder f (the same weights)"),
           "h1": (3, 0, "h₁ (kept)"), "h2": (3, 2, "h₂ (kept)"),
           "z1": (4, 0, "z₁"), "z2": (4, 2, "z₂"),
           "loss": (5, 1, "NT-Xent(z₁, z₂): the batch's other views are negatives")},
    arrows=[("x", "v1", "data", "t ~ T"), ("x", "v2", "data", "t′ ~ T"), ("v1", "f1", "grad"), ("v2", "f2", "grad"),
            ("f1", "h1", "grad"), ("f2", "h2", "grad"), ("h1", "z1", "grad", "head g"), ("h2", "z2", "grad", "head g"),
            ("z1", "loss", "grad"), ("z2", "loss", "grad")],
    title="SimCLR: two views of one image, one encoder, a head used only by the loss",
    note="after pretraining the head g is dropped: probes and fine-tuning read h = f(x)")

DINO = dict(
    boxes={"x": (0, 1, "fundus x"),
           "cs": (1, 0, "2 global + n local crops"), "ct": (1, 2, "the 2 global crops"),
           "s": (2, 0, "student f_s + head"), "t": (2, 2, "teacher f_t + head"),
           "ps": (3, 0, r"$P_s = \mathrm{softmax}(g_s / \tau_s)$"),
           "pt": (3, 2, r"$P_t = \mathrm{softmax}((g_t - c) / \tau_t)$"),
           "loss": (4, 1, "cross-entropy H(Pt, Ps) over pairs of different crops")},
    arrows=[("x", "cs", "data"), ("x", "ct", "data"), ("cs", "s", "grad"), ("ct", "t", "data"),
            ("s", "ps", "grad"), ("t", "pt", "data", "centre c, sharpen"), ("ps", "loss", "grad"),
            ("pt", "loss", "stop", "stop-grad"), ("s", "t", "ema", "EMA of the weights")],
    title="DINO: a student matches its own moving-average teacher across crops",
    note="only the student is trained; the centre c is a running mean of the teacher's outputs")

MAE = dict(
    boxes={"x": (0, 0, "fundus x"), "p": (1, 0, "patches, shuffled"),
           "vis": (2, 0, "visible: 1 − r of them"), "rem": (2, 1, "removed: r of them"),
           "enc": (3, 0, "ViT encoder (visible patches only)"), "dec": (4, 0, "+ mask tokens, un-shuffle; decoder"),
           "loss": (5, 1, "MSE on the removed patches")},
    arrows=[("x", "p", "data"), ("p", "vis", "data"), ("p", "rem", "data"), ("vis", "enc", "grad"),
            ("enc", "dec", "grad"), ("dec", "loss", "grad"), ("rem", "loss", "data", "targets")],
    title="MAE: encode a quarter of the patches, reconstruct the rest",
    note="the encoder never sees a mask token; the decoder is thrown away after pretraining")

DIFFUSION = dict(
    boxes={"n": (4, 0, r"noise $\epsilon \sim N(0, I)$"),
           "x": (0, 1, "fundus x"), "e": (1, 1, "autoencoder E (trained first, frozen)"),
           "z": (2, 1, "latent z × scale"), "zt": (3, 1, r"$z_t$: z noised to step t"),
           "den": (4, 1, r"denoiser $\epsilon_\theta(z_t, t, y)$"), "loss": (5, 1, r"MSE($\epsilon_\theta$, $\epsilon$)"),
           "zT": (0, 2.2, r"noise $z_T$"), "steps": (1, 2.2, "T → 0 steps (DDPM / DDIM),\n" r"the same $\epsilon_\theta$"),
           "g": (2, 2.2, "guidance\n" r"$\epsilon_u + s(\epsilon_y - \epsilon_u)$"), "d": (3, 2.2, "decoder D"),
           "out": (4, 2.2, "synthetic fundus")},
    arrows=[("x", "e", "data"), ("e", "z", "data"), ("z", "zt", "data"), ("n", "zt", "data", "+ noise"),
            ("zt", "den", "grad"), ("den", "loss", "grad"), ("n", "loss", "data", "target"),
            ("zT", "steps", "data"), ("steps", "g", "data"), ("g", "d", "data"), ("d", "out", "data")],
    title="latent diffusion: train the denoiser on noised latents (top), sample from noise (bottom)",
    note="the denoiser never sees a pixel; at sampling it runs twice per step, with the class y and without")

FLAIR = dict(
    boxes={"img": (0, 0, "fundus image"), "it": (1, 0, "image tower (CNN)"), "ie": (2, 0, "project + L2: image embedding"),
           "rep": (0, 1, "its report"), "tt": (1, 1, "text tower (BERT)"), "te": (2, 1, "project + L2: text embedding"),
           "loss": (4, 0.5, "cosine logits\n" r"$\times\, e^{s}$, symmetric" "\ncross-entropy"),
           "desc": (0, 2.3, "expert descriptions of each class"), "tt2": (1, 2.3, "text tower"),
           "proto": (2, 2.3, "mean: class prototype"), "zs": (4, 2.3, "zero-shot class: nearest prototype")},
    arrows=[("img", "it", "grad"), ("it", "ie", "grad"), ("rep", "tt", "grad"), ("tt", "te", "grad"),
            ("ie", "loss", "grad"), ("te", "loss", "grad"), ("desc", "tt2", "data"), ("tt2", "proto", "data"),
            ("proto", "zs", "data"), ("ie", "zs", "data", "an image's embedding")],
    title="FLAIR: align images with reports (top two rows), classify with described classes (bottom)",
    note="the prototype is the mean of the descriptions' embeddings, not re-normalised (FLAIR's code)")

TRANSFER = dict(
    boxes={"e0": (0, 0, "pretrained encoder (frozen)"), "f0": (1, 0, "features"),
           "p0": (2, 0, "logistic regression (sklearn)"), "lp": (3, 0, "LP: frozen encoder + that head"),
           "e1": (0, 1, "pretrained encoder"), "h1": (1, 1, "random head"), "t1": (2, 1, "fit every layer"),
           "ft": (3, 1, "FT"),
           "e2": (0, 2, "pretrained encoder"), "h2": (1, 2, "the probe's head"), "t2": (2, 2, "fit every layer"),
           "lpft": (3, 2, "LP-FT")},
    arrows=[("e0", "f0", "stop", "no gradient"), ("f0", "p0", "data"), ("p0", "lp", "data"),
            ("e1", "h1", "grad"), ("h1", "t1", "grad"), ("t1", "ft", "grad"),
            ("e2", "h2", "grad"), ("h2", "t2", "grad"), ("t2", "lpft", "grad")],
    title="three ways to adapt one encoder: linear probe, fine-tuning, and the probe's head first",
    note="LP-FT starts from the LP head; evaluated on cameras seen in training (ID) and not (OOD)")

ALL = {"simclr": SIMCLR, "dino": DINO, "mae": MAE, "diffusion": DIFFUSION, "flair": FLAIR, "transfer": TRANSFER}
