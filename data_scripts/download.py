#!/usr/bin/env python
"""Download an open retinal dataset into the book's data folder (resumable, checksum-verified).

    python data_scripts/download.py --list
    python data_scripts/download.py retinamnist [--root DIR] [--files retinamnist_224.npz]

Default root: $RETINA_DATA or ./data. See the book's "Data and weights" page.
"""
import argparse
import sys

from helpers import datasets, downloads


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help="dataset name (see --list)")
    parser.add_argument("--root", default=None, help="data folder (default $RETINA_DATA or ./data)")
    parser.add_argument("--files", nargs="*", help="download only these files of the dataset")
    parser.add_argument("--list", action="store_true", help="print the registry and exit")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        import pandas as pd
        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            print(datasets.registry_table().to_string(index=False))
        return 0
    try:
        for path in datasets.download(args.name, args.root, files=args.files):
            print(path)
    except (datasets.DatasetError, downloads.DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a read-only or full data folder, a file where a folder should be
        where = exc.filename or args.root or "the data folder"
        print(f"error: cannot write to {where} ({exc.strerror or exc}): set RETINA_DATA or pass --root to a "
              "writable folder", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
