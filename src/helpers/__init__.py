"""helpers: the small library shared by the chapters of the retinal foundation-model book.

Floors, lowest first (a module imports only from floors below it; tests/test_house.py checks it):
  profiles, env                          — knobs; device, seeds, folders
  table                                  — ImageTable, the contract of every image source; label names
  views, downloads                       — augmentations and SSL views; verified downloads
  synthretina, datasets                  — the embedded world; the registered real datasets
  data                                   — load(source) and fastai DataLoaders
  models, weights                        — encoders and heads; official pretrained weights
  runs                                   — run keys, load-or-train with checkpoints, EMA teacher
  methods/ (simclr, ...)                 — one module per self-supervised method
  evaluation, transfer                   — the shared protocol; fine-tuning recipes
  figures, checks                        — plots; exercise checks
  report, book, student_copies           — run report and book plumbing
Each public function's docstring names the chapter or page that explains it.
"""
__version__ = "0.1.0"
