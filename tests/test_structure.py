"""The two sides and the lab facts: what students import, and every fact stated once."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import COURSE, REPO

from cnn_course import judging
from cnn_course.errors import CourseError
from cnn_course.labs import Lab
from cnn_course_instructor import build
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.registry import Context

SAMPLE = Path(__file__).parent / "samples" / "build_repo"
RUNTIME = REPO / "cnn_course"
INSTRUCTOR = REPO / "cnn_course_instructor"
INSTRUCTOR_ONLY = ("cnn_course_instructor", "nbgrader", "jupytext", "nbclient", "jinja2")


def test_student_modules_import_nothing_of_the_instructor_side():
    """Does importing every student module load no instructor module (checked on sys.modules)?"""
    modules = sorted(
        ".".join(p.relative_to(RUNTIME).with_suffix("").parts).removesuffix(".__init__")
        for p in RUNTIME.rglob("*.py")
        if p != RUNTIME / "__init__.py"
    )
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('cnn_course.' + name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {INSTRUCTOR_ONLY!r}"
        " or 'autograder' in m or '_cnn_course_content' in m)\n"
        "print(bad)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert found.stdout.strip() == "[]", found.stdout
    assert {"checks", "data", "judging", "labs", "training", "widgets"} <= set(modules)
    assert {"labs.cnn_lab.checks", "labs.cnn_part2.explorers"} <= set(modules)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_dependencies_point_one_way_and_no_code_edits_sys_path():
    """Does the runtime never import the instructor side, and does no product code touch sys.path?"""
    for path in RUNTIME.rglob("*.py"):
        wrong = {name for name in _imports(path) if name.split(".")[0] in INSTRUCTOR_ONLY}
        assert not wrong, f"{path.relative_to(REPO)} imports {wrong}"
    product = [
        *RUNTIME.rglob("*.py"),
        *INSTRUCTOR.rglob("*.py"),
        *(REPO / "autograder").rglob("*.py"),
    ]
    assert len(product) > 20
    edits = re.compile(r"sys\.path\s*(\.\s*(insert|append|extend|remove|pop|clear)\b|\[|\+?=)")
    for path in product:
        found = edits.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.relative_to(REPO)} edits sys.path: {found.group(0)!r}"
    assert edits.search("sys.path.insert(0, x)") and edits.search("sys.path += [x]")
    assert not edits.search("print(sys.path)")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module -> the product modules it imports, wherever the import stands (a function's too):
    ``from package import name`` reaches the submodule ``package.name`` where there is one, and
    importing a module runs its packages' ``__init__`` first, so those count too (but a module's
    own packages, which Python runs before it)."""
    modules = {_module_name(path): path for path in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*here[: len(here) - node.level + 1], *filter(None, [base])])
                found = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            for target in found:
                while target:
                    if target in modules and target != name and not name.startswith(f"{target}."):
                        targets.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of two or more modules."""
    order, low, stack, found = {}, {}, [], []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in graph[node]:
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            part = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(part) > 1:
                found.append(sorted(part))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def test_the_product_has_no_import_circle_even_through_imports_in_functions():
    """Is the import graph of the runtime, the instructor side and the hidden tests free of
    circles, counting imports placed inside functions (where a circle would hide)?"""
    files = [
        p
        for top in ("cnn_course", "cnn_course_instructor", "autograder")
        for p in (REPO / top).rglob("*.py")
    ]
    graph = import_graph(files)
    assert cycles(graph) == []
    assert "cnn_course_instructor.grading.worker" in graph["cnn_course_instructor.grading.local"]
    circle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(circle) == [["a", "b", "c"]]  # the check sees one


def test_package_metadata_keeps_instructor_dependencies_in_an_extra():
    """Are nbgrader, the build tools and Dask an `instructor` extra, not what students install?"""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    student = " ".join(project["dependencies"])
    for name in ("nbgrader", "jupytext", "nbclient", "jinja2", "distributed"):
        assert name not in student
        assert any(dep.startswith(name) for dep in project["optional-dependencies"]["instructor"])
    assert project["scripts"]["cnn-course"].startswith("cnn_course_instructor.")


def test_every_lab_has_hidden_tests_that_agree_with_its_front_matter():
    """Does each lab of the course load its hidden tests, with the declared points per question?"""
    course = Course(REPO)
    assert "cnn_lab" in course.labs
    for lab_id, lab in course.labs.items():
        content = course.content(lab_id)
        assert content.tests.points() == {q: question.points for q, question in lab.graded.items()}


def test_the_judge_loads_a_lab_without_notebook_libraries():
    """Does loading a lab's facts and hidden tests (what the judge does for every submission)
    leave out jupytext and nbformat, whose imports cost seconds, and agree with jupytext?"""
    code = (
        "import sys\n"
        "from cnn_course_instructor.course import Course\n"
        f"course = Course({str(REPO)!r})\n"
        "for lab in course.labs: course.content(lab)\n"
        "print(sorted(m for m in ('nbformat', 'jupytext', 'nbclient') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    for source in sorted((REPO / "source").glob("*.md")):
        from_jupytext = build.read_source(source).metadata["cnn_course"]
        assert Course(REPO).labs[source.stem] == Lab.from_dict(from_jupytext, str(source))


def test_a_grading_worker_starts_without_torch_or_torchvision():
    """Does the worker process, started once per submission, import neither torch (1.4 s: its
    judge and kernel load it) nor torchvision, while the student runtime avoids torchvision?"""
    code = (
        "import sys\n"
        "import cnn_course_instructor.grading.worker\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n"
        "from cnn_course import checks, data, labs, plots, training, widgets\n"
        "print(sorted(m for m in ('torchvision',) if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "[]"]


def test_built_notebooks_carry_the_front_matter_facts():
    """Do the built notebooks' settings cell and metadata hold exactly the source's facts?"""
    lab = build.read_lab(REPO / "source" / "cnn_lab.md")
    for kind in ("student", "solution"):
        notebook = nbformat.read(REPO / "notebooks" / kind / "cnn_lab.ipynb", as_version=4)
        (cell,) = [c for c in notebook.cells if c.source.startswith("# The lab's settings")]
        namespace: dict = {}
        exec("from cnn_course import labs\n" + cell.source, namespace)
        assert namespace["lab"] == lab
        assert notebook.metadata["cnn_course"]["subsets"] == lab.to_dict()["subsets"]


@pytest.fixture
def course_copy(tmp_path) -> Path:
    """A copy of the course's sources and grading content, to edit."""
    for folder in ("source", "autograder"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    return tmp_path


def test_changing_a_subset_or_an_epoch_count_changes_every_consumer(course_copy):
    """Does one edit of the front matter reach the notebook, its prose, the grader's unseen
    images and the hidden tests' expectations, and one edit of a threshold the grading section?"""
    source = course_copy / "source" / "cnn_lab.md"
    text = source.read_text()
    text = text.replace(
        "mnist_train: {dataset: mnist, split: train, size: 1000, seed: 0}",
        "mnist_train: {dataset: mnist, split: train, size: 1500, seed: 3}",
    ).replace("mnist: {epochs: 10, fast_epochs: 2,", "mnist: {epochs: 10, fast_epochs: 3,")
    text = text.replace("thresholds: {mnist: 0.80,", "thresholds: {mnist: 0.85,")
    source.write_text(text)
    build.build(course_copy)
    solution = nbformat.read(course_copy / "notebooks/solution/cnn_lab.ipynb", as_version=4)
    everything = "\n".join(cell.source for cell in solution.cells)
    assert "'size': 1500, 'seed': 3" in everything and "'fast_epochs': 3" in everything
    assert "random sample of 1,500 of MNIST" in everything
    assert "of 0.85 on MNIST" in everything and "3 epochs on MNIST" in everything

    course = Course(course_copy)
    lab = course.lab("cnn_lab")
    context = Context(lab, {}, None)
    unseen = context.unseen_indices("mnist", 60000)
    from cnn_course import data

    trained, _ = data.split_indices(60000, 1500, seed=3)
    assert len(unseen) == 60000 - 1500
    assert not set(trained.tolist()) & set(unseen.tolist())

    content = course.content("cnn_lab")
    (history_test,) = [
        case
        for case in content.tests.cases
        if case.question == "q8_mnist_training" and "per epoch" in case.name
    ]
    two_epochs = {"mnist_history": {"loss": [1.0, 0.5], "accuracy": [0.5, 0.8]}}
    verdict = history_test.function(two_epochs, context)
    assert not verdict.passed and "for 3 epochs (a shortened run)" in verdict.message
    assert lab.thresholds["mnist"] == 0.85  # the accuracy test's threshold: the same fact


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('"q1_double", points=1, name="random', '"q1_dubble", points=1, name="random'),
            "q1_dubble",
        ),
        (('points=1, name="whole', 'points=2, name="whole'), "add up to 3"),
    ],
    ids=["typo", "points"],
)
def test_hidden_tests_that_disagree_with_the_lab_are_refused_by_build_and_grade(
    tmp_path, edit, message
):
    """Is a registry typo or a points mismatch refused at build and grading start, by name?"""
    shutil.copytree(SAMPLE, tmp_path, dirs_exist_ok=True)
    tests = tmp_path / "autograder" / "sample_lab" / "__init__.py"
    tests.write_text(tests.read_text().replace(*edit))
    with pytest.raises(CourseError, match=message):
        build.build(tmp_path)
    from cnn_course_instructor.grading.run import grade_class

    with pytest.raises(CourseError, match=message):
        grade_class(tmp_path, tmp_path / "out", course=Course(tmp_path), sandbox=False)
    assert not (tmp_path / "out").exists()


def test_a_test_that_raises_fails_alone_with_the_reason():
    """Does an exception inside one hidden test become that test's failure, not a crash?"""
    from cnn_course_instructor.grading.registry import Registry

    registry = Registry()

    @registry.case("q1", points=1, name="breaks")
    def breaks(record, context):
        raise IndexError("Target 9 is out of bounds")

    @registry.case("q1", points=1, name="works")
    def works(record, context):
        return judging.Verdict(True)

    results = registry.run({}, Context(COURSE.lab("cnn_lab"), {}))
    assert [(r.name, r.score, r.error) for r in results] == [
        ("breaks", 0.0, True),
        ("works", 1.0, False),
    ]
    assert "Target 9" in results[0].message


def test_results_cross_processes_as_typed_records():
    """Does a result survive its JSON form with its status enum and measurements?"""
    from cnn_course_instructor.grading.results import Status, SubmissionResult, TestResult

    result = SubmissionResult.from_tests(
        Status.GRADED,
        "",
        [TestResult("q1", "accuracy", 2, 2, "ok", {"accuracy": 0.91})],
        {"q1": 2, "q2": 1},
        student="ada",
        lab="cnn_lab",
    )
    again = SubmissionResult.from_json(result.to_json())
    assert again == result and again.status is Status.GRADED
    assert again.tests[0].measured == {"accuracy": 0.91} and again.total == 2
    assert json.loads(result.to_json())["status"] == "graded"


def test_probe_is_a_module_that_records_plain_data(tmp_path):
    """Does the probe cell, run apart from the student's names, record plain data only?"""
    from torch import nn

    from cnn_course_instructor.grading.worker import probe_cell

    plan = [
        {"key": "model", "kind": "model", "name": "net", "input_shape": (1, 4, 4)},
        {"key": "calls", "kind": "calls", "name": "double", "inputs": "numbers"},
        {"key": "sizes", "kind": "calls", "name": "double", "inputs": "integers"},
        {"key": "count", "kind": "value", "name": "count"},
        {"key": "missing", "kind": "history", "name": "nowhere"},
    ]
    inputs = {"numbers": [(torch.arange(3),)], "integers": [(7,)]}
    torch.save({"plan": plan, "inputs": inputs}, tmp_path / "plan.pt")
    namespace = {
        "net": nn.Sequential(nn.Flatten(), nn.Linear(16, 2)),
        "double": lambda x: 2 * x,
        "count": 72_298,
        **dict.fromkeys(("exec", "compile", "globals"), None),  # a student's own names
    }
    exec(probe_cell(str(tmp_path / "plan.pt"), str(tmp_path / "out.pt")), namespace)
    record = torch.load(tmp_path / "out.pt", weights_only=True)
    assert [layer["kind"] for layer in record["model"]["layers"]] == ["Flatten", "Linear"]
    assert torch.equal(record["calls"][0]["tensor"], torch.tensor([0, 2, 4]))
    assert record["sizes"] == [{"type": "int", "value": 14.0, "number": True}]
    assert record["count"] == {"type": "int", "value": 72298.0, "number": True}
    assert "`nowhere` is not defined" in record["missing"]["error"]
    assert set(namespace) == {
        "net",
        "double",
        "count",
        "exec",
        "compile",
        "globals",
        "__builtins__",
    }
