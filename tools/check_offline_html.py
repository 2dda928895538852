#!/usr/bin/env python
"""Fail if any page of the built site loads a script or stylesheet from the internet.

python tools/check_offline_html.py _build/html
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REMOTE = re.compile(r"""<(script|link)\b[^>]*\b(src|href)\s*=\s*["']((?:https?:)?//[^"']+)["'][^>]*>""", re.I)


def remote_loads(html: str) -> list[str]:
    """URLs of <script src> and <link rel=stylesheet|preload|modulepreload href> that point off the machine."""
    found = []
    for match in REMOTE.finditer(html):
        tag, _, url = match.groups()
        text = match.group(0).lower()
        if tag.lower() == "link" and not re.search(r"rel\s*=\s*[\"']?(stylesheet|preload|modulepreload|icon)", text):
            continue
        found.append(url)
    return found


def main(site: str) -> int:
    pages = sorted(Path(site).rglob("*.html"))
    if not pages:
        print(f"no HTML pages under {site}", file=sys.stderr)
        return 1
    bad = {str(p): remote_loads(p.read_text(errors="replace")) for p in pages}
    bad = {p: urls for p, urls in bad.items() if urls}
    for page, urls in bad.items():
        print(f"{page}: loads {urls}", file=sys.stderr)
    print(f"{len(pages)} pages checked, {len(bad)} load something from the internet")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "_build/html"))
