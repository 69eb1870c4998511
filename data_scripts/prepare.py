#!/usr/bin/env python
"""Prepare a downloaded dataset once: crop to the field of view, pad square, resize, fix the splits.

    python data_scripts/prepare.py retinamnist --size 224 [--root DIR] [--seed 0]

Writes <root>/<name>/prepared-<size>/images.npy (uint8) and labels.csv (with a split column).
"""
import argparse
import sys

from helpers import datasets


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
