"""train._timing.time_interleaved: every model on each batch in turn, warm-up untimed."""

import pytest
import torch

from train._timing import time_interleaved


class _Model:
    def __init__(self, name, log, nfe):
        self.name, self.log, self.nfe = name, log, nfe

    def __call__(self, x):
        self.log.append((self.name, int(x[0])))
        return self.nfe


def test_models_are_interleaved_batch_by_batch_after_an_untimed_warmup():
    log, hooks = [], []
    models = {"a": _Model("a", log, 3.0), "b": _Model("b", log, 5.0)}
    batches = [torch.tensor([0.0]), torch.tensor([1.0])]
    seconds, nfe = time_interleaved(models, batches, repeats=2, nfe=lambda out: out,
                                    before_call=lambda r, k: hooks.append((r, k)))
    assert log[:2] == [("a", 0), ("b", 0)]  # warm-up
    assert log[2:] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)] * 2
    assert hooks == [(r, k) for r in range(2) for k in range(2) for _ in range(2)]
    assert {k: len(v) for k, v in seconds.items()} == {"a": 4, "b": 4} and all(s >= 0 for s in seconds["a"])
    assert nfe == {"a": [3.0] * 4, "b": [5.0] * 4}


def test_no_warmup_and_bad_arguments():
    log = []
    time_interleaved({"a": _Model("a", log, 1.0)}, [torch.tensor([7.0])], repeats=1, nfe=float, warmup=False)
    assert log == [("a", 7)]
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        time_interleaved({"a": _Model("a", log, 1.0)}, [torch.tensor([0.0])], repeats=0, nfe=float)
    with pytest.raises(ValueError, match="at least one model and one batch"):
        time_interleaved({}, [torch.tensor([0.0])], repeats=1, nfe=float)
