"""train.bench jvp: the --quick run's JSON and Markdown, products that agree, one-line CLI errors."""

import json

import pytest
import torch

from _battery import one_line_error
from train import _bench_jvp, bench


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "jvp.json"
    assert bench.main(["jvp", "--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text()), out


def test_quick_run_writes_json_and_markdown(quick_run):
    data, out = quick_run
    assert data["format"] == "implicit-bench-jvp" and data["version"] == 1
    assert data["config"]["quick"] is True and data["config"]["repeats"] == 1
    assert data["environment"]["git"]["commit"] and len(data["load_average_before"]) == 3
    assert str(out.parent) not in out.read_text()  # no path of this machine in the record
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temporary behind
    methods = [key for key, *_ in _bench_jvp.METHODS]
    assert [(p["block"], p["batch"]) for p in data["products"]] == [("fc", 4), ("conv", 2)]
    for p in data["products"]:
        assert [m["method"] for m in p["methods"]] == methods
        assert len(p["f_samples"]) == data["config"]["products"]
        for m in p["methods"]:
            assert m["product_s"] > 0 and m["product_in_f"] == pytest.approx(m["product_s"] / p["f_s"])
            # torch.func.jvp has no setup phase; every other method has one, timed apart from its products
            assert (m["setup_s"] is None) == (m["method"] == "func_jvp")
    settings = {(jvp, fp) for jvp in _bench_jvp.JVPS for fp in _bench_jvp.FIXED_POINT_STEPS}
    for block in ("fc", "conv"):
        rows = [s for s in data["solves"] if s["block"] == block]
        assert {(s["jvp"], s["fixed_point_steps"]) for s in rows} == settings
        for s in rows:
            assert s["nfe"] > s["n_jvp"] > 0 and s["seconds"] > 0
            assert s["n_iter"] == s["newton_steps"] + min(s["fixed_point_steps"], s["n_iter"])
            assert (s["outcome"] == "successful") == (s["residual_max"] <= data["config"]["tol"])
    md = out.with_suffix(".md").read_text()
    assert "| block | batch | method | setup ms |" in md and "## NewtonKrylov to tol 1e-06 in float32" in md
    assert md.count("| fc | 4 |") == 1 + len(methods) + len(settings)


def test_markdown_is_rendered_from_the_json_alone(quick_run):
    data, out = quick_run
    again = json.loads(out.read_text())
    assert _bench_jvp.render_markdown(again) == _bench_jvp.render_markdown(data) == out.with_suffix(".md").read_text()


def test_the_products_agree(quick_run):
    data, _ = quick_run
    eps = data["eps"]
    for p in data["products"]:
        diff = {m["method"]: m["max_rel_diff"] for m in p["methods"]}
        assert all(m["median_rel_diff"] <= m["max_rel_diff"] for m in p["methods"][1:])
        assert diff["autodiff"] is None  # the reference
        # forward mode and the linearized trace form the same product: equal up to float32 rounding
        assert diff["func_jvp"] <= 100 * eps and diff["func_linearize"] <= 100 * eps, diff
        # a one-sided difference is accurate to about √eps (3e-4) on a smooth f; relu's kinks cost more
        assert 0 < diff["finite_difference"] <= 1e-2, diff


def test_relative_difference_is_per_sample_and_sees_a_wrong_product():
    ref = torch.tensor([[3.0, 4.0], [0.0, 1e-3]])
    wrong = ref.clone()
    wrong[1, 1] *= 1.5  # a small sample, half wrong: the per-sample norm catches it, a batch norm would not
    assert _bench_jvp.max_relative_difference(ref, ref) == 0.0
    assert _bench_jvp.max_relative_difference(wrong, ref) == pytest.approx(0.5)


@pytest.mark.parametrize("argv, fragment", [
    (["--repeats", "0"], "--repeats"),
    (["--threads", "0"], "--threads"),
    (["--products", "two"], "--products"),
    (["--tol", "-1e-6"], "--tol"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_arguments_are_one_line_errors(argv, fragment, tmp_path, capsys):
    out = tmp_path / "jvp.json"
    with pytest.raises(SystemExit) as e:
        bench.main(["jvp", "--out", str(out), *argv])
    one_line_error(e.value.code, capsys.readouterr().err, fragment)
    assert not out.exists()


def test_out_is_required(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["jvp", "--quick"])
    one_line_error(e.value.code, capsys.readouterr().err, "--out")
