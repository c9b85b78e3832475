"""The documentation holds together: README.md stays a front page, and every relative link and
image in README.md, docs/*.md and the plans' READMEs points at a file (and heading) that exists.
Also: the README keeps CI's test command and the results-table markers, and the plans the
shipped-plans table names are the ones in plans/shipped/, found by name."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 160
SCREENSHOT = ROOT / "docs" / "images" / "compare_tab.png"
SCREENSHOT_MAX_BYTES = 300_000
TEST_COMMAND = "python -m pip install -r requirements.txt && python -m pytest     # the tests"
DEMO_COMMAND = "python -m pip install -r requirements.txt && python demo/app.py   # the demo, on the shipped models"


def documents() -> list[pathlib.Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "plans").rglob("README.md"))]


FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The Markdown without fenced code blocks and code spans (no links live there)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: pathlib.Path) -> list[str]:
    text = prose(path.read_text(encoding="utf-8"))
    return LINK.findall(text) + HTML_SRC.findall(text)


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I))  # http:, https:, mailto:


def anchors(path: pathlib.Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_the_documents_exist():
    names = {p.relative_to(ROOT).as_posix() for p in documents()}
    for name in ("README.md", "docs/data.md", "docs/training.md", "docs/package.md", "docs/benchmarks.md",
                 "docs/demo.md", "docs/distributed_training.md", "plans/shipped/README.md"):
        assert name in names, name


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_keeps_the_set_up_commands_ci_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert DEMO_COMMAND in lines and TEST_COMMAND in lines
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\npython -m pytest\n" in ci  # .ci/run runs exactly the README's test command


def test_readme_results_table_sits_between_its_markers():
    lines = README.read_text(encoding="utf-8").splitlines()
    start, end = lines.index("<!-- results-table:start -->"), lines.index("<!-- results-table:end -->")
    assert lines.count("<!-- results-table:start -->") == 1 and lines.count("<!-- results-table:end -->") == 1
    table = [line for line in lines[start + 1:end] if line.strip()]
    assert table and all(line.startswith("|") for line in table), table
    assert table[0].startswith("| model | PrivateTest acc.") and re.fullmatch(r"(\|---)+\|", table[1])
    assert len(table) >= 3
    caveat = " ".join(lines[:start])
    assert "weights=None" in caveat and "6 classes" in caveat and "7 classes" in caveat


@pytest.mark.parametrize("document", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_image_exists(document):
    missing = []
    for target in links(document):
        if is_external(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if not resolved.exists():
            missing.append(target)
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            missing.append(f"{target} (no such heading)")
    assert not missing, f"{document.relative_to(ROOT)}: {missing}"


def test_the_readme_shows_the_compare_tab_screenshot():
    assert "](docs/images/compare_tab.png)" in README.read_text(encoding="utf-8")
    assert 20_000 < SCREENSHOT.stat().st_size < SCREENSHOT_MAX_BYTES, SCREENSHOT.stat().st_size
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_link_checker_sees_links_and_headings(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A `code` title\n\n## Limits and hardening\n\n[x](other.md#part) ![y](img/a.png) "
                    "`[not](a-link.md)`\n\n```\n[nor](this.md)\n```\n[web](https://example.org)\n")
    assert links(page) == ["other.md#part", "img/a.png", "https://example.org"]
    assert anchors(page) == {"a-code-title", "limits-and-hardening"}


# ----------------------------------------------------------------------------- plans


def shipped_table() -> list[str]:
    text = (ROOT / "plans" / "shipped" / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^\| \d+ \| \[`([\w.]+\.yaml)`\]", text, re.M)


def test_the_shipped_plans_table_names_every_shipped_plan():
    in_folder = sorted(p.name for p in (ROOT / "plans" / "shipped").glob("*.y*ml"))
    assert sorted(shipped_table()) == in_folder
    assert {"cpu.yaml", "cpu_continue.yaml", "cpu_deep_cnns.yaml"} <= set(in_folder)
    assert not set(in_folder) & {p.name for p in (ROOT / "plans").glob("*.y*ml")}, "a plan in two places"


def test_plans_are_found_by_name_in_plans_and_its_subfolders():
    from fer_utils.batch import PlanError, find_plan, shipped_plans

    assert find_plan("smoke") == ROOT / "plans" / "smoke.yaml"
    assert find_plan("paper") == ROOT / "plans" / "paper.yaml"
    for name in shipped_table():
        assert find_plan(name.rsplit(".", 1)[0]) == ROOT / "plans" / "shipped" / name
    assert find_plan("cpu_second_cnn") == ROOT / "plans" / "superseded" / "cpu_second_cnn.yaml"
    assert {"cpu", "cpu_deep_cnns", "cpu_second_cnn", "paper", "smoke"} <= set(shipped_plans())
    with pytest.raises(PlanError, match=r"the plan 'cpu' is plans/shipped/cpu\.yaml"):
        find_plan("plans/cpu.yaml")  # the old path names the new one
    with pytest.raises(PlanError, match="no plan 'cpu_thrid_stage': give a file path or one of cpu, "):
        find_plan("cpu_thrid_stage")


def test_a_plan_name_two_subfolders_share_is_an_error(tmp_path, monkeypatch):
    from fer_utils import batch

    for folder in ("plans/a", "plans/b"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "twin.yaml").write_text("notebooks: [{notebook: 00_data_exploration}]\n")
    monkeypatch.setattr(batch, "project_root", lambda: tmp_path)
    with pytest.raises(batch.PlanError, match=r"'twin' is ambiguous: plans/a/twin\.yaml, plans/b/twin\.yaml"):
        batch.find_plan("twin")
    assert batch.shipped_plans() == ["twin"]
