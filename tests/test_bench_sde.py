"""train.bench sde: the equal-error interpolation, and a quick run end to end."""

import json
import math
from pathlib import Path

import pytest

from train import _bench_sde

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _pt(error, evals, seconds=1.0):
    return {"error": error, "evaluations": evals, "seconds_median": seconds}


def test_equal_error_interpolates_in_log_space_inside_each_pairs_overlap():
    sweeps = {
        "sosri": [_pt(1e-1, 100), _pt(1e-3, 1000)],  # evals ∝ error^-1/2
        "srk-doubling": [_pt(1e-2, 3000), _pt(1e-4, 30000)],
        "milstein-doubling": [_pt(1.0, 10), _pt(0.5, 20)],
    }
    srk, milstein = _bench_sde.equal_error(sweeps, levels=1)
    assert srk["method"] == "srk-doubling" and srk["error"] == pytest.approx(math.sqrt(1e-2 * 1e-3))
    assert srk["sosri"]["evaluations"] == pytest.approx(100 * (1e-1 / srk["error"]) ** 0.5)
    assert srk["srk-doubling"]["evaluations"] == pytest.approx(3000 * (1e-2 / srk["error"]) ** 0.5)
    assert srk["evaluations_ratio"] == pytest.approx(srk["srk-doubling"]["evaluations"] / srk["sosri"]["evaluations"])
    assert milstein == {"method": "milstein-doubling", "error": None, "overlap": False}


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "MNIST" / "raw").is_dir(), reason="needs MNIST in ../shared/data")
def test_quick_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "sde.json"
    assert _bench_sde.main(["--quick", "--out", str(out), "--data-dir", str(DATA)]) == 0
    rec = json.loads(out.read_text())
    assert [c["problem"] for c in rec["cases"]] == ["gbm", "mnist_nsde"]
    assert "Against SOSRI at equal strong error" in out.with_suffix(".md").read_text()
