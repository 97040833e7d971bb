"""README.md as tests read it: its code blocks, so that what it prints is what we run."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippet(heading: str) -> str:
    """The first ```python block under the ``### <heading>`` section."""
    section = README.read_text().split(f"### {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block under '### {heading}'"
    return match.group(1)
