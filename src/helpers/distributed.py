"""Scaling out: one pretraining run on several processes (GPUs, nodes), launched by ``torchrun``.

Explained on the book page "Scaling out" (book/scaling-out.md), which runs
``python -m helpers.pretrain METHOD`` under ``torchrun``. The engine is fastai's
own distributed trainer (``fastai.distributed.DistributedTrainer``, which
wraps the model in PyTorch's ``DistributedDataParallel`` through Hugging Face
Accelerate); this module adds what a self-supervised method needs on top:

- :func:`init`: the process group from torchrun's environment, with a timeout, so
  a dead process ends the job with an error instead of a hang;
- :func:`all_gather_with_grad` and :func:`all_reduce_with_grad`: collectives
  gradients flow back through (SimCLR's negatives from every process, the global
  batch statistics of :class:`GlobalBatchNorm`);
- :func:`sync_batchnorm`: batch norm over the global batch — ``nn.SyncBatchNorm``
  on GPUs, :class:`GlobalBatchNorm` where ``SyncBatchNorm`` cannot run (CPU, gloo);
- :func:`trainer`: the context :func:`helpers.runs.load_or_train` trains in. Each
  process loads ``batch / world`` images of every batch; the profile's
  ``batch_size`` stays the global batch, so a run keeps its key and its recipe.

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op and
a chapter runs exactly as before.
"""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist
from accelerate.utils import DistributedDataParallelKwargs
from fastai.callback.progress import ProgressCallback
from torch import nn
from torch.distributed.nn.functional import all_gather, all_reduce

from .env import get_device, seed_everything

TIMEOUT_S = 600  # a collective that waits this long (a process died or hangs) fails the job


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the only process that writes checkpoints and prints the report."""
    return rank() == 0


def launched() -> bool:
    """True when started by ``torchrun`` (or any launcher that sets ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(timeout_s: float = TIMEOUT_S, backend: str | None = None) -> torch.device:
    """Join the process group torchrun describes; returns this process's device.

    NCCL on GPUs (one per process, ``cuda:LOCAL_RANK``), gloo on CPUs. Every
    collective fails after ``timeout_s`` seconds instead of waiting forever for
    a process that died. Without torchrun, returns the best single device.
    """
    if not launched():
        return get_device()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and backend != "gloo"
    if cuda:
        torch.cuda.set_device(local)
    if not is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"),
                                timeout=datetime.timedelta(seconds=timeout_s))
    return torch.device("cuda", local) if cuda else torch.device("cpu")


def cleanup() -> None:
    """Leave the process group (the end of a torchrun job)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` has it, on every process (e.g. rank 0's decision to load or to train)."""
    if world_size() <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's ``x`` concatenated along dim 0 (rank order), gradients flowing back to each.

    With DistributedDataParallel averaging the gradients over ``W`` processes,
    each minimising its own loss, the update is the gradient of the mean of the
    ``W`` losses — the loss of one process holding the whole batch.
    All processes must pass tensors of the same shape. This is PyTorch's autograd-aware collective
    (``torch.distributed.nn.functional.all_gather``): its backward gives each process the gradient of the sum
    of all processes' losses with respect to its own slice.
    """
    if world_size() <= 1:
        return x
    return torch.cat(all_gather(x))


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over processes, gradients flowing back to each (``x`` itself without a group);
    PyTorch's ``torch.distributed.nn.functional.all_reduce``."""
    if world_size() <= 1:
        return x
    return all_reduce(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, on any device and backend.

    What ``nn.SyncBatchNorm`` does on GPUs, written with two all-reduces (the
    sum, then the sum of squared deviations) that gradients flow through.
    Evaluation, or a single process, is plain ``BatchNorm`` (same state dict,
    so a checkpoint loads into the chapters' models unchanged).
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least a 2-d input [N, C, ...], got {x.dim()}-d")

    def forward(self, x):
        if not (self.training and world_size() > 1):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = x.new_tensor([x.numel() / x.shape[1]])
        total = all_reduce_with_grad(torch.cat([x.sum(dims), local]))
        count = total[-1].detach()
        mean = total[:-1] / count
        var = all_reduce_with_grad(((x - mean.view(shape)) ** 2).sum(dims)) / count
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / max(float(count) - 1, 1.0), alpha=m)
        return y


def sync_batchnorm(model: nn.Module, cuda: bool | None = None) -> nn.Module:
    """Every ``BatchNorm`` of ``model`` normalised over the global batch, keeping its parameters and buffers.

    ``nn.SyncBatchNorm`` when the model trains on a GPU (``cuda``; default: where
    its parameters are); :class:`GlobalBatchNorm` otherwise (PyTorch's
    ``SyncBatchNorm`` runs on GPUs only).
    """
    if cuda is None:
        cuda = any(p.is_cuda for p in model.parameters())
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(m):
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, (GlobalBatchNorm, nn.SyncBatchNorm)):
            g = GlobalBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            if m.affine:
                g.weight, g.bias = m.weight, m.bias  # the same Parameters: an optimiser made before still sees them
            if m.track_running_stats:
                g.running_mean, g.running_var, g.num_batches_tracked = m.running_mean, m.running_var, \
                    m.num_batches_tracked
            g.train(m.training)
            return g
        for name, child in m.named_children():
            setattr(m, name, convert(child))
        return m
    return convert(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (callbacks reach ``model.teacher`` through it)."""
    return getattr(model, "module", model)


_CLASSES = {}


def _classes():
    """fastai's distributed data loader and trainer, adapted (imported only when training on several processes)."""
    if _CLASSES:
        return _CLASSES["dl"], _CLASSES["trainer"]
    try:
        import accelerate  # noqa: F401 (optional: only a multi-GPU run needs accelerate and fastai.distributed)
        from fastai.distributed import DistributedDL, DistributedTrainer  # optional, as above
    except (ImportError, NameError) as e:  # fastai.distributed fails with NameError without accelerate
        raise ImportError("training on several processes uses fastai's DistributedTrainer, which needs Hugging Face "
                          "Accelerate: pip install 'accelerate>=0.21'") from e

    class ShardedDL(DistributedDL):
        """fastai's ``DistributedDL`` with two changes: each process takes every ``world``-th item of rank 0's
        order (so the processes' k-th batches together are exactly one process's k-th batch of ``bs`` items),
        and the order is broadcast on the CPU under gloo (fastai's version assumes CUDA)."""

        def __init__(self, dl, rank=None, world_size=None, device=None):
            w = world_size or dist.get_world_size()
            if dl.bs % w:
                raise ValueError(f"the batch of {dl.bs} does not split over {w} processes: choose a batch_size "
                                 f"that is a multiple of the number of processes")
            per = dl.new(bs=dl.bs // w)
            per.rng = dl.rng  # rank 0's seeded shuffle
            super().__init__(per, rank, w, device)

        def _broadcast(self, t, rank):
            dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor(t, dtype=torch.long, device=dev)
            dist.broadcast(t, rank)
            return t.cpu().tolist()

        def get_idxs(self):
            idxs = self._broadcast(list(self.dl.get_idxs()), 0)
            self.n = len(idxs)
            self.n_padded = -(-self.n // self.world_size) * self.world_size
            idxs += (idxs * (self.n_padded // max(self.n, 1)))[:self.n_padded - self.n]
            return idxs[self.rank::self.world_size]

    class Trainer(DistributedTrainer):
        """fastai's ``DistributedTrainer`` with the data loaders above."""

        def _wrap_dl(self, dl):
            return dl if isinstance(dl, DistributedDL) else ShardedDL(dl, device=self.learn.model.device)

    _CLASSES.update(dl=ShardedDL, trainer=Trainer)
    return ShardedDL, Trainer


@contextlib.contextmanager
def trainer(learn, sync_bn: bool = True):
    """Train ``learn`` on every process of the group inside this context (nothing changes without one).

    The model is wrapped in ``DistributedDataParallel`` (by fastai and
    Accelerate), its batch norms see the global batch (``sync_bn``), and each
    process loads its share of every batch and draws its own views (its
    generators are seeded with the run's seed + rank). Gradients are averaged over the
    processes, so each step equals one step of a single process on the whole
    batch (``tests/test_distributed.py`` checks it). :func:`helpers.runs.load_or_train`
    enters it for you.
    """
    if world_size() <= 1:
        yield learn
        return
    _, Trainer = _classes()
    # where training runs: the data's device (fastai moves the model there when fit starts)
    dev = learn.dls.device if learn.dls.device is not None else next(learn.model.parameters()).device
    cuda = torch.device(dev).type == "cuda"
    if sync_bn:
        if learn.opt is None:  # the optimiser first: fastai spares batch-norm weights its weight decay by their type
            learn.create_opt()
        learn.model = sync_batchnorm(learn.model, cuda)
    # same initial weights everywhere (DistributedDataParallel copies rank 0's), but each process its own views:
    # its generators continue from the run's seed + rank
    seed_everything(torch.initial_seed() + rank())
    # static_graph: the same parameters are used every step, some of them never (MAE leaves the ViT's fc_norm out)
    cb = Trainer(sync_bn=False, cpu=not cuda,
                 kwargs_handlers=[DistributedDataParallelKwargs(static_graph=True)])
    learn.add_cb(cb)
    bar = rank() > 0 and hasattr(learn, "progress")
    if bar:
        learn.remove_cb(ProgressCallback)
    try:
        yield learn
    finally:
        learn.remove_cb(cb)
        if bar:
            learn.add_cb(ProgressCallback())
