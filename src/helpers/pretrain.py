"""Pretrain a chapter's encoder outside the notebook, on one GPU or many: ``python -m helpers.pretrain METHOD``.

Explained on the book page "Scaling out" (book/scaling-out.md)::

    python -m helpers.pretrain simclr --profile full                           # one process (one GPU)
    torchrun --nproc_per_node 8 -m helpers.pretrain dino --profile full        # one node, 8 GPUs

It builds the table, encoder and Learner the chapter builds from the same
profile knobs (through the chapter's own recipe, ``main_run`` of
:mod:`helpers.chapters.ch01` (SimCLR), :mod:`~helpers.chapters.ch02` (DINO) or :mod:`~helpers.chapters.ch03` (MAE))
and trains through :func:`helpers.runs.load_or_train`, so it writes the very
checkpoint (same run key, rank 0 alone, atomically) that the chapter then loads
instead of training. Under ``torchrun`` each process joins the group with a
timeout (:func:`helpers.distributed.init`), takes its share of every batch —
the profile's ``batch_size`` stays the global batch — and draws its own views.
"""
from __future__ import annotations

import argparse
import sys

from . import chapters, distributed, env, profiles, reference

METHODS = tuple(chapters.PRETRAINING)


def _table(P, size: int, seed: int, data_root=None):
    """The chapter's table (rank 0 first: it downloads or generates, the others then read its cache)."""
    load = lambda: chapters.chapter_table(P, size, seed, data_root)  # noqa: E731
    table = load() if distributed.is_main() else None
    distributed.barrier()
    return table if table is not None else load()


def pretrain(method: str, profile: str | None = "full", seed: int = 0, seeds=None, data_root=None,
             epochs: int | None = None, attention: bool = False, device=None) -> dict:
    """Train (or find saved) the chapter's main pretraining runs; ``{seed: history}``.

    ``seed`` is the notebook's ``SEED`` (the runs use ``SEED + s`` for ``s`` in the profile's ``seeds``, as the
    chapter does); ``seeds`` picks some of those run seeds. ``epochs`` overrides the profile (a quick try: the
    chapter loads only runs of the profile's length). ``attention`` also trains chapter 2's attention ViT.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    P = profiles.load(profile)
    K = P[method]
    device = device or env.get_device()
    main = distributed.is_main()
    if main:
        P.show(method)
        print(f"device: {env.describe_device(device)}; processes: {distributed.world_size()}; "
              f"global batch {K['batch_size']} = {K['batch_size'] // distributed.world_size()} per process")
    code = reference.recipe_hash(method) if P.name == reference.PROFILE else None  # the code that trains it
    table = _table(P, K["image_size"], seed, data_root)
    run_seeds = [seed + s for s in K["seeds"]] if seeds is None else list(seeds)
    out = {}
    recipe = chapters.recipe(method)  # the chapter's module: the notebook trains through the same main_run
    for s in run_seeds:
        model, hist = recipe.main_run(P, table, s, device, epochs=epochs, bar=main)
        if attention and method == "dino" and s == seed:  # chapter 2 trains its attention ViT once, first seed
            recipe.attention_run(P, table, s, device, epochs=epochs, bar=main)
        out[s] = hist
        if main:
            what = "found saved" if hist["loaded"] else f"trained in {hist['seconds']:.0f} s and saved"
            print(f"{method} seed {s}: {what}; the chapter loads it unchanged")
        if main and P.name == reference.PROFILE and epochs is None:  # the book loads this run: ship it
            command = " ".join(["python -m helpers.pretrain", method, "--profile", P.name] +
                               (["--seed", str(seed)] if seed else []))
            path = reference.ship(method, model, hist, K, s, command, data=table.fingerprint(),
                                  code_hash=code)
            print(f"shipped the reference run: {path} ({reference.describe(method)})")
    return out


def _record(fn):
    """torchrun's error recorder: a failed process's traceback appears in torchrun's summary."""
    try:
        from torch.distributed.elastic.multiprocessing.errors import record  # optional: absent in some torch builds
        return record(fn)
    except ImportError:  # pragma: no cover
        return fn


@_record
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.pretrain", description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=METHODS)
    ap.add_argument("--profile", default="full", help="the profile whose knobs the chapter uses (default: full)")
    ap.add_argument("--seed", type=int, default=0, help="the notebook's SEED (default 0)")
    ap.add_argument("--seeds", type=int, nargs="+", help="train only these run seeds (default: the profile's)")
    ap.add_argument("--data-root", default=None, help="the notebook's DATA_ROOT (default: $RETINA_DATA or ./data)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="override the profile's epochs (a quick try; the chapter loads only the profile's)")
    ap.add_argument("--attention", action="store_true", help="dino: also train chapter 2's attention ViT")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds a process waits for the others before the job fails (default 600)")
    a = ap.parse_args(argv)
    device = distributed.init(**({"timeout_s": a.timeout} if a.timeout else {}))
    try:
        pretrain(a.method, a.profile, a.seed, a.seeds, a.data_root, a.epochs, a.attention, device)
    except Exception as e:
        if distributed.world_size() > 1 and isinstance(e, RuntimeError):
            print(f"rank {distributed.rank()}: stopped — another process of this job failed or stopped answering "
                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). torchrun's summary names the "
                  f"first failure.", file=sys.stderr, flush=True)
        raise
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
