#!/usr/bin/env python
"""Fail the book build on what a reader should never see: raw TeX in a page's text, warnings in outputs.

    python tools/check_pages.py _build/html _build/source/notebooks

1. Rendered pages (every ``*.html`` under the site but ``_static``, ``_sources``, search and index pages): the
   text a reader sees (not scripts, styles, code blocks, ``<pre>`` outputs or MathJax's math elements) must hold
   no ``$`` and no TeX command such as ``\\mathbb`` or ``\\lambda``: MathJax renders only ``\\(...\\)`` inside math
   elements, so such text is a formula that was not rendered.
2. Executed notebooks: no text output (stdout, a displayed value) may hold a warning's name (``FutureWarning``,
   ``TqdmWarning``, ``UserWarning``, ...) or a progress bar. Outputs on stderr (Python's warnings, loading bars,
   logging) are MyST-NB's to report: ``nb_output_stderr: warn`` in _config.yml, which ``make book`` (Sphinx's
   ``--warningiserror``) turns into a failure.
3. Links between pages: every link to a section of a page of the site (``page.html#id``, or ``#id`` on the same
   page) must name an id that page has. The scoreboard links each claim to the MyST label of the section that
   shows it; a label that moved or vanished is a dead link here.

Each finding is printed as one line ``file: where: what``; the exit status is 1 if there is any.
"""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

TEX = re.compile(r"\$|\\[A-Za-z]{2,}")
WARNING = re.compile(r"\b[A-Z]\w*Warning\b|\bwarnings\.warn\b")
PROGRESS = re.compile(r"\d+%\|[^|\n]*\||\d+(?:\.\d+)?(?:it|s)/(?:s|it)\]")
SKIP_TAGS = {"script", "style", "pre", "code", "kbd", "samp", "head", "svg", "math", "textarea"}
SKIP_PAGES = {"search.html", "genindex.html", "py-modindex.html"}


class _Text(HTMLParser):
    """The visible text of a page, each piece with the id or class of the nearest element that names one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []
        self.pieces: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in {"br", "img", "hr", "input", "meta", "link", "wbr", "source", "col", "area", "base", "embed"}:
            return
        classes = (dict(attrs).get("class") or "").split()
        skip = tag in SKIP_TAGS or "math" in classes or any(c.startswith("highlight") for c in classes)
        self.stack.append((tag, skip or bool(self.stack and self.stack[-1][1])))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        if not (self.stack and self.stack[-1][1]) and data.strip():
            self.pieces.append(data)


class _Anchors(HTMLParser):
    """The ids a page defines and the local links it makes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        href = a.get("href") or ""
        if tag == "a" and "#" in href and not re.match(r"[a-z][a-z0-9+.-]*:", href):
            self.links.append(href)


def _anchors(page: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(page.read_text(errors="replace"))
    return parser


def dead_anchors(site: Path, pages: list[Path]) -> list[str]:
    """Links to ``page.html#id`` (or ``#id``) whose page, in the site, has no such id: one line each."""
    parsed = {p.resolve(): _anchors(p) for p in pages}
    found = []
    for page, doc in parsed.items():
        for href in doc.links:
            path, _, frag = href.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not frag or target.suffix != ".html" or site.resolve() not in target.parents:
                continue
            ids = parsed[target].ids if target in parsed else (_anchors(target).ids if target.exists() else None)
            if ids is None:
                found.append(f"{page}: dead link {href!r}: no page {target.name}")
            elif frag not in ids:
                found.append(f"{page}: dead link {href!r}: {target.name} has no id {frag!r}")
    return found


def raw_tex(html: str) -> list[str]:
    """The pieces of a page's visible text that hold a ``$`` or a TeX command, as short excerpts."""
    parser = _Text()
    parser.feed(html)
    found = []
    for piece in parser.pieces:
        for m in TEX.finditer(piece):
            excerpt = piece[max(0, m.start() - 40) : m.end() + 40].replace("\n", " ").strip()
            found.append(f"raw TeX {m.group(0)!r} in text: …{excerpt}…")
    return found


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def output_problems(nb: dict) -> list[str]:
    """Warnings and progress bars in an executed notebook's text outputs (stderr aside), one line each."""
    found = []
    number = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        number += 1
        for out in cell.get("outputs", []):
            texts = []
            if out.get("output_type") == "stream":
                if out.get("name") == "stderr":
                    continue  # nb_output_stderr (_config.yml)
                texts.append(_text(out.get("text", "")))
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in out.get("data", {}):
                    texts.append(_text(out["data"][mime]))
            for text in texts:
                for pattern, what in ((WARNING, "warning"), (PROGRESS, "progress bar")):
                    m = pattern.search(text)
                    if m:
                        line = text[text.rfind("\n", 0, m.start()) + 1 :].split("\n", 1)[0]
                        found.append(f"code cell {number}: {what} in output: {line.strip()[:160]!r}")
    return found


def check(site: Path | None, notebooks: Path | None) -> list[str]:
    problems = []
    if site is not None:
        pages = [p for p in sorted(site.rglob("*.html")) if p.name not in SKIP_PAGES]
        pages = [p for p in pages if not {"_static", "_sources"} & set(p.relative_to(site).parts)]
        if not pages:
            problems.append(f"{site}: no HTML pages")
        for page in pages:
            problems += [f"{page}: {p}" for p in raw_tex(page.read_text(errors="replace"))]
        problems += dead_anchors(site, pages)
    if notebooks is not None:
        for path in sorted(notebooks.rglob("*.ipynb")):
            problems += [f"{path}: {p}" for p in output_problems(json.loads(path.read_text()))]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    site, notebooks = Path(argv[0]), Path(argv[1])
    for path in (site, notebooks):
        if not path.is_dir():
            print(f"check_pages: {path} is not a folder", file=sys.stderr)
            return 2
    problems = check(site, notebooks)
    for line in problems:
        print(line, file=sys.stderr)
    print(f"check_pages: {len(problems)} problem(s) in {site} and {notebooks}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
