"""README is the door and docs/ the house: every page linked, every table true to the tree,
every number quoted from the code or the front matter checked against it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import COURSE, REPO

from cnn_course import data, settings
from cnn_course_instructor.grading import (
    budgets,
    job,
    judge,
    kernel,
    local,
    rebuild,
    registry,
    submissions,
    worker,
)
from cnn_course_instructor.sandbox import leases, spec

DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ROW = re.compile(r"^\| `([^`]+)` \|", re.MULTILINE)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _anchors(path: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    headings = re.findall(r"^#+ (.+)$", _text(path), re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).strip().replace(" ", "-")
        for heading in headings
    }


def test_the_readme_is_short_and_links_every_docs_page():
    assert len(_text(README).splitlines()) <= 150
    linked = {target for target in LINK.findall(_text(README)) if target.startswith("docs/")}
    assert {f"docs/{page.name}" for page in PAGES} <= linked
    assert len(PAGES) >= 9


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_every_local_link_and_anchor_leads_somewhere(page):
    for target in LINK.findall(_text(page)):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        assert found.exists(), f"{page.name}: {target} leads nowhere"
        if anchor:
            assert anchor in _anchors(found), f"{page.name}: no heading #{anchor} in {path}"


def _tracked_top() -> set[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked tree is unknown")
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {path.split("/")[0] for path in [*listed, *untracked]}


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_layout_table_is_the_top_of_the_tree():
    listed = {path.rstrip("/") for path in ROW.findall(_section(_text(README), "Layout"))}
    top = _tracked_top() - {"README.md", ".gitignore"}
    assert listed == top


def _modules() -> set[str]:
    found = set()
    for package in ("cnn_course", "cnn_course_instructor", "autograder"):
        for path in (REPO / package).rglob("*.py"):
            if "templates" not in path.parts and "__pycache__" not in path.parts:
                found.add(path.relative_to(REPO).as_posix())
    return found


def test_the_module_map_lists_every_module_and_nothing_that_is_gone():
    rows = ROW.findall(_text(DOCS / "layout.md"))
    labs = list(COURSE.labs)
    listed = set()
    for row in rows:
        if "<lab>" in row:
            matched = {row.replace("<lab>", lab) for lab in labs} & _modules()
            assert matched, f"docs/layout.md: {row} is no module of any lab"
            listed |= matched
        else:
            assert (REPO / row).is_file(), f"docs/layout.md lists {row}, which is gone"
            listed.add(row)
    assert _modules() - listed == set(), "modules docs/layout.md does not list"


def test_every_command_the_readme_shows_exists():
    from cnn_course_instructor.cli import _parser

    choices = next(
        action.choices for action in _parser()._actions if getattr(action, "choices", None)
    )
    shown = set(re.findall(r"^cnn-course ([a-z-]+)", _text(README), re.MULTILINE))
    assert shown and shown <= set(choices), shown - set(choices)


MB = 1024 * 1024
LIMITS = spec.Limits()

# Each number the docs quote from the code: the page, the sentence as the page writes it with
# the value in braces, and the value the code holds.
FACTS = [
    ("grading.md", "`--cell-timeout` (default {})", job.CELL_TIMEOUT),
    ("running-a-class.md", "[--cell-timeout {}]", job.CELL_TIMEOUT),
    ("grading.md", "any cell after {} times as", budgets.WALL_FACTOR),
    ("grading.md", "get {} s of own time in all", worker.NOTEBOOK_BUDGET),
    ("grading.md", "nor answers for {} s of its", int(budgets.START_IDLE)),
    ("grading.md", "after a grace of {} s", int(budgets.INTERRUPT_GRACE)),
    ("grading.md", "tried\n  {} times", worker.START_TRIES),
    ("grading.md", "safety net, {} s for one", local.SUBMISSION_TIMEOUT),
    ("grading.md", "evaluated on {} training images", registry.GRADING_IMAGES),
    ("grading.md", "may use {} s of\nCPU", judge.JUDGE_CPU_SECONDS),
    ("grading.md", "({:,} values in one layer's", rebuild.LAYER_BUDGET),
    ("grading.md", "per image, {:,} in all", rebuild.ACTIVATION_BUDGET),
    ("grading.md", "in all, {:,} multiply-adds", rebuild.COMPUTE_BUDGET),
    ("grading.md", "per image, {:,} parameters)", rebuild.PARAMETER_BUDGET),
    ("grading.md", "first {} images", data.GRADING_TEST_IMAGES),
    ("grading.md", "at most {} MB, read back", worker.RECORD_LIMIT // 1_000_000),
    ("grading.md", "One cap of {:,} bytes", kernel.OUTPUT_LIMIT),
    ("grading.md", "is at most {:,} bytes. A submission", kernel.EXECUTED_LIMIT),
    ("grading.md", "A submission is\nat most {:,} bytes", submissions.SUBMISSION_LIMIT),
    ("sandbox.md", "regular files of {:,} bytes", submissions.SUBMISSION_LIMIT),
    ("sandbox.md", "{} MB of address space", LIMITS.memory_mb),
    ("sandbox.md", "{} s of CPU,\n256", LIMITS.cpu_seconds),
    ("sandbox.md", "{} processes and threads", LIMITS.processes),
    ("sandbox.md", "{} MB per file", LIMITS.file_mb),
    ("sandbox.md", "`/home/student` ({} MB)", LIMITS.home_mb),
    ("sandbox.md", "`/dev/shm` ({} MB each)", LIMITS.tmp_mb),
    ("sandbox.md", "`/run/kernel` ({} MB:", LIMITS.run_mb),
    ("sandbox.md", "memory limit of {} MB", LIMITS.total_memory_mb),
    ("sandbox.md", "OOM score of {} that", LIMITS.oom_score_adj),
    ("sandbox.md", "(uids {} to", leases.UID_BASE),
    ("sandbox.md", "to {}, one lock", leases.UID_BASE + leases.UID_COUNT - 1),
    ("sandbox.md", "file each in `{}`", leases.LEASE_DIR),
    ("sandbox.md", "read-only; {} MB, ", worker.JUDGE_LIMITS.memory_mb),
    ("sandbox.md", "MB, {} s of CPU; ", worker.JUDGE_LIMITS.cpu_seconds),
    ("sandbox.md", "{} s to answer", worker.JUDGE_TIMEOUT),
    ("sandbox.md", "user `student`\n  (uid {})", spec.INNER_UID),
    ("sandbox.md", "home and working folder\n  `{}`", settings.SANDBOX_HOME),
    ("data.md", "**`{}`**", settings.DATA_ENV),
    ("students.md", "`{}=cpu`", settings.DEVICE_ENV),
    ("students.md", "`{}=1`", settings.WIDGETS_ENV),
    ("grading.md", "(`{}=1`)", settings.FAST_ENV),
    ("grading.md", "(`{}=1`:", settings.GRADING_ENV),
]


@pytest.mark.parametrize("page, sentence, value", FACTS, ids=lambda x: str(x)[:40])
def test_each_number_the_docs_quote_is_the_code_s(page, sentence, value):
    assert sentence.format(value) in _text(DOCS / page), f"docs/{page}: {sentence.format(value)!r}"


def test_the_load_the_docs_quote_is_the_load_test_s():
    from test_load import OVERSUBSCRIBED

    for page in ("grading.md", "running-a-class.md"):
        assert f"with {OVERSUBSCRIBED} busy processes per\n" in _text(DOCS / page) or (
            f"with {OVERSUBSCRIBED} busy processes per core" in _text(DOCS / page)
        )


def test_the_front_matter_example_is_cut_from_the_lab_s_source():
    """Each line of docs/authoring.md's front matter example is a line of source/cnn_lab.md."""
    example = _text(DOCS / "authoring.md").split("```yaml\n", 1)[1].split("```", 1)[0]
    source = {line.strip() for line in _text(REPO / "source" / "cnn_lab.md").splitlines()}
    lines = [line.split(" #", 1)[0].strip() for line in example.splitlines()]
    assert len(lines) > 8
    for line in filter(None, lines):
        assert line in source, f"docs/authoring.md: {line!r} is not in source/cnn_lab.md"
