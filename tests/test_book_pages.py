"""The reader's tags (tools/tag_cells.py), the build's copy of a notebook (tools/book_pages.py), the page checker."""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book_pages  # noqa: E402
import check_pages  # noqa: E402
import tag_cells  # noqa: E402


def code(source, tags=(), outputs=()):
    return {"cell_type": "code", "id": "x", "metadata": {"tags": list(tags)}, "source": source,
            "outputs": list(outputs), "execution_count": 1}  # fmt: skip


def md(source):
    return {"cell_type": "markdown", "id": "m", "metadata": {}, "source": source}


def tags(cell):
    return cell["metadata"].get("tags", [])


SETUP = """import numpy as np
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import tqdm.auto

# the knobs
DEFAULTS = {"n": 3}
print(DEFAULTS)
"""


def test_plumbing_is_hidden_and_results_stay_visible():
    out = {"output_type": "stream", "name": "stdout", "text": "{'n': 3}\n"}
    nb = {"cells": [
        md("# Title"),
        code('import sys\nif "google.colab" in sys.modules:\n    pass'),
        code('profile = "default"', ["parameters"]),
        code(SETUP, outputs=[out]),
        code("import pandas as pd"),
        code('table = runs.pivot_table(index="a", columns="b")\ntable.round(3)'),
        code('board.style.set_uuid("x").format({"v": "{:.3f}"}).hide(axis="index")'),
        code("table2(runs).map(lambda x: x if isinstance(x, str) else f'{x:.3f}')"),
        code("loss = train(model)\nloss"),
        code("import numpy as np\nv = Verdict('x', P.profile)"),
    ]}  # fmt: skip
    cells = tag_cells.tagged(nb, "03_x")["cells"]
    assert "remove-cell" in tags(cells[1])
    assert "hide-input" in tags(cells[2])
    head, rest = cells[3], cells[4]  # the set-up cell split: imports hidden, the knobs visible with the output
    assert "".join(head["source"]).startswith("import numpy") and "import tqdm.auto" in "".join(head["source"])
    assert "hide-input" in tags(head) and not head["outputs"] and head["id"] == "x-imports"
    assert "".join(rest["source"]).startswith("# the knobs") and rest["outputs"] == [out] and not tags(rest)
    assert "hide-input" in tags(cells[5]), "an import-only cell"
    assert "hide-input" in tags(cells[6]) and "hide-input" in tags(cells[7]), "table formatting"
    assert not tags(cells[8]), "table2 computes the table: visible"
    assert not tags(cells[9]), "a computation: visible"
    assert cells[10] == nb["cells"][9], "a verdict cell is never touched"
    assert "".join("".join(c["source"]) for c in cells[3:5]).replace("\n", "") == SETUP.replace("\n", "")
    again = tag_cells.tagged({"cells": cells}, "03_x")
    assert again["cells"] == cells, "a second run changes nothing"
    assert tag_cells.tagged(nb, "99_board") == nb, "the scoreboard is left to the build"


def test_every_notebook_stores_its_tags():
    """tools/tag_cells.py has been run on every notebook (run it again after adding or editing one)."""
    assert tag_cells.main(["--check"]) == 0


def test_the_build_adds_only_what_depends_on_the_run():
    nb = {"cells": [md("# T"), code('profile = "ci"', ["injected-parameters"]), code("import x", ["hide-input"]),
                    code("x = 1")]}  # fmt: skip
    cells = book_pages.reader_cells(nb, "03_x")["cells"]
    assert [tags(c) for c in cells[1:]] == [["injected-parameters", "remove-cell"], ["hide-input"], []]


def test_the_scoreboard_shows_no_input():
    table = {"output_type": "execute_result", "data": {"text/html": "<table></table>"}}
    printed = {"output_type": "stream", "name": "stdout", "text": '{"claims": 3}'}
    nb = {
        "cells": [
            md("# Board"),
            code("board = load()"),
            code("board", outputs=[table]),
            code("check()", outputs=[printed]),
        ]
    }
    cells = book_pages.reader_cells(nb, "99_scoreboard")["cells"]
    assert [tags(c) for c in cells[1:]] == [["remove-cell"], ["remove-input"], ["remove-cell"]]


def test_the_run_note_follows_the_title():
    nb = {"cells": [code("x = 1"), md("# Title"), md("text")]}
    note = book_pages.run_note("default", 278.4, "2 CPU cores (Xeon)", "2026-12-01", 2)
    out = book_pages.with_run_note(nb, note)
    assert out["cells"][2]["source"] == note and len(nb["cells"]) == 3
    assert "4 min 38 s" in note and "2 CPU cores (Xeon)" in note and "1 other chapter" in note
    assert book_pages.duration(42.2) == "42 s"


def test_raw_tex_in_page_text_is_found():
    page = """<html><head><script>var a = "$x$";</script></head><body>
    <p>Rendered: <span class="math notranslate nohighlight">\\(\\mathbb{E}\\lambda\\)</span>.</p>
    <div class="highlight"><pre>cost = "$5"</pre></div><code>\\mathbb</code>
    <blockquote><p>raw $$\\mathbb{E}_{x}$$ here</p></blockquote><td>$|\\lambda|\\beta$</td></body></html>"""
    found = check_pages.raw_tex(page)
    assert len([f for f in found if "'$'" in f]) == 4 + 2  # four in the blockquote, two in the table cell
    assert any("\\\\mathbb" in f for f in found) and any("\\\\lambda" in f for f in found)
    clean = '<p>Price of a <span class="math">\\(\\lambda\\)</span> is shown.</p><pre>$ ls</pre>'
    assert check_pages.raw_tex(clean) == []


def test_warnings_and_stderr_in_outputs_are_found():
    nb = {"cells": [
        code("a", outputs=[{"output_type": "stream", "name": "stderr", "text": "Loading weights: 100%|##| 3/3"}]),
        code("b", outputs=[{"output_type": "stream", "name": "stdout",
                            "text": ["ok\n", "/x/y.py:3: FutureWarning: `a` is deprecated\n"]}]),
        code("c", outputs=[{"output_type": "display_data", "data": {"text/plain": "50%|█████     | 1/2 [00:01<00:01, 1.2it/s]"}}]),
        code("d", outputs=[{"output_type": "stream", "name": "stdout", "text": "a warning-free line\n"}]),
        md("FutureWarning in prose is not an output"),
    ]}  # fmt: skip
    found = check_pages.output_problems(nb)
    assert len(found) == 2, "stderr is MyST-NB's to report (nb_output_stderr)"
    assert "FutureWarning" in found[0] and "progress" in found[1]


def test_myst_nb_reports_stderr_outputs_as_warnings():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]
    assert config["config"]["nb_output_stderr"] == "warn"
    assert "sphinx_proof" in config["extra_extensions"]


def test_the_checker_fails_the_build(tmp_path):
    site, nbs = tmp_path / "html", tmp_path / "nbs"
    site.mkdir()
    nbs.mkdir()
    (site / "page.html").write_text("<p>fine</p>")
    (nbs / "a.ipynb").write_text('{"cells": []}')
    assert check_pages.main([str(site), str(nbs)]) == 0
    (site / "bad.html").write_text("<p>$x$</p>")
    assert check_pages.main([str(site), str(nbs)]) == 1
    assert check_pages.main([str(site / "missing"), str(nbs)]) == 2


def test_dead_links_to_sections_are_found(tmp_path):
    site = tmp_path / "html"
    (site / "notebooks").mkdir(parents=True)
    chapter = site / "notebooks" / "07_x.html"
    chapter.write_text('<section id="table-1"><span id="vit-table-1"></span><h2>Table 1</h2></section>')
    board = site / "notebooks" / "99_board.html"
    board.write_text(
        '<a href="07_x.html#vit-table-1">ok</a><a href="#top">self</a><a href="https://x.org/#a">out</a>'
        '<a href="../index.html#x">no page</a><a href="07_x.html#table-one">moved</a><p id="top"></p>'
    )
    found = check_pages.dead_anchors(site, [chapter, board])
    assert len(found) == 2
    assert "no page index.html" in found[0] and "has no id 'table-one'" in found[1]
