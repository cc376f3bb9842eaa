"""`cnn-course new-lab`: a skeleton lab that builds, checks and grades as it is written."""

from __future__ import annotations

import ast
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import copy_of_the_course

from cnn_course.errors import CourseError
from cnn_course.labs import read_front_matter
from cnn_course_instructor.cli import main
from cnn_course_instructor.newlab import FILES, new_lab

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course repository's folders, empty: where new-lab writes."""
    (tmp_path / "cnn_course" / "labs").mkdir(parents=True)
    return tmp_path


def test_new_lab_writes_each_file_of_a_lab_in_its_own_folders(course):
    written = new_lab(course, "rnn_lab", "Recurrent networks")
    assert sorted(p.relative_to(course).as_posix() for p in written) == sorted(
        path.format(lab="rnn_lab") for path in FILES.values()
    )
    for path in written:
        if path.suffix == ".py":
            ast.parse(path.read_text(), filename=str(path))  # each is Python
    lab = read_front_matter(course / "source" / "rnn_lab.md")
    assert (lab.id, lab.title, list(lab.graded)) == ("rnn_lab", "Recurrent networks", ["q1_scale"])
    assert (
        "from cnn_course.labs.rnn_lab import checks"
        in (course / "source" / "rnn_lab.md").read_text()
    )
    assert [p.name for p in course.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_title_with_quotes_colons_and_backslashes_is_kept_exactly(course):
    title = 'Nets: "deep" & <wide> \\ it\'s """'
    written = new_lab(course, "odd_lab", title)
    for path in written:
        if path.suffix == ".py":
            ast.parse(path.read_text(), filename=str(path))
    assert read_front_matter(course / "source" / "odd_lab.md").title == title


@pytest.mark.parametrize("title", ["", "  ", "two\nlines", "x" * 101])
def test_a_title_that_is_not_one_short_line_is_refused(course, title):
    with pytest.raises(CourseError, match="title"):
        new_lab(course, "rnn_lab", title)
    assert sorted(p.name for p in course.iterdir()) == ["cnn_course"]


@pytest.mark.parametrize("name", ["RnnLab", "1lab", "rnn-lab", "rnn lab", "../escape", ""])
def test_new_lab_refuses_a_name_that_is_not_a_lab_id_and_writes_nothing(course, name):
    with pytest.raises(CourseError, match="lower_snake_case"):
        new_lab(course, name)
    assert sorted(p.name for p in course.iterdir()) == ["cnn_course"]


def test_new_lab_refuses_a_lab_that_exists_and_leaves_its_files_as_they_were(course):
    (course / "source").mkdir()
    (course / "source" / "cnn_lab.md").write_text("my lab")
    with pytest.raises(CourseError, match="exists already.*source/cnn_lab.md"):
        new_lab(course, "cnn_lab")
    assert (course / "source" / "cnn_lab.md").read_text() == "my lab"
    assert not (course / "autograder").exists()


def test_new_lab_outside_a_course_says_where_to_run_it(tmp_path, capsys):
    assert main(["new-lab", "rnn_lab", "--repo", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no cnn_course/labs/ folder" in error and "--repo" in error
    assert list(tmp_path.iterdir()) == []


def test_the_cli_prints_the_files_written_and_what_to_run_next(course, capsys):
    assert main(["new-lab", "rnn_lab", "--repo", str(course)]) == 0
    printed = capsys.readouterr().out
    assert "source/rnn_lab.md" in printed and "autograder/rnn_lab/corpus.py" in printed
    assert "cnn-course corpus --lab rnn_lab" in printed


@pytest.mark.stress
def test_a_new_lab_builds_and_its_corpus_grades_as_expected_in_a_copy_of_the_course(real_root):
    """In a copy of the course under the system temp folder, with its own venv: new-lab, then
    build (student and solution notebooks), then the real grader on the skeleton's corpus (the
    solution gets its points, the untouched stub and a mistake lose theirs)."""
    with tempfile.TemporaryDirectory(prefix="cnn-course-new-lab-") as folder:
        clone, python = copy_of_the_course(Path(folder))
        env = {**os.environ, "CNN_COURSE_DATA": str(real_root), "PYTHONPATH": ""}

        def cli(*argv: str) -> subprocess.CompletedProcess:
            command = [str(python), "-m", "cnn_course_instructor", *argv]
            done = subprocess.run(
                command, cwd=clone, env=env, capture_output=True, text=True, timeout=900
            )
            assert done.returncode == 0, done.stdout + done.stderr
            return done

        cli("new-lab", "demo_lab", "--title", "A demo lab")
        cli("build")
        for kind in ("student", "solution"):
            assert (clone / "notebooks" / kind / "demo_lab.ipynb").is_file()
        graded = cli("corpus", "--lab", "demo_lab")
        assert "3 submissions" in graded.stdout and "all scores as expected" in graded.stdout
