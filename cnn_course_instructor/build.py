"""Build the labs: MyST source -> marked notebook -> nbgrader -> student and solution notebooks."""

from __future__ import annotations

import copy
import difflib
import logging
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from cnn_course.errors import CourseError
from cnn_course.labs import Lab

from .course import lab_from_metadata, read_lab

__all__ = [
    "END_MARKER",
    "START_MARKER",
    "STUB",
    "BuiltFile",
    "build",
    "check_build",
    "find_regions",
    "generate_student",
    "mark_cells",
    "fill_facts",
    "public_facts",
    "read_lab",
    "read_source",
    "settings_code",
    "shown_lines",
    "solution_lines",
]

START_MARKER = "# --- START CODE HERE"
END_MARKER = "# --- END CODE HERE"
STUB = (
    f'{START_MARKER}\nraise NotImplementedError("Replace this line with your code")\n{END_MARKER}'
)
ANSWER_STUB = "*Write your answers here.*"
NBGRADER_SCHEMA = 3
MD_METADATA_FILTER = (
    "all,-jupytext.text_representation.jupytext_version,"
    "-jupytext.text_representation.format_version"
)


@dataclass(frozen=True)
class BuiltFile:
    """One file the build writes: its path relative to the repository and its text."""

    relative_path: str
    text: str


# --- step 1: read the MyST source ------------------------------------------------------------


def read_source(path: Path) -> NotebookNode:
    """Read a MyST markdown lab with jupytext and check its front matter (see ``labs.Lab``)."""
    import jupytext

    try:
        notebook = jupytext.read(path, fmt="md:myst")
    except Exception as exc:  # jupytext raises many kinds; all mean "not a readable lab"
        raise CourseError(f"Could not read {path} as MyST markdown: {exc}") from None
    lab_from_metadata(notebook.metadata, path)
    return notebook


# --- step 1b: the lab's facts in its cells ------------------------------------------------------

SETTINGS_TAG = "lab-settings"
SUBSTITUTION = re.compile(r"\{\{\s*([a-z0-9_.]+)\s*\}\}")


def settings_code(lab: Lab) -> str:
    """The settings cell of a built notebook: the lab's facts as a Python literal, one per line."""

    def inline(value) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{key!r}: {inline(item)}" for key, item in value.items()) + "}"
        if isinstance(value, float) and value.is_integer():
            return repr(int(value))
        return repr(value)

    lines = []
    for key, value in lab.to_dict().items():
        if isinstance(value, dict):
            lines.append(f"        {key!r}: {{")
            lines += [f"            {name!r}: {inline(item)}," for name, item in value.items()]
            lines.append("        },")
        else:
            lines.append(f"        {key!r}: {inline(value)},")
    body = "\n".join(lines)
    return (
        "# The lab's settings, declared once in its source (written by `cnn-course build`).\n"
        f"lab = labs.Lab.from_dict(\n    {{\n{body}\n    }}\n)"
    )


def _substitute(text: str, facts: dict, where: str) -> str:
    def value(match: re.Match) -> str:
        found: object = facts
        for key in match.group(1).split("."):
            if not isinstance(found, dict) or key not in found:
                raise CourseError(
                    f"{where}: {{{{ {match.group(1)} }}}} names no fact of the front matter "
                    "(write e.g. {{ subsets.mnist_train.size }})."
                )
            found = found[key]
        if isinstance(found, bool) or not isinstance(found, int | float | str):
            raise CourseError(f"{where}: {{{{ {match.group(1)} }}}} is not a single value.")
        if isinstance(found, float) and found.is_integer() and "points" not in match.group(1):
            return f"{found:g}"
        return (
            f"{found:,}"
            if isinstance(found, int)
            else f"{found:g}"
            if isinstance(found, float)
            else found
        )

    return SUBSTITUTION.sub(value, text)


def fill_facts(
    notebook: NotebookNode, source_name: str, grading: dict | None = None
) -> NotebookNode:
    """A copy whose prose shows the front matter's facts (``{{ subsets.mnist_train.size }}``)
    and whose settings cell (tagged ``lab-settings``) holds them as code.

    ``grading`` holds the facts of the grading that the prose may quote as
    ``{{ grading.images }}`` (the ``public_facts`` of the lab's grading contract), beside the
    front matter's own ``{{ grading.thresholds.mnist }}``.
    """
    filled = copy.deepcopy(notebook)
    lab = Lab.from_dict(filled.metadata["cnn_course"], source_name)
    facts = lab.to_dict()
    facts["grading"] = {**facts.get("grading", {}), **(grading or {})}
    settings = 0
    for index, cell in enumerate(filled.cells):
        where = f"{source_name}, cell {index + 1}"
        if cell.cell_type == "markdown":
            cell.source = _substitute(cell.source, facts, where)
        elif SETTINGS_TAG in cell.metadata.get("tags", []):
            settings += 1
            cell.source = settings_code(lab)
            tags = [tag for tag in cell.metadata["tags"] if tag != SETTINGS_TAG]
            if tags:
                cell.metadata["tags"] = tags
            else:
                del cell.metadata["tags"]
        elif SUBSTITUTION.search(cell.source):
            raise CourseError(
                f"{where}: a {{{{ ... }}}} substitution in code; code reads the facts from "
                "`lab` (the settings cell), e.g. lab.training['mnist'].batch_size."
            )
    if settings > 1:
        raise CourseError(
            f"{source_name}: {settings} cells are tagged {SETTINGS_TAG}; one at most."
        )
    filled.metadata["cnn_course"] = lab.to_dict()
    nbhosting = dict(filled.metadata.get("nbhosting") or {})
    nbhosting["title"] = lab.title
    filled.metadata["nbhosting"] = nbhosting
    return filled


# --- step 2: find and validate the solution regions ------------------------------------------


def find_regions(source: str, where: str = "cell") -> list[tuple[int, int]]:
    """Line numbers ``(start, end)`` (0-based, of the marker lines) of each solution region.

    Markers must stand alone on their line (indentation allowed). Nested, unterminated and
    unopened regions are refused with the line number.
    """
    regions: list[tuple[int, int]] = []
    open_line: int | None = None
    for number, line in enumerate(source.split("\n")):
        stripped = line.strip()
        has_start, has_end = "START CODE HERE" in line, "END CODE HERE" in line
        if has_start and stripped != START_MARKER or has_end and stripped != END_MARKER:
            raise CourseError(
                f"{where}, line {number + 1}: a marker must stand alone on its line as "
                f"`{START_MARKER}` or `{END_MARKER}`; found {line.strip()!r}."
            )
        if has_start:
            if open_line is not None:
                raise CourseError(
                    f"{where}, line {number + 1}: a START marker inside the region opened at "
                    f"line {open_line + 1}; regions cannot be nested."
                )
            open_line = number
        elif has_end:
            if open_line is None:
                raise CourseError(
                    f"{where}, line {number + 1}: an END marker with no START before it."
                )
            regions.append((open_line, number))
            open_line = None
    if open_line is not None:
        raise CourseError(
            f"{where}, line {open_line + 1}: START marker with no END marker after it."
        )
    return regions


def solution_lines(notebook: NotebookNode) -> list[str]:
    """Every non-blank line inside a solution region or a markdown answer cell."""
    lines: list[str] = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and "answer" in cell.metadata:
            lines += [line for line in cell.source.split("\n") if line.strip()]
            continue
        if cell.cell_type != "code":
            continue
        source_lines = cell.source.split("\n")
        for start, end in find_regions(cell.source):
            lines += [line for line in source_lines[start + 1 : end] if line.strip()]
    return lines


def shown_lines(marked: NotebookNode) -> list[str]:
    """Every line of a marked notebook that students are shown: all but solution regions and answers."""
    lines: list[str] = []
    for cell in marked.cells:
        source_lines = cell.source.split("\n")
        if cell.cell_type != "code":
            lines += [] if cell.metadata.get("nbgrader", {}).get("solution") else source_lines
            continue
        inside = {n for start, end in find_regions(cell.source) for n in range(start + 1, end)}
        lines += [line for number, line in enumerate(source_lines) if number not in inside]
    return lines


# --- step 3: mark cells for nbgrader ---------------------------------------------------------


def mark_cells(notebook: NotebookNode, source_name: str) -> NotebookNode:
    """A copy with nbgrader metadata: region cells are answers, all others are locked.

    A code cell with markers becomes an nbgrader solution cell whose ``grade_id`` is its
    ``question`` (or ``exercise_<n>``); a markdown cell with ``answer`` metadata becomes a
    written answer; every other cell is locked. Cell ids become stable (``grade_id``).
    """
    marked = copy.deepcopy(notebook)
    questions = marked.metadata["cnn_course"]["questions"]
    seen: dict[str, int] = {}
    counters = {"exercise": 0, "answer": 0, "cell": 0}
    for index, cell in enumerate(marked.cells):
        where = f"{source_name}, cell {index + 1}"
        if cell.cell_type == "code":
            is_solution = bool(find_regions(cell.source, where))
        else:
            if any(marker.lstrip("# ") in cell.source for marker in (START_MARKER, END_MARKER)):
                raise CourseError(
                    f"{where}: solution markers appear in a {cell.cell_type} cell; they belong in "
                    "code cells only (in prose, name them without the leading `# ---`)."
                )
            is_solution = cell.cell_type == "markdown" and "answer" in cell.metadata
        question = cell.metadata.pop("question", None)
        if question is not None:
            if question not in questions:
                raise CourseError(
                    f"{where}: question {question!r} is not declared in the front matter "
                    f"(declared: {', '.join(questions)})."
                )
            if not is_solution:
                raise CourseError(f"{where}: question {question!r} is on a cell without markers.")
        if is_solution:
            kind = "answer" if cell.cell_type == "markdown" else "exercise"
            counters[kind] += 1
            grade_id = question or f"{kind}_{counters[kind]}"
        else:
            counters["cell"] += 1
            grade_id = f"cell_{counters['cell']:02d}"
        if grade_id in seen:
            raise CourseError(f"{where}: question {grade_id!r} is used by two cells.")
        seen[grade_id] = index
        cell.metadata.pop("answer", None)
        written_answer = is_solution and cell.cell_type == "markdown"
        cell.metadata["nbgrader"] = {
            "grade": written_answer,  # nbgrader grades written answers by hand
            "grade_id": grade_id,
            "locked": not is_solution,
            "schema_version": NBGRADER_SCHEMA,
            "solution": is_solution,
            "task": False,
        }
        if written_answer:
            cell.metadata["nbgrader"]["points"] = questions.get(question, {}).get("points", 0)
        cell["id"] = grade_id.replace("_", "-")
    missing = [question for question in questions if question not in seen]
    if missing:
        raise CourseError(
            f"{source_name}: declared questions without a cell: {', '.join(missing)}."
        )
    marked.metadata.pop("jupytext", None)
    return marked


# --- step 4: nbgrader generate_assignment ----------------------------------------------------


def generate_student(marked: NotebookNode, assignment: str, notebook_name: str) -> NotebookNode:
    """Run nbgrader's own ``generate_assignment`` on the marked notebook; return the release.

    nbgrader copies every non-notebook file of the assignment's source folder into the
    release, so the course folder it sees is a fresh temporary one holding only this notebook.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="cnn-course-build-") as workdir:
        course = Path(workdir)
        source_folder = course / "source" / assignment
        source_folder.mkdir(parents=True)
        nbformat.write(marked, source_folder / f"{notebook_name}.ipynb")
        config = Config()
        config.CourseDirectory.root = str(course)
        config.CourseDirectory.course_id = "cnn-course"
        config.ClearSolutions.begin_solution_delimeter = START_MARKER.lstrip("# ")
        config.ClearSolutions.end_solution_delimeter = END_MARKER.lstrip("# ")
        config.ClearSolutions.code_stub = {"python": STUB}
        config.ClearSolutions.text_stub = ANSWER_STUB
        (course / "exchange").mkdir()
        config.Exchange.root = str(course / "exchange")
        # The equivalent of `nbgrader generate_assignment --no-db`: the gradebook is filled
        # at grading time, not at build time.
        config.SaveCells.enabled = False
        config.GenerateAssignment.no_database = True
        config.NbGraderAPI.log_level = logging.ERROR
        coursedir = CourseDirectory(config=config)
        api = NbGraderAPI(coursedir=coursedir, config=config)
        result = api.generate_assignment(assignment)
        if not result.get("success"):
            log = f"{result.get('log', '')}\n{result.get('error', '')}"
            reasons = re.findall(r"^\s*\w*(?:Error|Exception): (.+)$", log, flags=re.MULTILINE)
            raise CourseError(
                f"nbgrader could not generate the student version of {notebook_name}: "
                f"{reasons[0] if reasons else log.strip()[-500:]}"
            )
        released = course / "release" / assignment
        extra = sorted(p.name for p in released.iterdir() if p.name != f"{notebook_name}.ipynb")
        if extra:
            raise CourseError(f"nbgrader released unexpected files next to the notebook: {extra}")
        return nbformat.read(released / f"{notebook_name}.ipynb", as_version=4)


# --- step 5: write the student, solution and MyST forms --------------------------------------


def _with_header(notebook: NotebookNode, source_rel: str, kind: str) -> NotebookNode:
    result = copy.deepcopy(notebook)
    header = nbformat.v4.new_markdown_cell(
        f"*{kind.capitalize()} version, generated from `{source_rel}` by `cnn-course build`. "
        "Do not edit this file by hand: edit the source and rebuild.*"
    )
    header["id"] = "generated-header"
    header.metadata = {"editable": False, "deletable": False, "cnn_course": {"generated": True}}
    result.cells.insert(0, header)
    result.metadata["cnn_course"] = {
        **result.metadata.get("cnn_course", {}),
        "source": source_rel,
        "kind": kind,
    }
    for cell in result.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return result


def _ipynb_text(notebook: NotebookNode) -> str:
    notebook = copy.deepcopy(notebook)
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def _myst_text(notebook: NotebookNode) -> str:
    import jupytext

    notebook = copy.deepcopy(notebook)
    notebook.metadata["jupytext"] = {
        "notebook_metadata_filter": MD_METADATA_FILTER,
        "cell_metadata_filter": "editable,deletable",
    }
    return jupytext.writes(notebook, fmt="md:myst")


def build_lab(source_path: Path, repo: Path) -> list[BuiltFile]:
    """All the files one lab source builds to, without writing anything."""
    source_rel = source_path.relative_to(repo).as_posix()
    name = source_path.stem
    notebook = read_source(source_path)
    quoted = any(
        match.startswith("grading.") and not match.startswith("grading.thresholds.")
        for cell in notebook.cells
        for match in SUBSTITUTION.findall(cell.source)
    )  # only a lab whose prose quotes its grading contract needs it loaded here
    notebook = fill_facts(notebook, source_rel, public_facts(repo, name) if quoted else None)
    marked = mark_cells(notebook, source_rel)
    assignment = str(marked.metadata["cnn_course"].get("assignment") or name)
    student = _with_header(generate_student(marked, assignment, name), source_rel, "student")
    solution = _with_header(marked, source_rel, "solution")
    if "nbhosting" in solution.metadata:
        nbhosting = solution.metadata["nbhosting"]
        nbhosting["title"] = f"{nbhosting.get('title', name)} (solution)"
    return [
        BuiltFile(f"notebooks/student/{name}.ipynb", _ipynb_text(student)),
        BuiltFile(f"notebooks/student/{name}.md", _myst_text(student)),
        BuiltFile(f"notebooks/solution/{name}.ipynb", _ipynb_text(solution)),
    ]


def public_facts(repo: Path, lab_id: str) -> dict:
    """The grading facts a lab's prose may quote: the ``public_facts`` of its contract."""
    from .course import Course

    return dict(Course(repo).content(lab_id).contract.public_facts)


def _sources(repo: Path) -> list[Path]:
    folder = repo / "source"
    sources = sorted(folder.glob("*.md")) if folder.is_dir() else []
    if not sources:
        raise CourseError(
            f"No lab sources found in {folder}. Run this from the course repository "
            "(the folder holding source/ and notebooks/), or pass --repo."
        )
    return sources


def _build_all(repo: Path) -> list[BuiltFile]:
    from .course import Course

    files = [built for source in _sources(repo) for built in build_lab(source, repo)]
    course = Course(repo)
    for lab_id in course.labs:
        course.content(lab_id)  # its hidden tests exist and agree with the front matter
    return files


def build(repo: Path) -> list[Path]:
    """Build every lab in ``repo/source`` into ``repo/notebooks``; return the paths written."""
    repo = Path(repo).absolute()
    files = _build_all(repo)  # build everything before writing anything
    written = []
    for built in files:
        path = repo / built.relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(built.text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def check_build(repo: Path) -> list[str]:
    """Differences between the committed notebooks and a fresh build; empty when in step."""
    repo = Path(repo).absolute()
    files = _build_all(repo)
    problems = []
    expected = {built.relative_path for built in files}
    for built in files:
        path = repo / built.relative_path
        if not path.is_file():
            problems.append(f"{built.relative_path}: missing (never built or deleted)")
            continue
        current = path.read_text(encoding="utf-8")
        if current != built.text:
            diff = _short_diff(current, built.text, built.relative_path)
            problems.append(f"{built.relative_path}: differs from a fresh build\n{diff}")
    for path in _generated_files(repo / "notebooks"):
        relative = path.relative_to(repo).as_posix()
        if relative not in expected:
            problems.append(f"{relative}: not produced by any source (stale output?)")
    return problems


def _generated_files(folder: Path) -> Iterable[Path]:
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and ".ipynb_checkpoints" not in path.parts:
                yield path


def _short_diff(current: str, fresh: str, name: str, limit: int = 12) -> str:
    lines = list(
        difflib.unified_diff(
            current.splitlines(),
            fresh.splitlines(),
            f"{name} (committed)",
            f"{name} (fresh build)",
            lineterm="",
            n=1,
        )
    )
    shown = "\n".join(f"    {line}" for line in lines[:limit])
    return shown + (
        f"\n    ... ({len(lines) - limit} more diff lines)" if len(lines) > limit else ""
    )
