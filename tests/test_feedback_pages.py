"""What a student and an instructor read: one entry per fault, an untouched notebook in one line,
cells named as a student finds them, readable histograms (fast: real pages, no kernel)."""

from __future__ import annotations

import nbformat
from conftest import COURSE, REPO

from cnn_course import judging
from cnn_course_instructor.grading.locked import answers_untouched
from cnn_course_instructor.grading.outputs import feedback_html
from cnn_course_instructor.grading.report import MAX_TICKS, _histogram, summarise
from cnn_course_instructor.grading.results import Status, SubmissionResult, TestResult

LAB = COURSE.lab("cnn_lab")
POINTS = {key: question.points for key, question in LAB.graded.items()}
STUDENT = nbformat.read(REPO / "notebooks" / "student" / "cnn_lab.ipynb", as_version=4)
SOLUTION = nbformat.read(REPO / "notebooks" / "solution" / "cnn_lab.ipynb", as_version=4)


def result(tests, attempted: bool | None = True, student: str = "ann") -> SubmissionResult:
    made = SubmissionResult.from_tests(
        Status.GRADED, "", tests, POINTS, student=student, lab=LAB.id
    )
    made.attempted = attempted
    return made


def test_one_fault_failing_several_tests_is_one_entry_naming_them():
    """Do three tests of one exercise failing with the same message make one "What to fix"
    entry that names the three tests, and a different message an entry of its own?"""
    message = "NameError: `mnist_model` is not defined (did its cell run without error?)"
    tests = [TestResult("q4_mnist_model", name, 1, 0, message) for name in ("a", "b", "c")]
    tests.append(TestResult("q4_mnist_model", "d", 1, 0, "another fault"))
    page = feedback_html(result(tests), LAB)
    fixes = page[page.index("What to fix") : page.index("</ol>")]
    assert fixes.count("<li>") == 2 and fixes.count("mnist_model` is not defined") == 1
    assert "), a, b, c: NameError" in fixes


def test_an_untouched_notebook_is_one_line_and_flagged_in_the_report(tmp_path):
    """Is a notebook whose answer cells are all as released told so in one notice (no list of
    forty faults, no notes), and listed in the class report as needing a look?"""
    failing = [TestResult(q, "t", p, 0, "NotImplementedError") for q, p in POINTS.items()]
    page = feedback_html(result(failing, attempted=False), LAB)
    assert "Nothing attempted." in page and "What to fix" not in page
    assert "NotImplementedError" not in page.split("Nothing attempted.")[0]
    folder = tmp_path / LAB.id
    (folder / "results").mkdir(parents=True)
    for student, attempted in (("ann", False), ("bob", True)):
        made = result(failing, attempted=attempted, student=student)
        (folder / "results" / f"{student}.json").write_text(made.to_json())
    attention = summarise(folder, LAB).attention
    assert [a.student for a in attention] == ["ann"] and "nothing attempted" in attention[0].why


def test_answers_untouched_tells_the_released_stub_from_any_answer():
    """Is the released student notebook untouched (whitespace aside), and the solution, or a
    stub with one answer written, not?"""
    assert answers_untouched(STUDENT, STUDENT)
    spaced = nbformat.from_dict(STUDENT)
    spaced.cells[-1].source += "\n\n"
    assert answers_untouched(spaced, STUDENT)
    assert not answers_untouched(SOLUTION, STUDENT)
    one = nbformat.from_dict(STUDENT)
    answer = next(c for c in one.cells if c.metadata.get("nbgrader", {}).get("solution"))
    answer.source += "\nx = 1"
    assert not answers_untouched(one, STUDENT)


def test_the_history_message_says_whose_run_it_judged():
    """Does the visible check speak of the student's own epochs, and the hidden test of the
    grader's shortened run, never of a run the student did not see?"""
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.6]}
    seen = judging.history_verdict(history, 3).message
    assert seen.startswith("the training ran 3 epochs and the history holds 2 losses")
    graded = judging.history_verdict(history, 3, shortened=True).message
    assert graded.startswith("the grader ran your training for 3 epochs (a shortened run)")


def test_a_histogram_of_many_scores_has_labels_that_do_not_crowd(tmp_path):
    """Over 55 different half-point totals, does the histogram label at most MAX_TICKS + 2
    places (evenly spaced), and a few scores each one?"""
    import matplotlib.image

    scores = [i / 2 for i in range(55)]
    ticks = []

    def kept(path, values, points, title):
        from matplotlib.figure import Figure

        original = Figure.savefig

        def save(figure, *args, **kwargs):
            ticks.append([t for t in figure.axes[0].get_xticks() if 0 <= t <= points])
            return original(figure, *args, **kwargs)

        Figure.savefig = save
        try:
            _histogram(path, values, points, title)
        finally:
            Figure.savefig = original

    kept(tmp_path / "many.png", scores, 27, "total")
    kept(tmp_path / "few.png", [0, 1.5, 3], 3, "q")
    assert len(ticks[0]) <= MAX_TICKS + 2 and ticks[1] == [0, 1.5, 3]
    assert matplotlib.image.imread(tmp_path / "many.png").shape[0] > 100
