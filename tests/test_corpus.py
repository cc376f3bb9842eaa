"""Each lab's sample corpus: expectations from the front matter, edits that apply or fail loudly,
and every lab's corpus graded for real (its fast samples)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from conftest import COURSE, corpus, corpus_labs, full_marks

from cnn_course.errors import CourseError
from cnn_course.labs import Lab
from cnn_course_instructor.corpus import ALL, Sample, compare, samples
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.results import Status

SAMPLE_COURSE = Path(__file__).parent / "samples" / "build_repo"  # its sample_lab keeps no corpus
TINY = Lab.from_dict(
    {
        "assignment": "tiny_lab",
        "title": "A tiny lab",
        "questions": {
            "q1_add": {"exercise": 1, "title": "add", "points": 2},
            "q2_plot": {"exercise": 2, "title": "plot", "points": 1.5},
            "q3_explain": {"exercise": 3, "title": "explain", "points": 1, "manual": True},
        },
    }
)


def test_a_sample_expects_the_front_matter_s_points_less_what_it_loses():
    """Does a sample expect each automatically graded question's declared points less what it
    loses (nothing lost: full marks; ALL: zero everywhere)?"""
    assert Sample("solution").expected(TINY) == {"q1_add": 2.0, "q2_plot": 1.5}
    assert Sample("half", lost={"q1_add": 0.5}).expected(TINY) == {"q1_add": 1.5, "q2_plot": 1.5}
    assert Sample("stub", lost=ALL).expected(TINY) == {"q1_add": 0.0, "q2_plot": 0.0}


@pytest.mark.parametrize("question", ["q9_nothing", "q3_explain"])
def test_a_loss_on_a_question_the_lab_does_not_grade_is_refused_by_name(question):
    """Is a loss on an undeclared question, or on one graded by hand, refused, naming the sample
    and the question?"""
    with pytest.raises(CourseError, match=f"sample wrong: loses points on {question}, which"):
        Sample("wrong", lost={question: 1}).expected(TINY)


@pytest.fixture
def tiny_course(tmp_path) -> Course:
    """A course whose built solution notebook has three cells, two of them alike."""
    folder = tmp_path / "notebooks" / "solution"
    folder.mkdir(parents=True)
    cells = [nbformat.v4.new_code_cell(source) for source in ("x = 1", "y = 1", "z = 2")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), folder / "tiny_lab.ipynb")
    return Course(tmp_path)


def test_an_edit_changes_the_one_cell_it_fits(tiny_course):
    """Does an edit replace its text in the one cell that holds it, and only there?"""
    notebook = Sample("x3", (("x = 1", "x = 3"),)).notebook(tiny_course, "tiny_lab")
    assert [cell.source for cell in notebook.cells] == ["x = 3", "y = 1", "z = 2"]


@pytest.mark.parametrize(("old", "count"), [("w = 0", 0), ("= 1", 2)])
def test_an_edit_that_fits_no_cell_or_two_fails_loudly(tiny_course, old, count):
    """Does an edit whose text is in no cell, or in two, stop with the sample, the edit and how
    many cells it matched, rather than grade an unchanged notebook?"""
    with pytest.raises(AssertionError, match=rf"gone: edit '{old}' matches {count} cells, not 1"):
        Sample("gone", ((old, "v = 9"),)).notebook(tiny_course, "tiny_lab")


def test_samples_are_read_from_the_lab_s_corpus_file_and_none_without_one(tmp_path):
    """Has a lab without ``autograder/<lab>/corpus.py`` no samples, is one holding Samples read,
    and are SAMPLES that are not Samples refused, naming the file?"""
    assert samples(Course(SAMPLE_COURSE), "sample_lab") == []
    for name, listed in (("right", 'Sample("solution", fast=True)'), ("wrong", '"solution"')):
        shutil.copytree(SAMPLE_COURSE, tmp_path / name)
        (tmp_path / name / "autograder" / "sample_lab" / "corpus.py").write_text(
            f"from cnn_course_instructor.corpus import Sample\n\nSAMPLES = [{listed}]\n"
        )
    assert samples(Course(tmp_path / "right"), "sample_lab") == [Sample("solution", fast=True)]
    with pytest.raises(CourseError, match="autograder/sample_lab/corpus.py: SAMPLES must be"):
        samples(Course(tmp_path / "wrong"), "sample_lab")


@pytest.mark.parametrize("lab", list(COURSE.labs))
def test_every_sample_of_each_lab_s_corpus_can_be_made(lab):
    """Does every sample of the lab's corpus have a name of its own, each edit still fit exactly
    one cell of the current notebooks, and its losses fall on questions the lab grades?"""
    found = corpus(lab)
    assert len({sample.name for sample in found}) == len(found)
    for sample in found:
        assert isinstance(sample.notebook(COURSE, lab), nbformat.NotebookNode)
        assert sample.expected(COURSE.lab(lab)).keys() == full_marks(lab).keys()


@pytest.mark.parametrize("lab", corpus_labs())
def test_each_corpus_holds_the_solution_at_full_marks_and_the_stub_at_zero(lab):
    """Does the lab's corpus hold, among the samples CI grades, the untouched solution notebook
    expected at full marks and the untouched student notebook expected at zero?"""
    untouched = {sample.base: sample for sample in corpus(lab, fast=True) if not sample.edits}
    assert untouched["solution"].expected(COURSE.lab(lab)) == full_marks(lab)
    assert set(untouched["student"].expected(COURSE.lab(lab)).values()) == {0.0}


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("graded_lab", corpus_labs(), indirect=True)
def test_each_lab_s_fast_corpus_grades_as_expected(graded_lab):
    """Graded for real (kernels, shortened training, sandboxed where the machine allows), is
    every fast sample of the lab graded as its lab with its expected scores and feedback naming
    its fault: the solution at full marks, the untouched notebook at zero?"""
    lab, results = COURSE.lab(graded_lab.lab), graded_lab.results
    for sample in graded_lab.corpus:
        result = results[sample.name]
        assert result.status is Status.GRADED and result.lab == lab.id, (sample.name, result)
        assert compare(sample, lab, result) == [], sample.name
    untouched = {s.base: results[s.name] for s in graded_lab.corpus if not s.edits}
    full = sum(full_marks(lab.id).values())
    assert untouched["solution"].total == untouched["solution"].max == full
    assert untouched["student"].total == 0
