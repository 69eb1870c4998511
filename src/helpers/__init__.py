"""helpers: the small library shared by the chapters of the retinal foundation-model book.

Layers, lowest first (no module imports one above it):
  profiles, env                      — knobs, device, seeds, folders
  data, synthretina, datasets, ...   — images and labels from every source
  simclr, ...                        — one module per method
  evaluation, checks                 — the shared evaluation protocol, exercise checks
  report, book, exercises            — run report and book plumbing
Each public function's docstring names the chapter or page that explains it.
"""
__version__ = "0.1.0"
