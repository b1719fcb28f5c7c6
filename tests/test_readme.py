"""The README's example and set-up commands must stay true."""

import re
from pathlib import Path

import implicit

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_example_runs_and_reports_a_successful_solve():
    code = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(code) == 1, "README should hold exactly one python example"
    ns: dict = {}
    exec(compile(code[0], "README.md", "exec"), ns)
    stats, st = ns["stats"], ns["st"]
    assert stats.outcome is implicit.Outcome.SUCCESSFUL
    assert stats.nfe_backward > 0, "backward ran, so the backward NFE must have been counted"
    assert st.outcome is implicit.Outcome.SUCCESSFUL and bool(st.converged.all())
    assert ns["z"].shape == (32, 128)


def test_ci_runs_the_readme_test_command():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2, "the README opens with exactly two set-up commands"
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert block[1] in ci.splitlines(), f"CI must run the README's test command {block[1]!r}"
    install = block[0].split(" && python -m")[0]
    for part in install.split(" && "):
        assert part.replace("pip install", "python -m pip install --quiet") in ci, part


def test_readme_states_the_reliability_battery_counts():
    import _battery

    stated = _battery.readme_table(README)
    assert stated, "the README's reliability section must hold the battery's count table"
    assert stated == _battery.markdown(_battery.all_cases()), (
        "the README's battery counts are stale: paste the output of `python tests/_battery.py`"
    )
