"""The repository's promises to users: the README's test command is what CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = [re.search(r"python -m pytest.*", line).group(0).strip()
                   for line in ci.splitlines()
                   if "python -m pytest" in line and not line.lstrip().startswith("#")]
    assert ci_commands, ".ci/run runs no pytest command"
    for command in ci_commands:
        assert re.search(rf"^{re.escape(command)}$", readme, re.M), f"README lacks the CI command {command!r}"
