"""The docs a newcomer reads agree with the code: every command they name exists, and
docs/architecture.md has a line for every module."""
from __future__ import annotations

import re
from pathlib import Path

import typer.main

from spool.cli import get_app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands() -> set[str]:
    return set(typer.main.get_command(get_app()).commands)


def test_every_spool_command_the_docs_name_exists():
    known = _commands()
    wrong = sorted({(doc.name, m) for doc in DOCS
                    for m in re.findall(r"`spool ([a-z][a-z-]*)", doc.read_text())
                    if m not in known})
    assert wrong == [], f"the docs name commands spool does not have: {wrong}"


def _named(rel: str, lines: list[str]) -> bool:
    if any(f"`{rel}`" in line for line in lines):
        return True
    package, name = rel.rsplit("/", 1)
    stem = name.removesuffix(".py")
    return any(f"`{package}/" in line and (f"`{name}`" in line or f"`{stem}`" in line)
               for line in lines)


def test_architecture_has_a_line_for_every_module():
    lines = (ROOT / "docs" / "architecture.md").read_text().splitlines()
    missing = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "spool").rglob("*.py")
                     if p.name not in ("__init__.py", "__main__.py")
                     and not _named(str(p.relative_to(ROOT)), lines))
    assert missing == [], f"docs/architecture.md has no line for {missing}"


def test_architecture_lists_every_test_support_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = text.split("`tests/support/`", 1)[1].split("\n- ", 1)[0]
    missing = sorted(p.stem for p in (ROOT / "tests" / "support").glob("*.py")
                     if p.name != "__init__.py" and f"`{p.stem}`" not in listed)
    assert missing == [], f"docs/architecture.md's tests/support list lacks {missing}"


def test_the_readme_names_the_json_commands_that_print_one_object(tmp_path):
    import json
    import subprocess
    import sys

    spool = str(Path(sys.executable).parent / "spool")
    sentence = " ".join((ROOT / "README.md").read_text().split("Every read command has", 1)[1]
                        .split(").", 1)[0].split())
    for args in (["status"], ["usage"], ["cleanup", "--older-than", "30"], ["history"]):
        out = subprocess.run([spool, *args, "--json"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60)
        assert out.returncode == 0, out.stderr
        is_object = isinstance(json.loads(out.stdout), dict)
        assert (f"`{args[0]}`" in sentence.split("one JSON array")[1]) == is_object, (args, sentence)


def test_the_quick_start_installs_a_codex_init_accepts():
    from spool.codex.binary import MIN_HOOK_TRUST_VERSION

    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    line = next(ln for ln in quick.splitlines() if "npm install -g @openai/codex" in ln)
    assert quick.index(line) < quick.index("spool init")
    assert ">= " + ".".join(map(str, MIN_HOOK_TRUST_VERSION[:2])) in line
