"""Figures generated, never typed (issue 12): every measured figure in the
README, docs/ and the board pages is written by `make bench` from
docs/figures.json (tools/figures.py), between `<!-- figures:NAME -->` and
`<!-- /figures -->` markers, or on a page it writes whole
(docs/benchmarks.md). These tests fail when a page disagrees with the
committed figures, when a required block is gone, or when a measured-looking
figure is typed outside the markers. No broker; one short MicroPython run
checks the formula api.md gives against the code."""
import json
import shutil
import sys

import pytest

from conftest import ROOT, run_mp

sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tools" / "bench"))
import figures  # noqa: E402
import report  # noqa: E402


@pytest.fixture(scope="module")
def fig():
    return figures.load()


def test_figures_json_holds_every_part(fig):
    for part in ("machine", "clients64", "heap64", "configs64", "paths", "flash", "boards", "mpy", "api"):
        assert fig.get(part), "docs/figures.json has no %r: run `make bench`" % part
    assert fig.get("b32") or fig.get("b32_note"), "neither 32-bit figures nor the note that they were skipped"
    for c in fig["constants"]["clients"]:
        assert c in fig["clients64"], c


def test_pages_agree_with_the_committed_figures(fig):
    problems = figures.check(fig)
    assert not problems, "\n".join(problems) + "\n(run `python3 tools/figures.py`, or `make bench`)"


def test_every_page_keeps_its_required_blocks():
    for rel, names in figures.REQUIRED.items():
        have = figures.blocks((ROOT / rel).read_text())
        missing = [n for n in names if n not in have]
        assert not missing, "%s lost its marked blocks %s" % (rel, missing)


def test_no_measured_figure_typed_outside_the_markers():
    found = figures.lint()
    assert not found, "figures typed outside markers (move them into a block of tools/figures.py):\n" + \
        "\n".join("%s:%d: %s: %s" % f for f in found)


def test_a_changed_figure_is_caught(fig, tmp_path):
    for rel in figures.PAGES + list(figures.WHOLE):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    assert figures.check(fig, tmp_path) == []
    readme = tmp_path / "README.md"
    text = readme.read_text()
    start = text.index("<!-- figures:readme-table -->")
    i = start + next(k for k, ch in enumerate(text[start + 30:]) if ch.isdigit()) + 30
    readme.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])
    assert any("readme-table" in p for p in figures.check(fig, tmp_path))
    # writing the pages again mends it
    figures.write(fig, tmp_path)
    assert figures.check(fig, tmp_path) == []


def test_the_lint_sees_a_typed_figure(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Intro.\n\n<!-- figures:x -->0.05 erases per message<!-- /figures -->\n\n"
                    "The ring costs 0.04 erases per message.\n\n```\n3.2 erases in a code block\n```\n")
    found = figures.lint(tmp_path, ["page.md"])
    assert [(line, what) for _, line, what, _ in found] == [(5, "flash wear per message")]


def test_rendering_is_a_pure_function_of_the_figures(fig):
    again = json.loads(json.dumps(fig))
    assert report.page(again) == report.page(fig)
    text = (ROOT / "README.md").read_text()
    assert figures.render(figures.render(text, fig), fig) == figures.render(text, fig)


def test_api_outbox_bytes_formula_is_the_codes(fig):
    # the committed figures were measured from the code ...
    for name, d in fig["api"].items():
        if isinstance(d, dict) and "kw" in d:
            assert report.outbox_formula(d["kw"]) == d["outbox_bytes"], (name, d)
    # ... and the code still computes what api.md states
    cases = [{}, {"buf_size": 256, "max_inflight": 4, "receive_max": 4}, {"buf_size": 4096},
             {"max_inflight": 2, "outbox_size": 0}, {"max_inflight": 100, "outbox_size": 100}]
    r = run_mp("from durable_mqtt import MQTTClient\nimport json\nprint(json.dumps([len(MQTTClient('x', '127.0.0.1', "
               "**kw).engine.arena) for kw in %s]))" % json.dumps(cases))
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == [report.outbox_formula(kw) for kw in cases]
