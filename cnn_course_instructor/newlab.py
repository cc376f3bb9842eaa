"""``cnn-course new-lab NAME``: a working skeleton lab in its own folders, to edit into a real one.

It writes, from the templates in ``templates/new_lab/``, the lab's MyST source
(``source/NAME.md``: one exercise), its student helpers (``cnn_course/labs/NAME/``: the visible
check and the verdict it shares with the grader), and its grading content
(``autograder/NAME/``: the contract with one hidden test, the reference solution, a sample
corpus). Nothing else is edited: the build, the grader, the corpus and publishing discover labs.
The files are written all at once or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import jinja2

from cnn_course.errors import CourseError
from cnn_course.labs import ID_PATTERN

__all__ = ["new_lab"]

TITLE_LIMIT = 100  # characters: it heads the notebook and names the assignment in listings

# template -> where it goes, relative to the course repository ({lab}: the lab's id)
FILES = {
    "source.md.j2": "source/{lab}.md",
    "runtime_init.py.j2": "cnn_course/labs/{lab}/__init__.py",
    "checks.py.j2": "cnn_course/labs/{lab}/checks.py",
    "verdicts.py.j2": "cnn_course/labs/{lab}/verdicts.py",
    "autograder_init.py.j2": "autograder/{lab}/__init__.py",
    "reference.py.j2": "autograder/{lab}/reference.py",
    "corpus.py.j2": "autograder/{lab}/corpus.py",
}

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("cnn_course_instructor", "templates/new_lab"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
# the title inside a Python docstring (the front matter takes it as JSON, which YAML reads)
_TEMPLATES.filters["docstring"] = lambda text: text.replace("\\", "\\\\").replace('"', '\\"')


def new_lab(repo: Path, lab: str, title: str | None = None) -> list[Path]:
    """Write the skeleton of lab ``lab`` into the course repository ``repo``; the files written.

    Refuses (CourseError, nothing written) an id that is not lower_snake_case, a lab whose
    files exist already, or a repository without the runtime's ``cnn_course/labs/`` folder.
    """
    repo = Path(repo).absolute()
    if not ID_PATTERN.fullmatch(lab):
        raise CourseError(
            f"{lab!r} is not a lab id: use lower_snake_case (letters, digits, _), starting with "
            "a letter, e.g. `cnn-course new-lab rnn_lab`. It names the notebook, the grades and "
            "the nbgrader assignment."
        )
    if not (repo / "cnn_course" / "labs").is_dir():
        raise CourseError(
            f"{repo} has no cnn_course/labs/ folder, where the lab's visible checks go: run "
            "new-lab in the course repository (the folder holding source/, autograder/ and "
            "cnn_course/), or pass --repo."
        )
    targets = {name: repo / path.format(lab=lab) for name, path in FILES.items()}
    existing = [
        path
        for path in (
            repo / "source" / f"{lab}.md",
            repo / "autograder" / lab,
            repo / "cnn_course" / "labs" / lab,
        )
        if path.exists()
    ]
    if existing:
        raise CourseError(
            f"the lab {lab!r} exists already ({', '.join(str(p.relative_to(repo)) for p in existing)}); "
            "choose another id, or edit its files."
        )
    title = lab.replace("_", " ").capitalize() if title is None else title.strip()
    if not title or not title.isprintable() or len(title) > TITLE_LIMIT:
        raise CourseError(
            f"the title {title!r} is not one line of 1 to {TITLE_LIMIT} printable characters: "
            'give a short title, e.g. --title "Recurrent networks"'
        )
    values = {"lab": lab, "title": title}
    staging = Path(tempfile.mkdtemp(prefix=f".new-lab-{lab}-", dir=repo))
    try:
        for name, target in targets.items():
            staged = staging / target.relative_to(repo)
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_text(_TEMPLATES.get_template(name).render(**values), encoding="utf-8")
        for folder in ("source", "autograder", "cnn_course/labs"):
            (repo / folder).mkdir(parents=True, exist_ok=True)
        for top in (staging / "autograder" / lab, staging / "cnn_course" / "labs" / lab):
            os.replace(top, repo / top.relative_to(staging))
        os.replace(staging / "source" / f"{lab}.md", targets["source.md.j2"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return list(targets.values())
