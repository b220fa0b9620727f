"""``render_mjml``: the corpus renders like MJML itself; bad templates exit 1 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest

from tests.conftest import CORPORA

ROOT = Path(__file__).resolve().parent.parent
MJML_CORPUS = sorted((CORPORA / "mjml").glob("*.mjml"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "render_mjml", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def visible_text(html: str) -> str:
    """Text a reader sees: no head, styles, scripts or comments; whitespace folded."""
    doc = lxml.html.document_fromstring(html)
    for hidden in doc.xpath("//head|//style|//script|//comment()"):
        hidden.drop_tree()
    return " ".join(" ".join(doc.itertext()).split())


def test_corpus_is_present() -> None:
    assert len(MJML_CORPUS) == 156


@pytest.mark.parametrize("path", MJML_CORPUS, ids=lambda p: p.stem)
def test_corpus_document_renders_with_the_text_of_its_html_twin(path: Path) -> None:
    from templates_registry.management.commands.render_mjml import render_file

    html = render_file(str(path), None)
    assert visible_text(html) == visible_text(path.with_suffix(".html").read_text(encoding="utf-8"))


def test_command_prints_html_and_exits_zero(tmp_path: Path) -> None:
    template = tmp_path / "t.mjml"
    template.write_text("<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ name }}</mj-text></mj-column></mj-section></mj-body></mjml>")
    context = tmp_path / "c.json"
    context.write_text(json.dumps({"name": "Ana <3"}))
    result = run(str(template), "--context", str(context))
    assert result.returncode == 0, result.stderr
    assert "Hi Ana &lt;3" in result.stdout  # autoescaped
    assert result.stdout.lstrip().lower().startswith("<!doctype html>")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<mjml><mj-body>\n<mj-section>\n<mj-column><mj-text>{% for x in y %}</mj-text></mj-column></mj-section></mj-body></mjml>",
         "(line 3)"),
        ("<mjml><mj-body><mj-section><mj-column><mj-text>x</mj-column></mj-section></mj-body></mjml>", "MJML error"),
        ("<mjml><mj-body>\n\n<mj-include path=\"/etc/passwd\" /></mj-body></mjml>", "mj-include is not allowed (line 3)"),
        ("<mjml><mj-body><mj-section><mj-column><mj-text>{{ ''.__class__ }}</mj-text></mj-column></mj-section></mj-body></mjml>",
         "sandbox violation"),
        ("<mjml><mj-body><mj-section><mj-column><mj-text>{{ missing }}</mj-text></mj-column></mj-section></mj-body></mjml>",
         "undefined variable"),
        ("<mjml><mj-body><mj-section>\n{% if x %}<mj-column></mj-column>{% endif %}</mj-section></mj-body></mjml>", "column count"),
    ],
    ids=["jinja-syntax", "mjml-syntax", "mj-include", "sandbox", "undefined", "loop-over-columns"],
)
def test_bad_template_exits_one_with_one_line(tmp_path: Path, source: str, expected: str) -> None:
    template = tmp_path / "bad.mjml"
    template.write_text(source)
    result = run(str(template))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_file_and_bad_context_are_one_line(tmp_path: Path) -> None:
    missing = run(str(tmp_path / "nope.mjml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    template = tmp_path / "t.mjml"
    template.write_text("<mjml><mj-body></mj-body></mjml>")
    context = tmp_path / "c.json"
    context.write_text("{not json")
    bad_context = run(str(template), "--context", str(context))
    assert bad_context.returncode == 1 and "invalid JSON at line 1" in bad_context.stderr
    assert len(bad_context.stderr.strip().splitlines()) == 1
