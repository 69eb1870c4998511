"""Chapter 2's runs ("DINO on fundus photographs"): DINO from a fresh encoder with its per-epoch collapse watch.

Chapter 2 trains the main runs, the ablations and the attention ViT; chapters 3 and 6 read the main runs back.
"""
from __future__ import annotations

from .. import data, env, evaluation, models, runs
from ..methods import dino
from ..views import FundusViews
from . import chapter_table, code

CODE = ("helpers.methods.dino", "helpers.models:create_encoder", "helpers.models:SmallCNN", "helpers.models:small_vit",
        "helpers.views", "helpers.data:dataloaders", "helpers.runs:EMA", "helpers.runs:ema_update",
        "helpers.runs:cosine_momentum", "helpers.runs:horizon_momentum", "helpers.runs:load_or_train",
        "helpers.evaluation:collapse_diagnostics", "helpers.evaluation:monitor_set", "helpers.chapters.ch02")
RUN_KNOBS = ("lr", "out_dim", "hidden_dim", "bottleneck_dim", "norm_last_layer", "n_local", "global_scale",
             "local_scale", "local_size", "t_student", "t_teacher", "warmup_t_teacher", "warmup_epochs",
             "center_momentum", "momentum", "teacher_horizon", "wd")


def collapse_watch(table, knobs, knn_k: int):
    """Chapter 2's watch, called after every epoch with the teacher: the spread of the head's bottleneck and the
    teacher's k-NN accuracy on a fixed monitor set (saved with the run, so the curves cost nothing to redraw)."""
    monitor = evaluation.monitor_set(table, knobs["monitor_task"], n=knobs["monitor_size"], size=knobs["image_size"])

    def watch(teacher):
        return evaluation.collapse_diagnostics(teacher[0], monitor, k=knn_k, embed=teacher[1].mlp)
    return watch


def pretrain(table, knobs, seed: int, device, knn_k: int, encoder: str | None = None, encoder_kwargs=None,
             epochs: int | None = None, tag: str = "main", save_at=(), bar: bool = True, loss_fn=None, **changes):
    """DINO from a fresh encoder, or the saved run read back: ``(model, history)``.

    ``knobs`` is a profile's ``dino`` group and ``knn_k`` the protocol's k of the collapse watch;
    ``encoder``/``encoder_kwargs``/``epochs`` override the knobs (the attention ViT), ``changes`` override DINO knobs
    (``centring=False`` and the other ablations). ``history["diagnostics"]`` holds the watch, epoch by epoch.
    """
    encoder = knobs["encoder"] if encoder is None else encoder
    encoder_kwargs = knobs["encoder_kwargs"] if encoder_kwargs is None else encoder_kwargs
    epochs = knobs["epochs"] if epochs is None else epochs
    run = {k: knobs[k] for k in RUN_KNOBS}
    run.update({"centring": True, **changes})
    watch = collapse_watch(table, knobs, knn_k)  # before seeding, as chapter 2 builds its monitor set
    env.seed_everything(seed)
    enc, _ = models.create_encoder(encoder, **encoder_kwargs)
    dls = data.dataloaders(table, None, bs=knobs["batch_size"], size=knobs["image_size"], device=device,
                           augment=False, normalize=False, seed=seed)
    views = FundusViews()
    learn = dino.dino_learner(dls, enc, loss_fn=loss_fn, views=views, monitor=watch,
                              **{k: val for k, val in run.items() if k != "lr"})
    key = runs.run_key(chapter="02", tag=tag, seed=seed, encoder=encoder, encoder_kwargs=encoder_kwargs,
                       epochs=epochs, knobs=run, views=repr(views), batch_size=knobs["batch_size"],
                       size=knobs["image_size"], monitor=[knobs["monitor_task"], knobs["monitor_size"], knn_k],
                       data=table.fingerprint(), code=code(CODE))
    keep = lambda l: {"diagnostics": l.dino.epochs}  # noqa: E731  (saved with the run)
    hist = runs.load_or_train(learn, key, epochs, run["lr"], name="dino", save_at=save_at, extra=keep, bar=bar)
    return learn.model, hist


def main_run(P, table, seed: int, device, epochs: int | None = None, bar: bool = True):
    """The chapter's main run for ``seed`` as chapter 2 trains it (``python -m helpers.pretrain dino``)."""
    return pretrain(table, P.dino, seed, device, P.protocol.knn_k, epochs=epochs, save_at=P.dino.save_at, bar=bar)


def attention_run(P, table, seed: int, device, epochs: int | None = None, bar: bool = True):
    """Chapter 2's attention ViT (trained once, with the first seed; ``--attention`` in the shell)."""
    D = P.dino
    return pretrain(table, D, seed, device, P.protocol.knn_k, D.attention_encoder, D.attention_kwargs,
                    D.attention_epochs if epochs is None else epochs, save_at=D.attention_save_at, bar=bar,
                    local_size=D.attention_local_size)


def encoder(P, seed: int, device, data_seed: int = 0, root=None):
    """Chapter 2's DINO teacher backbone for ``seed``, read back (trained only if chapter 2 never ran here)."""
    model, _ = main_run(P, chapter_table(P, P.dino.image_size, data_seed, root), seed, device, bar=False)
    return model.teacher[0].eval()
