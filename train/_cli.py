"""What the training scripts share on the command line: the parser whose errors are one line, the
argparse value types (each names what it expected and what came), ``--device`` checking, and
:func:`guard`, which turns a :class:`train._errors.UserError` into one ``error:`` line and exit 2."""

from __future__ import annotations

import argparse
import math
import re
import sys
import traceback
from typing import Callable, Iterable

from train._errors import UserError

EXIT_USER_ERROR = 2  # argparse's own code for a bad command line; a bad file or folder is the same kind
EXIT_FAILED = 1


def one_line(text: object) -> str:
    """``text`` with its line breaks and runs of blanks folded into single spaces."""
    return " ".join(str(text).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but an error is a single stderr line (the usage block is left to
    ``--help``), so every script's errors read alike and a log shows one line per failure."""

    # argparse takes "-1e-5" for an option (its pattern knows no exponent) and answers "expected one
    # argument"; read as a number, it gets the option's own message instead
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-inf$|^-nan$", re.IGNORECASE)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error as well as its one-line message")


def wants_debug(argv: Iterable[str] | None) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else list(argv))


def guard(body: Callable[[], int], *, debug: bool = False, user_errors: tuple[type[BaseException], ...] = (),
          failures: tuple[type[BaseException], ...] = (), failure_message: Callable[[BaseException], str] | None = None,
          ) -> int:
    """Run a script's ``body`` and return its exit code: a user error (``UserError`` or one of
    ``user_errors``) prints ``error: <message>`` and gives 2; one of ``failures`` (a training
    outcome such as a solver that gave up) prints ``failure_message(e)`` and gives 1. Neither
    prints a traceback unless ``debug``; anything else is a bug and propagates with its traceback."""
    try:
        return body()
    except (UserError, *user_errors) as e:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except failures as e:
        if debug:
            traceback.print_exc()
        message = failure_message(e) if failure_message is not None else f"error: {e}"
        print(one_line(message), file=sys.stderr, flush=True)
        return EXIT_FAILED


def data_errors() -> tuple[type[BaseException], ...]:
    """The data loader's error types, for :func:`guard`: they are meant to be UserErrors, and until
    every one is, naming them here keeps a missing data folder a one-line error."""
    from train import _data

    found = (getattr(_data, "DataNotFoundError", None), getattr(_data, "DataCorruptError", None))
    return tuple(t for t in found if isinstance(t, type) and issubclass(t, BaseException))


# --- value types ------------------------------------------------------------------------------


def _int_at_least(text: str, low: int, what: str, high: int | None = None) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if v < low or (high is not None and v > high):
        raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


SEED_MAX = 2**63 - 1  # torch.manual_seed takes at most a signed 64-bit value


def seed(text: str) -> int:
    return _int_at_least(text, 0, "an integer in [0, 2**63 - 1]", SEED_MAX)


def _number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    v = _number(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def positive_float(text: str) -> float:
    v = _number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def float_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """A type for numbers in an interval, e.g. ``float_in(0, 1, hi_open=True)`` for [0, 1)."""
    shown = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        v = _number(text)
        if not ((v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)):
            raise argparse.ArgumentTypeError(f"expected a number in {shown}, got {v:g}")
        return v

    return parse


_RUN_NAME = re.compile(r"[A-Za-z0-9_+=@,-][A-Za-z0-9._+=@,-]*")


def run_name(text: str) -> str:
    """A file stem for the record and checkpoint: no folders (it would write outside --out), and no
    leading dot (hidden names are the atomic writes' temporaries)."""
    if not _RUN_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a file name of letters, digits and ._+=@,- not starting with '.', got {text!r}")
    return text


# --- devices ----------------------------------------------------------------------------------


def device(text: str) -> str:
    """A ``torch.device`` string this machine has: cpu, cuda, cuda:N, mps. ``cpu:0`` is the CPU
    (stored as ``cpu``, so it resumes a ``--device cpu`` run); a CUDA or MPS device that is not
    there is refused here, before any data is loaded."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda, cuda:1 or mps, got {text!r}") from None
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise argparse.ArgumentTypeError(f"the CPU is device cpu (or cpu:0), got {text!r}")
        return "cpu"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r} asked for but torch finds no CUDA GPU (torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r} asked for but this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return str(dev)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asked for but torch finds no Apple MPS device; use --device cpu")
        return "mps"
    raise argparse.ArgumentTypeError(f"device type {dev.type!r} is not supported by the training scripts "
                                     "(cpu, cuda, cuda:N or mps)")


def add_run_output_args(p: argparse.ArgumentParser, *, default_out: str, run_name_default: str) -> None:
    """--out, --checkpoint-dir, --run-name and --resume/--overwrite, the same for every training script."""
    p.add_argument("--out", default=default_out, help=f"folder for the result JSON (default: {default_out})")
    p.add_argument("--checkpoint-dir", default=None, help="folder for checkpoints (default: <out>/checkpoints)")
    p.add_argument("--run-name", type=run_name, default=None,
                   help=f"file stem of the JSON and checkpoint (default: {run_name_default})")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run from its checkpoint (same options)")
    again.add_argument("--overwrite", action="store_true",
                       help="replace a run of the same name in --out, finished or not (default: refuse to)")
