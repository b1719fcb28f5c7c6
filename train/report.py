"""Regenerate the Markdown table and plots of a results folder: `python -m train.report results/mnist`.

Reads every run record (``*.json`` written by the training scripts) in the folder and writes
``table.md`` (headline numbers, the paper's beside ours, ratios against the baseline variant
measured in the same set of runs) and ``curves.png`` (test NFE and test accuracy per epoch).
"""

from __future__ import annotations

import argparse
import sys

from train import _cli, _results


def main(argv: list[str] | None = None) -> int:
    parser = _cli.ArgumentParser(prog="python -m train.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="folder holding the run records (*.json), e.g. results/mnist")
    parser.add_argument("--title", default=None, help="heading of table.md (default: the folder's name)")
    parser.add_argument("--order", default=None,
                        help="comma-separated model names giving the row order (default: the script's "
                             "registry order when known, else alphabetical)")
    args = parser.parse_args(argv)
    order = args.order.split(",") if args.order else _default_order()
    try:
        md, png = _results.write_report(args.folder, order=order, title=args.title)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return 0


def _default_order() -> list[str]:
    # each training script lists its variants in its own order via model_names()
    import importlib

    order: list[str] = []
    for script in ("train.mnist", "train.cifar"):
        try:
            module = importlib.import_module(script)
        except ModuleNotFoundError as e:
            if e.name != script:
                raise
            continue
        names = getattr(module, "model_names", None)  # optional: a script may not list its variants
        if names is not None:
            order += [m for m in names() if m not in order]
    return order


if __name__ == "__main__":
    sys.exit(main())
