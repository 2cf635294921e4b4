"""The README's first steps, run as written, in order, against a fresh `contactbase serve`: each
command's output must be what the README shows under it ("…" stands for what differs from run
to run: times, cursors, export ids)."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_headers import contactbase_serve

README = Path(__file__).parents[1] / "README.md"
ANY = "…"


def first_steps() -> list[tuple[str, list[str]]]:
    """Each command of the section (lines up to its first `# ` line) and the output shown."""
    text = README.read_text()
    section = text[text.index("## First steps") : text.index("tests/test_quickstart.py")]
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        command: list[str] = []
        for line in block.splitlines():
            if line.startswith("# "):
                if command:
                    steps.append(("\n".join(command), []))
                    command = []
                steps[-1][1].append(line[2:])
            else:
                command.append(line)
        if command:
            steps.append(("\n".join(command), []))
    return steps


def matches(shown: Any, got: Any) -> bool:
    """`got` as the README shows it, "…" matching any string (or any null)."""
    if shown == ANY:
        return got is None or isinstance(got, str)
    if isinstance(shown, dict):
        return (
            isinstance(got, dict)
            and shown.keys() == got.keys()
            and all(matches(shown[key], got[key]) for key in shown)
        )
    if isinstance(shown, list):
        return (
            isinstance(got, list)
            and len(shown) == len(got)
            and all(matches(one, other) for one, other in zip(shown, got, strict=True))
        )
    return bool(shown == got)


def test_the_readme_first_steps_work_as_written(tmp_path: Path) -> None:
    steps = first_steps()
    assert len(steps) >= 10, steps
    with contactbase_serve(tmp_path) as served:
        demo = subprocess.run(
            [sys.executable, "-m", "contactbase", "demo", "--key-file", "key"],
            env=served.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        base = f"http://127.0.0.1:{served.port}"
        # The line demo prints to paste, with the README's address for the test server's.
        pasted = re.search(r"^export CB=(\S+) KEY=(cb_\S+)$", demo.stdout, re.MULTILINE)
        assert pasted is not None, demo.stdout
        assert pasted.group(1) == "http://127.0.0.1:8000/public-api/v1"
        env = {**served.env, "CB": f"{base}/public-api/v1", "KEY": pasted.group(2)}
        for command, shown in steps:
            if "cb_…" in command:  # the line to paste: the test has set CB and KEY itself
                continue
            done = subprocess.run(
                ["bash", "-c", command],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, (command, done.stderr)
            got = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            expected = [json.loads(line.replace("http://127.0.0.1:8000", base)) for line in shown]
            assert matches(expected, got), (command, done.stdout)


@pytest.mark.parametrize(
    ("shown", "got", "same"),
    [
        ({"a": ANY}, {"a": "x"}, True),
        ({"a": ANY}, {"a": 1}, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ([{"a": ANY}], [{"a": None}], True),
    ],
)
def test_the_matcher(shown: Any, got: Any, same: bool) -> None:
    assert matches(shown, got) is same
