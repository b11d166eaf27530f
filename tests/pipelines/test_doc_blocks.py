"""Every shell and Python block of the README and docs/ either runs as written (tests/e2e/test_docs_run.py
runs them) or says, right above its fence, why it cannot run here."""

from __future__ import annotations

import pytest

from tests.doc_blocks import ROOT, all_blocks, blocks


def test_the_reader_finds_blocks_and_their_reasons(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n```bash\necho a\n```\n<!-- not run here: needs a GPU -->\n```python\nprint(1)\n```\n"
                   "```yaml\nk: v\n```\n")
    found = blocks(doc, tmp_path)
    assert [(b.line, b.lang, b.text, b.not_run) for b in found] == [
        (2, "bash", "echo a\n", None), (6, "python", "print(1)\n", "needs a GPU")]


def test_an_unclosed_block_is_named(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("```bash\necho a\n")
    with pytest.raises(ValueError, match=r"x.md:1: a ```bash block is never closed"):
        blocks(doc, tmp_path)


def test_every_block_runs_or_says_why():
    found = all_blocks()
    assert {b.path for b in found} >= {"README.md", "docs/training.md", "docs/evaluation.md", "cluster/README.md"}
    readme = [b for b in found if b.path == "README.md"]
    assert [b.lang for b in readme if b.not_run is None] == ["python", "bash"], "the API and the CLI tour run"
    vague = [b.where for b in found if b.not_run is not None and len(b.not_run.split()) < 3]
    assert not vague, f"say what a block needs that this machine lacks: {vague}"
    assert sum(b.not_run is None for b in found) >= 5


def test_the_documents_link_to_files_that_exist():
    import re

    missing = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "cluster" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not missing, missing
