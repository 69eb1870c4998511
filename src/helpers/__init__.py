"""helpers: the small library shared by the chapters of the retinal foundation-model book.

Floors, lowest first (a module imports only from floors below it; tests/test_house.py checks it):
  knobs, profiles, env                   — read-only knob groups; the profiles; device, seeds, folders
  table                                  — ImageTable, the contract of every image source; label names
  views, downloads                       — augmentations and SSL views; verified downloads
  synthretina, layouts, datasets         — the embedded world; archive readers; the registered real datasets
  data                                   — load(source) and fastai DataLoaders
  models, weights                        — encoders and heads; official pretrained weights
  progress, runs                         — fastai's epoch table folded; run keys, load-or-train, EMA teacher
  methods/ (simclr, ...)                 — one module per self-supervised method
  evaluation, frechet, transfer          — the shared protocol; Fréchet distances; fine-tuning recipes
  figures, checks                        — plots; exercise checks
  report, timings                        — run report, measured times
  chapters/ (ch01, ...)                  — each chapter's recipes, run registry and setup
(The book runner and the student-copy tool are tooling, not library: tools/bookrunner.py, tools/student_copies.py.)
Each public function's docstring names the chapter or page that explains it.
"""
import warnings as _warnings

# fastai's layers.py applies torch.jit.script at import, which torch >= 2.10 flags as deprecated: a warning
# about fastai's internals, not the reader's code, so it is silenced here, for that message only.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"
