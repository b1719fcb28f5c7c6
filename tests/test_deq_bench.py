"""The DEQ benchmark's --quick run: its JSON and Markdown, and the counts it cross-checks."""

import json
import sys

import pytest

from train import bench


def rows(data, library):
    return [r for r in data["results"] if r["library"] == library]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "deq.json"
    assert bench.main(["deq", "--quick", "--repeats", "1", "--out", str(out)]) == 0
    return json.loads(out.read_text()), out.with_suffix(".md").read_text(), out


def test_quick_run_writes_json_and_markdown(quick_run):
    data, md, out = quick_run
    assert data["format"] == "implicit-bench-deq" and data["config"]["quick"] is True
    assert data["environment"]["git"]["commit"]
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temporary behind
    ours = rows(data, "ours")
    assert {r["block"] for r in ours} == {"fc", "conv"}
    assert "| block | batch | library | method |" in md
    # the Markdown is a pure function of the JSON
    out.with_suffix(".md").unlink()
    assert bench.main(["deq", "--render-only", "--out", str(out)]) == 0
    assert out.with_suffix(".md").read_text() == md
    for r in ours:
        assert r["method"] in md
        assert r["converged"] and r["residual_max"] <= data["config"]["tol"]
        assert r["forward_s"] > 0 and r["train_step_s"] > 0
        # the layer's own counter cell agrees with the instrumented f
        assert r["own_nfe_backward"] == r["nfe_backward"] > 0
        assert r["nfe_forward"] >= r["f_calls_forward"] > r["n_iter"]


def test_quick_run_memory_rows_show_flat_implicit_and_growing_unrolled(quick_run):
    data, _, _ = quick_run
    for block in ("fc", "conv"):
        mem = {(m["method"], m["n_iter"]): m["saved_bytes"] for m in data["memory"] if m["block"] == block}
        assert mem["ours implicit (IFT)", 2] == mem["ours implicit (IFT)", 6] > 0
        assert mem["ours unrolled", 6] > 2 * mem["ours unrolled", 2]


def _bench_deq_pairs():
    from train import _bench_deq

    return _bench_deq.RATIO_PAIRS


def test_quick_run_compares_with_torchdeq_when_installed(quick_run):
    pytest.importorskip("torchdeq")
    data, md, _ = quick_run
    assert len(rows(data, "torchdeq")) == 4
    n_cases = len({(r["block"], r["batch"]) for r in data["results"]})
    assert n_cases == 2
    assert len(data["ratios"]) == n_cases * len(_bench_deq_pairs()) and "Ratios ours / torchdeq" in md
    assert {(q["ours"], q["torchdeq"]) for q in data["ratios"]} == set(_bench_deq_pairs())
    for q in data["ratios"]:
        assert q["forward_ratio"] > 0 and q["train_step_ratio"] > 0


def test_missing_torchdeq_skips_its_columns_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdeq", None)  # import now raises ImportError
    from train import _bench_deq

    monkeypatch.setattr(_bench_deq, "cases", lambda quick: [
        ("fc", lambda: _bench_deq.FCCell(8, in_features=6), (8,), (6,), {2: None})])
    out = tmp_path / "deq.json"
    assert _bench_deq.main(["--quick", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert rows(data, "torchdeq") == [] and data["ratios"] == []
    assert "torchdeq is not installed" in data["notes"][0]
    assert "torchdeq is not installed" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("quick", [True, False])
def test_fc_block_is_the_zoo_cell_with_the_old_blocks_numbers(quick):
    import torch

    from implicit._counting import BackwardTally
    from models.mnist_deq import FCCell
    from train import _bench_deq

    (name, make, z_shape, x_shape, _), = [c for c in _bench_deq.cases(quick) if c[0] == "fc"]
    torch.manual_seed(0)
    cell = make()
    assert type(cell) is FCCell and not hasattr(_bench_deq, "FCBlock")
    # the block the bench defined before it reused the zoo's: W₁ (dz, dz) then W₂ (dx -> dz), default
    # init, relu(W₁z) + relu(W₂x): same seed, same weights, same outputs
    torch.manual_seed(0)
    w1, w2 = torch.nn.Linear(z_shape[0], z_shape[0]), torch.nn.Linear(x_shape[0], z_shape[0])
    z, x = torch.randn(3, *z_shape), torch.randn(3, *x_shape)
    assert torch.equal(cell(z, x), torch.relu(w1(z)) + torch.relu(w2(x)))
    # the instrumented f counts backward VJPs through the library's one tally
    f = _bench_deq.Counted(cell)
    assert isinstance(f.probe, BackwardTally)
    f(z.requires_grad_(True), x).sum().backward()
    assert (f.probe.calls, f.probe.vjps) == (1, 1)


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        bench.main(["deq", "--out", "x.json", "--repeats", "0"])
    with pytest.raises(SystemExit):
        bench.main(["deq"])  # --out is required
