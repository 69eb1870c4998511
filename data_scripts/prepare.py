#!/usr/bin/env python
"""Prepare a downloaded dataset once: crop to the field of view, pad square, resize, fix the splits.

    python data_scripts/prepare.py retinamnist --size 224 [--root DIR] [--seed 0]

Writes <root>/<name>/prepared-<size>/images.npy (uint8) and labels.csv (with a split column), and
unreadable.txt listing any image file that could not be read. Safe to run twice at once: the second
waits for the first (a lock), and the finished folder is renamed into place whole.
"""
import argparse
import sys

from helpers import datasets
from helpers.env import data_root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--root", default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    args = parser.parse_args(argv)
    try:
        print(datasets.prepare(args.name, args.size, args.root, args.seed))
    except datasets.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a disk problem the library did not foresee: say where, and what to do
        print(f"error: {exc}\ncannot write to {data_root(args.root)}: set RETINA_DATA or pass --root to a "
              "writable folder", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
