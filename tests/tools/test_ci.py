"""CI runs the README's two set-up commands exactly as the README prints them."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def setup_commands() -> list[str]:
    """The bash blocks of the README's set-up section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_ci_runs_both_readme_commands_verbatim_main_job_first():
    commands = setup_commands()
    assert len(commands) == 2 and commands[0].endswith("ecanet train") and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    runs = [line for line in ci.splitlines() if line.startswith("(")]
    assert [line[1:].split(")", 1)[0] for line in runs] == commands
    assert "set -euo pipefail" in ci and ci.count("rm -rf .venv") == 2  # a fresh venv for each
