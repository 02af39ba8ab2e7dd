"""The README's and docs' examples run as written and print what the text says they print.

Every ```python block (top level or indented in a list) of README.md and docs/*.md runs as its
own script in a fresh interpreter. A ```text block right after it (at most one line of prose
between) is its expected standard output, compared after normalising what changes from run to
run: trace and span ids (each distinct id becomes ``<id1>``, ``<id2>``... so parent links are
still checked), clock times, durations and tracebacks' file paths. ``...`` in the expected
output matches anything.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```\n", flags=re.S | re.M)


def examples(page: Path) -> list[tuple[str, str, str | None]]:
    """(where, code, expected output or None) for each python block of ``page``."""
    text = page.read_text()
    blocks = [
        (text.count("\n", 0, m.start()) + 1, m.group(2), textwrap.dedent(m.group(3)), m)
        for m in FENCE.finditer(text)
    ]
    found = []
    for i, (line, language, body, match) in enumerate(blocks):
        if language != "python":
            continue
        expected = None
        if i + 1 < len(blocks) and blocks[i + 1][1] == "text":
            between = text[match.end() : blocks[i + 1][3].start()].strip()
            if "\n" not in between:
                expected = blocks[i + 1][2]
        found.append((f"{page.relative_to(ROOT)}:{line}", body, expected))
    return found


_ID = re.compile(r"\b[0-9a-f]{16}(?:[0-9a-f]{16})?\b")
_VARYING = [
    (re.compile(r"\d\d:\d\d:\d\d\.\d+"), "<time>"),
    (re.compile(r"(duration_ms\W+)[0-9.]+"), r"\g<1><ms>"),
    (re.compile(r"[0-9.]+e-\d+"), "<small>"),
    (re.compile(r'File \\?"[^"\\]+\\?", line \d+'), "File <path>"),
]


def normalise(output: str) -> str:
    ids: dict[str, str] = {}
    output = _ID.sub(lambda m: ids.setdefault(m.group(), f"<id{len(ids) + 1}>"), output)
    for pattern, replacement in _VARYING:
        output = pattern.sub(replacement, output)
    return "\n".join(line.rstrip() for line in output.strip().splitlines())


EXAMPLES = [example for page in PAGES for example in examples(page)]


def test_the_readme_has_examples_with_documented_output() -> None:
    readme = examples(README)
    assert len(readme) >= 4
    assert sum(expected is not None for _, _, expected in readme) >= 2


@pytest.mark.parametrize(
    ("where", "code", "expected"), EXAMPLES, ids=[where for where, _, _ in EXAMPLES]
)
def test_example_runs_alone_and_prints_what_it_says(
    where: str, code: str, expected: str | None, tmp_path: Path
) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
    if expected is not None:
        want, got = normalise(expected), normalise(result.stdout)
        checker = doctest.OutputChecker()
        assert checker.check_output(want + "\n", got + "\n", doctest.ELLIPSIS), (
            f"{where} printed:\n{got}\n\nbut the text shows:\n{want}"
        )


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_stay_inside_the_repository_and_resolve(page: Path) -> None:
    text = page.read_text()
    assert "../shared" not in text  # the project's working notes: users do not have them
    for link, anchor in re.findall(r"\]\(([^)#\s]*)(#[^)\s]*)?\)", text):
        if re.match(r"[a-z]+://", link):
            continue
        target = (page.parent / link).resolve() if link else page
        assert target.is_relative_to(ROOT) and target.exists(), f"{page.name} links to {link}"
        if anchor and target.suffix == ".md":
            assert anchor[1:] in _anchors(target), f"{page.name} links to {link}{anchor}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    headings = re.findall(r"^#+ (.*)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
