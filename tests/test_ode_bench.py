"""The ODE benchmark's --quick smoke run writes a complete JSON record and its Markdown summary."""

import json

from train import _bench_ode


def test_quick_benchmark_writes_json_and_markdown(tmp_path):
    out = tmp_path / "ode.json"
    assert _bench_ode.main(["--out", str(out), "--quick"]) == 0
    result = json.loads(out.read_text())
    assert result["format"] == "implicit-bench-ode" and result["config"]["quick"] is True
    assert result["environment"]["versions"]["torch"] and "commit" in result["environment"]["git"]
    assert [c["weights"] for c in result["cases"]] == ["random", "scaled"]
    scaled = result["cases"][1]
    assert scaled["variants"]["torchdiffeq-dopri5"]["nfe"] >= result["config"]["min_nfe_scaled"]
    for case in result["cases"]:
        ref = case["variants"]["torchdiffeq-dopri5"]
        assert set(case["variants"]) == {v[0] for v in _bench_ode.VARIANTS}
        assert case["variants"]["ours-dopri5"]["nfe"] == ref["nfe"]  # same step sequence as torchdiffeq
        assert ref["ratio_forward"] == 1.0
        for v in case["variants"].values():
            assert 0 < v["forward_s"] <= v["forward_backward_s"]
            assert len(v["forward_samples"]) == result["config"]["repeats"]
            assert v["overhead_forward"] > 0 and v["ratio_forward_backward"] > 0
    md = out.with_suffix(".md").read_text()
    assert "| random (×1) | 1e-03 | ours-dopri5 |" in md and "Machine load" in md
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave no temporaries
