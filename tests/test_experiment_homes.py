"""Each experiment's paper numbers have one home (train/exp_*.py); models/ holds architectures."""

from pathlib import Path

import pytest

from train import exp_mnist_deq, exp_mnist_node, exp_mnist_nsde

ROOT = Path(__file__).resolve().parents[1]


def _numbers(table) -> set[str]:
    # distinctive ones only: 4.0 or 0.01 occur in code for other reasons
    values = {float(v) for row in table.values() for v in row.values() if isinstance(v, (int, float))}
    return {repr(v) for v in values if v >= 10 and v != round(v, -1)}


@pytest.mark.parametrize("module,tables", [
    (exp_mnist_node, ("PAPER",)), (exp_mnist_deq, ("PAPER", "PAPER_JR")), (exp_mnist_nsde, ("PAPER",)),
], ids=lambda m: getattr(m, "__name__", ""))
def test_the_papers_numbers_appear_in_their_experiment_module_only(module, tables):
    numbers = set().union(*(_numbers(getattr(module, t)) for t in tables))
    assert len(numbers) >= 3
    home = Path(module.__file__).name
    others = [p for d in ("train", "models") for p in (ROOT / d).glob("*.py") if p.name != home]
    clashes = {p.name: sorted(n for n in numbers if n in p.read_text()) for p in others}
    assert not {k: v for k, v in clashes.items() if v}
