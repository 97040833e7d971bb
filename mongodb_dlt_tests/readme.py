"""README.md as tests read it: its code blocks, so that what it prints is what we run."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def code_block(heading: str, info: str = "", index: int = 0) -> str:
    """The ``index``-th ```<info> block (``info`` "": blocks without one) under the ``### <heading>`` section."""
    section = README.read_text().split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    blocks = [
        body for opening, body in re.findall(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M) if opening == info
    ]
    assert len(blocks) > index, f"no {index + 1}. {info or 'plain'} block under '### {heading}'"
    return blocks[index]


def python_snippet(heading: str) -> str:
    """The first ```python block under the ``### <heading>`` section."""
    return code_block(heading, "python")
