"""The shell and Python blocks of the README and `docs/`, as a reader copies them.

A block runs as written unless the line right above its fence says why it cannot run here:

    <!-- not run here: needs GPUs and the ViT-B/16 weights -->
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs", "cluster/README.md")
FENCE = re.compile(r"^```(bash|python)\s*$")
NOT_RUN = re.compile(r"^<!-- not run here: (.*\S) -->\s*$")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the checkout
    line: int  # of the opening fence, 1-based
    lang: str  # bash | python
    text: str
    not_run: str | None  # the reason, when the block cannot run here

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def documents(root: Path = ROOT) -> list[Path]:
    out = []
    for name in DOCUMENTS:
        p = root / name
        out += sorted(p.glob("*.md")) if p.is_dir() else [p]
    return out


def blocks(path: Path, root: Path = ROOT) -> list[Block]:
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path.relative_to(root)}:{i + 1}: a ```{m.group(1)} block is never closed")
        above = NOT_RUN.match(lines[i - 1]) if i else None
        out.append(Block(str(path.relative_to(root)), i + 1, m.group(1), "\n".join(lines[i + 1:end]) + "\n",
                         above.group(1) if above else None))
        i = end + 1
    return out


def all_blocks(root: Path = ROOT) -> list[Block]:
    return [b for doc in documents(root) for b in blocks(doc, root)]
