"""Tests of cnn_course_instructor.build: markers, facts, nbgrader metadata, goldens, drift, leaks."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import REPO, searchable_text

from cnn_course import labs
from cnn_course.errors import CourseError
from cnn_course_instructor import build

SAMPLE = Path(__file__).parent / "samples" / "build_repo"
GOLDENS = Path(__file__).parent / "goldens" / "build"


@pytest.fixture(scope="module")
def sample_repo(tmp_path_factory) -> Path:
    """A copy of the sample course repository, built once for the module."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(SAMPLE, repo, dirs_exist_ok=True)
    build.build(repo)
    return repo


# --- step 2: regions ------------------------------------------------------------------------


def test_regions_are_found_with_their_marker_lines():
    """Are regions reported as (start, end) marker line numbers, indented ones included?"""
    source = "a = 1\n# --- START CODE HERE\nb = 2\n# --- END CODE HERE\n    # --- START CODE HERE\n    # --- END CODE HERE"
    assert build.find_regions(source) == [(1, 3), (4, 5)]
    assert build.find_regions("print('no markers')") == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("# --- START CODE HERE\n# --- START CODE HERE\n# --- END CODE HERE", "cannot be nested"),
        ("x = 1\n# --- START CODE HERE\ny = 2", "line 2: START marker with no END"),
        ("# --- END CODE HERE", "line 1: an END marker with no START"),
        ("x = 1  # --- START CODE HERE\n# --- END CODE HERE", "must stand alone on its line"),
        ("# --- START CODE HERE!\n# --- END CODE HERE", "must stand alone on its line"),
    ],
    ids=["nested", "unterminated", "unopened", "inline", "misspelt"],
)
def test_bad_regions_are_refused_with_the_line(source, message):
    """Are nested, unterminated, unopened and inline markers refused, naming the line?"""
    with pytest.raises(CourseError, match=message):
        build.find_regions(source, "lab.md, cell 3")


# --- step 3: marking ------------------------------------------------------------------------


def test_marking_unlocks_answers_and_locks_everything_else():
    """Do region cells become nbgrader solution cells named by their question, others locked?"""
    notebook = build.read_source(SAMPLE / "source" / "sample_lab.md")
    marked = build.mark_cells(notebook, "source/sample_lab.md")
    meta = [cell.metadata["nbgrader"] for cell in marked.cells]
    by_id = {m["grade_id"]: m for m in meta}
    assert by_id["q1_double"]["solution"] and not by_id["q1_double"]["locked"]
    assert by_id["exercise_2"]["solution"]
    assert by_id["q2_explain"] == {
        **by_id["q2_explain"],
        "grade": True,
        "points": 1,
        "solution": True,
    }
    locked = [m for m in meta if not m["solution"]]
    assert locked and all(m["locked"] for m in locked)
    ids = [cell["id"] for cell in marked.cells]
    assert ids[:6] == ["cell-01", "cell-02", "cell-03", "cell-04", "cell-05", "q1-double"]
    assert "question" not in marked.cells[5].metadata


def _notebook(cells, questions) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["cnn_course"] = {"questions": questions}
    notebook.cells = cells
    return notebook


def test_marking_refuses_undeclared_unused_and_misplaced_questions():
    """Are an undeclared question, a declared one without a cell and markers in prose refused?"""
    region = "# --- START CODE HERE\nx = 1\n# --- END CODE HERE"
    undeclared = nbformat.v4.new_code_cell(region, metadata={"question": "q9"})
    with pytest.raises(CourseError, match="'q9' is not declared"):
        build.mark_cells(_notebook([undeclared], {"q1": {"points": 1}}), "lab.md")
    with pytest.raises(CourseError, match="declared questions without a cell: q2"):
        build.mark_cells(
            _notebook([nbformat.v4.new_code_cell(region)], {"q2": {"points": 1}}), "lab.md"
        )
    prose = nbformat.v4.new_markdown_cell("Write between # --- START CODE HERE and the end.")
    with pytest.raises(CourseError, match="cell 1: solution markers appear in a markdown cell"):
        build.mark_cells(_notebook([prose], {}), "lab.md")
    no_region = nbformat.v4.new_code_cell("x = 1", metadata={"question": "q1"})
    with pytest.raises(CourseError, match="'q1' is on a cell without markers"):
        build.mark_cells(_notebook([no_region], {"q1": {"points": 1}}), "lab.md")


def test_front_matter_without_questions_is_explained(tmp_path):
    """Is a source without the questions table refused with an example of what to write?"""
    path = tmp_path / "lab.md"
    path.write_text("---\njupytext:\n  text_representation:\n    format_name: myst\n---\n\n# Lab\n")
    with pytest.raises(CourseError, match="no `cnn_course:` table"):
        build.read_source(path)


@pytest.mark.parametrize(
    "questions, message",
    [
        ({"q1_a": {"exercise": 2}}, "q1_a is exercise 2: its id must say the same number"),
        ({"q2_a": {"exercise": 2}, "q1_b": {"exercise": 1}}, "in the order of their exercises"),
        ({"q1_a": {"exercise": 1}, "q2_b": {"exercise": 1}}, "share an exercise number"),
    ],
)
def test_question_ids_and_exercise_numbers_must_agree(questions, message):
    """Is a front matter whose ids, exercise numbers and order disagree refused, with the id?"""
    table = {key: {**spec, "title": "t", "points": 1} for key, spec in questions.items()}
    with pytest.raises(CourseError, match=message):
        labs.Lab.from_dict({"assignment": "lab", "title": "Lab", "questions": table})


def test_a_subset_trains_on_its_first_fast_size_images_in_shortened_mode(tmp_path, monkeypatch):
    """Does ``fast_size`` give the shortened run (and the grader's retraining) the sample's first
    images, the full run all of them, survive the round trip, and refuse more than ``size``?"""
    from conftest import write_tiny_mnist

    write_tiny_mnist(tmp_path)  # 40 training images
    config = {
        "assignment": "lab",
        "title": "Lab",
        "questions": {"q1_a": {"exercise": 1, "title": "t", "points": 1}},
        "subsets": {"train": {"dataset": "mnist", "size": 30, "seed": 2, "fast_size": 12}},
    }
    lab = labs.Lab.from_dict(config)
    assert labs.Lab.from_dict(lab.to_dict()) == lab
    subset = lab.subsets["train"]
    monkeypatch.delenv("CNN_COURSE_FAST", raising=False)
    whole = subset.load(tmp_path)
    assert len(whole) == 30 and len(subset.load(tmp_path, fast=True)) == 12
    monkeypatch.setenv("CNN_COURSE_FAST", "1")
    short = subset.load(tmp_path)
    assert torch.equal(short.images, whole.images[:12]) and short.indices.tolist() == (
        whole.indices[:12].tolist()
    )
    assert "its first 12 in shortened mode" in short.name
    assert len(subset.load(tmp_path, fast=False)) == 30
    config["subsets"]["train"]["fast_size"] = 31
    with pytest.raises(CourseError, match="subset train: fast_size exceeds size"):
        labs.Lab.from_dict(config)


def test_every_lab_of_the_course_numbers_its_questions_as_its_exercises():
    """Does each question id of the course's labs carry its exercise number, in order?"""
    for source in sorted((REPO / "source").glob("*.md")):
        lab = build.read_lab(source)
        numbered = [(q.id.split("_")[0], q.exercise) for q in lab.questions.values()]
        assert all(prefix == f"q{number}" for prefix, number in numbered), (source, numbered)


def test_every_exercise_heading_of_the_course_gives_its_points():
    """Does each exercise's heading, in every lab's student notebook, give its points, as the
    introductions promise (part 2's once did not)?"""
    for source in sorted((REPO / "source").glob("*.md")):
        lab = build.read_lab(source)
        student = nbformat.read(REPO / "notebooks" / "student" / f"{source.stem}.ipynb", 4)
        headings = [
            line
            for cell in student.cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("#") and "Exercise" in line
        ]
        for question in lab.questions.values():
            expected = f"{question.label} (points: {question.points:g}"
            assert any(expected in heading for heading in headings), (source.name, expected)


# --- step 4 and 5: nbgrader and the written forms -------------------------------------------


def test_student_stub_keeps_markers_and_indentation(sample_repo):
    """Is each region replaced by nbgrader with an indented stub keeping both markers?"""
    student = nbformat.read(sample_repo / "notebooks/student/sample_lab.ipynb", as_version=4)
    sources = [cell.source for cell in student.cells]
    double = next(source for source in sources if source.startswith("def double"))
    assert double.split("\n")[2:5] == [
        "    # --- START CODE HERE",
        '    raise NotImplementedError("Replace this line with your code")',
        "    # --- END CODE HERE",
    ]
    loop = next(source for source in sources if source.startswith("for value"))
    assert "        # --- START CODE HERE\n        raise NotImplementedError(" in loop
    assert build.ANSWER_STUB in sources


def test_every_generated_notebook_says_where_it_comes_from(sample_repo):
    """Does each generated file open with a cell naming its source and forbidding hand edits?"""
    for relative in ("student/sample_lab.ipynb", "solution/sample_lab.ipynb"):
        notebook = nbformat.read(sample_repo / "notebooks" / relative, as_version=4)
        first = notebook.cells[0].source
        assert "generated from `source/sample_lab.md`" in first and "Do not edit" in first
        assert notebook.metadata["cnn_course"]["source"] == "source/sample_lab.md"
    text = (sample_repo / "notebooks/student/sample_lab.md").read_text()
    assert "generated from `source/sample_lab.md`" in text
    assert "jupytext_version: " not in text


def test_solution_notebook_keeps_the_solutions_and_title(sample_repo):
    """Does the solution notebook keep the code regions and say it is the solution?"""
    solution = nbformat.read(sample_repo / "notebooks/solution/sample_lab.ipynb", as_version=4)
    assert any("secret_result = x * factor" in cell.source for cell in solution.cells)
    assert solution.metadata["nbhosting"]["title"] == "Sample lab (solution)"


def _normalised(path: Path) -> str:
    """File text with cell ids removed (ids are not part of the comparison)."""
    if path.suffix != ".ipynb":
        return path.read_text()
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        cell.pop("id", None)
    return json.dumps(notebook, indent=1, sort_keys=True)


def test_build_matches_the_goldens(sample_repo, request):
    """Does the sample source build to the committed golden files (cell ids ignored)?"""
    built = sorted((sample_repo / "notebooks").rglob("*.*"))
    assert [p.relative_to(sample_repo).as_posix() for p in built] == [
        "notebooks/solution/sample_lab.ipynb",
        "notebooks/student/sample_lab.ipynb",
        "notebooks/student/sample_lab.md",
    ]
    if request.config.getoption("--update-goldens"):
        shutil.rmtree(GOLDENS, ignore_errors=True)
        for path in built:
            target = GOLDENS / path.relative_to(sample_repo / "notebooks")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    for path in built:
        golden = GOLDENS / path.relative_to(sample_repo / "notebooks")
        assert golden.is_file(), f"no golden for {golden}; run pytest --update-goldens"
        assert _normalised(path) == _normalised(golden), f"{path.name} differs from its golden"


def test_building_twice_gives_identical_bytes(sample_repo):
    """Is the build deterministic, byte for byte?"""
    before = {p: p.read_bytes() for p in (sample_repo / "notebooks").rglob("*.*")}
    build.build(sample_repo)
    assert {p: p.read_bytes() for p in (sample_repo / "notebooks").rglob("*.*")} == before
    assert build.check_build(sample_repo) == []


def test_check_reports_edited_missing_and_stale_files(tmp_path):
    """Does --check name a hand-edited, a deleted and a stale generated file?"""
    shutil.copytree(SAMPLE, tmp_path, dirs_exist_ok=True)
    build.build(tmp_path)
    student = tmp_path / "notebooks/student/sample_lab.md"
    student.write_text(student.read_text().replace("A sample lab", "An edited lab"))
    (tmp_path / "notebooks/solution/sample_lab.ipynb").unlink()
    (tmp_path / "notebooks/student/old_lab.ipynb").write_text("{}")
    problems = "\n".join(build.check_build(tmp_path))
    assert "notebooks/student/sample_lab.md: differs from a fresh build" in problems
    assert "-# An edited lab" in problems and "+# A sample lab" in problems
    assert "notebooks/solution/sample_lab.ipynb: missing" in problems
    assert "notebooks/student/old_lab.ipynb: not produced by any source" in problems


def test_a_broken_source_writes_nothing(tmp_path):
    """When one source is broken, is no notebook written at all?"""
    shutil.copytree(SAMPLE, tmp_path, dirs_exist_ok=True)
    (tmp_path / "source" / "zz_broken.md").write_text(
        (SAMPLE / "source/sample_lab.md")
        .read_text()
        .replace("    # --- END CODE HERE\n    return", "    return", 1)
        .replace("assignment: sample_lab", "assignment: zz_broken")
    )
    with pytest.raises(CourseError, match="zz_broken.md, cell 6, line 3: START marker with no END"):
        build.build(tmp_path)
    assert not (tmp_path / "notebooks").exists()


def test_prose_quotes_the_grading_facts_its_hidden_tests_publish(tmp_path):
    """Does {{ grading.* }} in the prose show the public facts of the lab's contract, and the
    front matter's thresholds, and is public_facts that is not a table refused by name?"""
    shutil.copytree(SAMPLE, tmp_path, dirs_exist_ok=True)
    source = tmp_path / "source" / "sample_lab.md"
    text = source.read_text().replace(
        "# A sample lab\n",
        "# A sample lab\n\nPass {{ grading.cases }} of the cases, reach "
        "{{ grading.thresholds.mnist }}.\n",
    )
    source.write_text(
        text.replace("  training:\n", "  grading: {thresholds: {mnist: 0.5}}\n  training:\n")
    )
    grading = tmp_path / "autograder" / "sample_lab" / "__init__.py"
    contract = "probe=(DOUBLE,), inputs=grading_inputs"
    grading.write_text(
        grading.read_text().replace(contract, contract + ", public_facts={'cases': 0.75}")
    )
    build.build(tmp_path)
    built = (tmp_path / "notebooks/student/sample_lab.md").read_text()
    assert "Pass 0.75 of the cases, reach 0.5." in built
    grading.write_text(grading.read_text().replace("{'cases': 0.75}", "[0.75]"))
    for name, module in list(sys.modules.items()):  # the content is loaded once per process
        if str(getattr(module, "__file__", None)).startswith(str(tmp_path)):
            del sys.modules[name]
    with pytest.raises(CourseError, match="public_facts must be a table"):
        build.build(tmp_path)


def test_no_sources_is_explained(tmp_path):
    """Does building outside a course repository say where to run it?"""
    with pytest.raises(CourseError, match="No lab sources found.*--repo"):
        build.build(tmp_path)


# --- the real lab -----------------------------------------------------------------------------


def _student_files() -> list[Path]:
    return [p for p in sorted((REPO / "notebooks" / "student").rglob("*")) if p.is_file()]


def test_committed_notebooks_are_in_step_with_the_sources():
    """Is notebooks/ exactly what a fresh build of source/ gives (what CI's --check asserts)?"""
    assert build.check_build(REPO) == []


def _stripped_lines(path: Path) -> set[str]:
    """Every line a student file holds (cell sources of a notebook, or the text), stripped."""
    if path.suffix == ".ipynb":
        notebook = nbformat.read(path, as_version=4)
        text = "\n".join(cell.source for cell in notebook.cells)
    else:
        text = path.read_text()
    return {line.strip() for line in text.split("\n")}


def test_no_solution_line_reaches_a_student_file():
    """Does no line of any solution region appear in any file under notebooks/student/?

    A line the source also shows students outside the regions (such as ``loss.backward()``,
    given in the MNIST loop) is not a leak and is left out of the search.
    """
    files = _student_files()
    assert files, "no student files: run cnn-course build"
    texts = {path: _stripped_lines(path) for path in files}
    sources = sorted((REPO / "source").glob("*.md"))
    marked_labs = {
        source: build.mark_cells(build.read_source(source), source.name) for source in sources
    }
    # A line one lab shows outside its regions is given to every student of the course.
    given = {line.strip() for marked in marked_labs.values() for line in build.shown_lines(marked)}
    for source, marked in marked_labs.items():
        secret = {line.strip() for line in build.solution_lines(marked) if len(line.strip()) > 3}
        secret -= given
        assert len(secret) > 20
        # The search does find them where they belong: in the solution notebook.
        solution = _stripped_lines(REPO / "notebooks" / "solution" / f"{source.stem}.ipynb")
        assert secret <= solution
        for path, text in texts.items():
            leaked = sorted(secret & text)
            assert not leaked, f"{path.relative_to(REPO)} contains solution lines: {leaked[:3]}"


def test_no_autograder_code_reaches_a_student_file():
    """Does no distinctive line of autograder/ (hidden tests, references) appear in student files?

    Lines the lab itself shows students (the demo loads data as the lab does) are not secrets.
    """
    shown = {
        line.strip()
        for source in sorted((REPO / "source").glob("*.md"))
        for line in build.shown_lines(build.mark_cells(build.read_source(source), source.name))
    }
    code_lines = {
        line.strip()
        for path in (REPO / "autograder").rglob("*.py")
        for line in path.read_text().split("\n")
        if len(line.strip()) >= 30 and not line.strip().startswith(("import ", "from ", "#", '"""'))
    } - shown
    assert len(code_lines) > 100
    for path in _student_files():
        text = searchable_text(path.read_bytes())  # a notebook's cells as text, not JSON
        leaked = sorted(line for line in code_lines if line in text)
        assert not leaked, f"{path.relative_to(REPO)} contains autograder lines: {leaked[:3]}"


def test_myst_student_notebook_opens_as_the_same_notebook():
    """Does the MyST student file read back (jupytext) as the same cells as the ipynb?"""
    import jupytext

    from_md = jupytext.read(REPO / "notebooks/student/cnn_lab.md")
    from_ipynb = nbformat.read(REPO / "notebooks/student/cnn_lab.ipynb", as_version=4)
    assert [c.source for c in from_md.cells] == [c.source for c in from_ipynb.cells]
    assert from_md.metadata["nbhosting"] == from_ipynb.metadata["nbhosting"]
