"""The reliability battery: bad and hostile inputs, each with the outcome it must get.

Each ``tests/test_reliability_*.py`` module builds one ``Battery`` for its area and registers cases
with a decorator naming what the input must get:

- ``error``: a clear error at the boundary (the expected exception type, a message naming the
  argument or file and what was expected); helper :func:`raises`.
- ``failure``: an honest non-successful outcome (the solve says it did not converge, diverged, …)
  instead of success on a wrong answer; helper :func:`fails`.
- ``correct``: the call succeeds and its answer matches something independent (exact solution,
  dense solve, a replay); the case asserts it.
- ``cli``: a command-line error a user can fix is one line on stderr, exit code 2, no traceback;
  helper :func:`one_line_error`.

A case is a plain function that performs its own assertions. ``Battery.test()`` turns the cases
into one parametrized pytest test. ``python tests/_battery.py`` prints the counts by area and kind,
which the README's reliability section states (``tests/test_readme.py`` checks they agree).
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import re
import sys
from typing import Callable

import pytest

KINDS = ("error", "failure", "correct", "cli")


@dataclasses.dataclass(frozen=True)
class Case:
    area: str
    kind: str
    name: str
    run: Callable[[], None]


class Battery:
    def __init__(self, area: str):
        self.area = area
        self.cases: list[Case] = []

    def _register(self, kind: str, fn: Callable[[], None]) -> Callable[[], None]:
        if any(c.name == fn.__name__ for c in self.cases):
            raise ValueError(f"battery {self.area}: case {fn.__name__!r} registered twice")
        self.cases.append(Case(self.area, kind, fn.__name__, fn))
        return fn

    def error(self, fn):
        return self._register("error", fn)

    def failure(self, fn):
        return self._register("failure", fn)

    def correct(self, fn):
        return self._register("correct", fn)

    def cli(self, fn):
        return self._register("cli", fn)

    def test(self):
        @pytest.mark.parametrize("case", self.cases, ids=[f"{c.kind}-{c.name}" for c in self.cases])
        def test_battery(case: Case) -> None:
            case.run()

        return test_battery


def raises(fn: Callable[[], object], exc: type[BaseException] | tuple, *fragments: str) -> BaseException:
    """``fn()`` raises ``exc`` whose message contains every fragment (case-insensitive)."""
    with pytest.raises(exc) as info:
        fn()
    text = str(info.value).lower()
    missing = [f for f in fragments if f.lower() not in text]
    assert not missing, f"message {str(info.value)!r} lacks {missing}"
    return info.value


def fails(stats, outcome, *fragments: str) -> None:
    """A stats record (or a SolverError) reports ``outcome``, not success, and its message says why."""
    from implicit import SolverError

    if isinstance(stats, SolverError):
        got, message = stats.outcome, str(stats)
    else:
        got, message = stats.outcome, getattr(stats, "message", "")
    assert got == outcome, f"expected outcome {outcome}, got {got} ({message})"
    assert not got.ok
    missing = [f for f in fragments if f.lower() not in message.lower()]
    assert not missing, f"message {message!r} lacks {missing}"


def one_line_error(rc: int, stderr: str, *fragments: str) -> None:
    """A user-fixable CLI error: exit 2, one non-empty line on stderr, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert rc == 2, f"exit code {rc}, stderr {stderr!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    missing = [f for f in fragments if f.lower() not in lines[0].lower()]
    assert not missing, f"stderr {lines[0]!r} lacks {missing}"


def all_cases() -> list[Case]:
    """Every case of every ``test_reliability_*`` module, imported by name."""
    here = pathlib.Path(__file__).resolve().parent
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    cases: list[Case] = []
    for path in sorted(here.glob("test_reliability_*.py")):
        module = importlib.import_module(path.stem)
        cases.extend(module.BATTERY.cases)
    return cases


def counts(cases: list[Case]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for c in cases:
        table.setdefault(c.area, dict.fromkeys(KINDS, 0))[c.kind] += 1
    return table


def markdown(cases: list[Case]) -> str:
    """The README's count table: one row per area, one column per kind, and a total row."""
    table = counts(cases)
    head = "| area | inputs | clear error | honest failure | correct result | one-line CLI error |"
    rows = [head, "|---|---:|---:|---:|---:|---:|"]
    totals = dict.fromkeys(KINDS, 0)
    for area in sorted(table):
        row = table[area]
        for k in KINDS:
            totals[k] += row[k]
        rows.append(f"| {area} | {sum(row.values())} | " + " | ".join(str(row[k]) for k in KINDS) + " |")
    rows.append(f"| **all** | **{sum(totals.values())}** | " + " | ".join(f"**{totals[k]}**" for k in KINDS) + " |")
    return "\n".join(rows)


def readme_table(readme: str) -> str:
    """The count table as the README states it (the table under the reliability section)."""
    m = re.search(r"^\| area \| inputs \|.*?(?=\n\n|\Z)", readme, flags=re.M | re.S)
    return m.group(0).strip() if m else ""


if __name__ == "__main__":
    print(markdown(all_cases()))
