"""Publish the labs as a student-only course tree for nbhosting, to push as its own git repository."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jinja2

import cnn_course
from cnn_course import __version__
from cnn_course.errors import CourseError

__all__ = [
    "CONTAINER_CACHE",
    "CONTAINER_DATA",
    "MANIFEST",
    "PublishedFile",
    "StudentNotebook",
    "nbhosting_files",
    "publish_nbhosting",
    "read_manifest",
]

MANIFEST = ".nbhosting/cnn-course-manifest.txt"
# nbhosting mounts the course's static area read-only at /home/jovyan/static in each container;
# the static mapping of nbhosting.yaml makes `data` a link to its `data/` folder beside every
# notebook.
STATIC_FOLDER = "data"
CONTAINER_DATA = f"/home/jovyan/static/{STATIC_FOLDER}"
# Inside the container, not in the student's (persisted) work folder /home/jovyan/work.
CONTAINER_CACHE = "/home/jovyan/.cache/cnn-course"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_PACKAGES = ("torch", "torchvision")
NOTEBOOK_FOLDER = "notebooks"
MODULE_FOLDER = "modules"

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("cnn_course_instructor", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
_TEMPLATES.filters["shell_quote"] = shlex.quote


@dataclass(frozen=True)
class PublishedFile:
    """One file of the published tree: its path relative to the tree, and its bytes."""

    relative_path: str
    content: bytes


@dataclass(frozen=True)
class StudentNotebook:
    """A lab's student notebook: its built file, its path in the tree, the title nbhosting shows."""

    built: Path
    path: str
    title: str
    version: str | None


# --- what the tree holds ---------------------------------------------------------------------


def nbhosting_files(repo: Path) -> list[PublishedFile]:
    """Every file of the nbhosting tree for the course repository ``repo``, without writing.

    Refuses (CourseError) when ``notebooks/`` is missing or out of step with ``source/``, so
    that only what ``cnn-course build`` makes of the current sources is ever published.
    """
    from . import build

    repo = Path(repo).absolute()
    _check_repository(repo)
    problems = build.check_build(repo)
    if problems:
        shown = "\n".join(problem.split("\n", 1)[0] for problem in problems[:5])
        raise CourseError(
            f"notebooks/ in {repo} is not what a fresh build of source/ gives "
            f"({len(problems)} problem(s)):\n{shown}\n"
            "Run `cnn-course build` (and commit the result), then publish again."
        )
    notebooks = _student_notebooks(repo)
    requirements = _dependencies(repo)
    files = [PublishedFile(notebook.path, notebook.built.read_bytes()) for notebook in notebooks]
    # the same notebooks as .ipynb, for any other Jupyter (nbhosting's track lists the MyST ones)
    files += [
        PublishedFile(
            str(Path(notebook.path).with_suffix(".ipynb")),
            notebook.built.with_suffix(".ipynb").read_bytes(),
        )
        for notebook in notebooks
    ]
    files += _module_files()
    files += [
        PublishedFile(".nbhosting/nbhosting.yaml", _render("nbhosting.yaml.j2", notebooks)),
        PublishedFile(
            ".nbhosting/Dockerfile",
            _render(
                "Dockerfile.j2",
                notebooks,
                torch_index=TORCH_CPU_INDEX,
                torch_requirements=[r for r in requirements if _is_torch(r)],
                other_requirements=[r for r in requirements if not _is_torch(r)],
            ),
        ),
        PublishedFile("README.md", _render("nbhosting-README.md.j2", notebooks)),
        PublishedFile(".gitignore", _render("nbhosting-gitignore.j2", notebooks)),
    ]
    return sorted(files, key=lambda file: file.relative_path)


def _check_repository(repo: Path) -> None:
    for needed in ("pyproject.toml", "source"):
        if not (repo / needed).exists():
            raise CourseError(
                f"{repo} is not the cnn-course repository: it has no {needed}. Run this from the "
                "course repository (the folder holding pyproject.toml, source/, notebooks/ and "
                "autograder/), or pass --repo."
            )


def _student_notebooks(repo: Path) -> list[StudentNotebook]:
    """The MyST student notebook of every lab of ``repo``, in source order, with its title."""
    import jupytext

    from .course import Course

    notebooks = []
    for source in Course(repo).sources.values():
        built = repo / "notebooks" / "student" / f"{source.stem}.md"
        if not built.is_file() or not built.with_suffix(".ipynb").is_file():
            raise CourseError(
                f"{built} or its .ipynb is missing, the student notebook of {source}: run "
                "`cnn-course build` "
                "first, then publish."
            )
        metadata = jupytext.read(built, fmt="md:myst").metadata
        kind = metadata.get("cnn_course", {}).get("kind")
        if kind != "student":
            raise CourseError(
                f"{built} says it is a {kind!r} notebook, not a student one; only student "
                "notebooks are published. Rebuild with `cnn-course build`."
            )
        nbhosting = metadata.get("nbhosting")
        if not isinstance(nbhosting, dict) or not nbhosting.get("title"):
            raise CourseError(
                f"{built} has no `nbhosting: title:` in its metadata; nbhosting shows that title "
                f"to students. Give the lab a `title:` in the `cnn_course:` front matter of "
                f"{source} and rebuild with `cnn-course build`."
            )
        version = nbhosting.get("version")
        notebooks.append(
            StudentNotebook(
                built=built,
                path=f"{NOTEBOOK_FOLDER}/{built.name}",
                title=" ".join(str(nbhosting["title"]).split()),
                version=str(version) if version else None,
            )
        )
    return notebooks


def _module_files() -> list[PublishedFile]:
    """Every file of the installed student package ``cnn_course``, bytecode aside.

    The package is found by import, as students' notebooks find it: the instructor tools are a
    package of their own (``cnn_course_instructor``), so the student package is published whole.
    """
    package = Path(cnn_course.__file__).parent
    files = []
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        if not path.is_file() or "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        files.append(
            PublishedFile(f"{MODULE_FOLDER}/cnn_course/{relative.as_posix()}", path.read_bytes())
        )
    return files


def _dependencies(repo: Path) -> list[str]:
    """``[project].dependencies`` of pyproject.toml, as written there: the student runtime's."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise CourseError(
                "Publishing reads pyproject.toml, which needs Python 3.11 or newer, or the "
                "`tomli` package on Python 3.10: run `pip install 'cnn-course[instructor]'`."
            ) from None
    path = repo / "pyproject.toml"
    try:
        dependencies = tomllib.loads(path.read_text(encoding="utf-8"))["project"]["dependencies"]
    except (KeyError, ValueError) as exc:
        raise CourseError(
            f"Could not read [project].dependencies from {path}: {exc}. The Dockerfile installs "
            "exactly those; fix pyproject.toml."
        ) from None
    return [str(dependency) for dependency in dependencies]


def _is_torch(requirement: str) -> bool:
    """Is ``requirement`` torch or torchvision (installed from the CPU-only wheel index)?"""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement
    return name in TORCH_PACKAGES


# --- file contents -----------------------------------------------------------------------------


def _render(template: str, notebooks: list[StudentNotebook], **context) -> bytes:
    """The template ``templates/<template>`` filled with the tree's facts and ``context``."""
    text = _TEMPLATES.get_template(template).render(
        version=__version__,
        notebooks=notebooks,
        manifest=MANIFEST,
        folder=STATIC_FOLDER,
        data=CONTAINER_DATA,
        cache=CONTAINER_CACHE,
        **context,
    )
    return text.encode("utf-8")


# --- writing the tree --------------------------------------------------------------------------


def read_manifest(out: Path) -> list[str]:
    """The relative paths a previous publish wrote into ``out`` (empty when it has no manifest)."""
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        relative = PurePosixPath(line)
        if relative.is_absolute() or ".." in relative.parts or line != relative.as_posix():
            raise CourseError(
                f"{path} lists {line!r}, which is not a plain path inside {out}; that manifest was "
                "not written by cnn-course publish. Restore it from git, or publish into a new folder."
            )
        entries.append(line)
    return entries


def _manifest_text(relative_paths: list[str]) -> bytes:
    lines = [
        "# The files `cnn-course publish nbhosting` wrote here, one per line (this file aside).\n",
        "# Publishing again with --force replaces or removes these files, and no others.\n",
        *(f"{relative}\n" for relative in sorted(relative_paths)),
    ]
    return "".join(lines).encode()


def _check_out(out: Path, repo: Path, force: bool, new_paths: set[str] | None) -> list[str]:
    """Refuse an unsafe OUT; return the previous manifest's entries."""
    if out.exists() and not out.is_dir():
        raise CourseError(f"{out} is a file; publish needs a folder (new, or written by publish).")
    if out == repo or out in repo.parents:
        raise CourseError(
            f"{out} holds the instructor's course repository {repo}; publish into a folder of "
            "its own (for example ../cnn-course-nbhosting)."
        )
    if not out.is_dir() or not any(out.iterdir()):
        return []
    if not force:
        raise CourseError(
            f"{out} is not empty. Publish into a new or empty folder, or pass --force to update "
            f"a tree publish wrote before (only the files listed in its {MANIFEST} are replaced "
            "or removed)."
        )
    previous = read_manifest(out)
    for relative in [*previous, *(new_paths or ())]:
        if not (out / relative).resolve().is_relative_to(out):
            raise CourseError(
                f"{out / relative} leads outside {out} through a symbolic link; publish writes "
                "and removes files inside the tree only. Remove the link, or publish into a new "
                "folder."
            )
    if new_paths is not None:
        ours = set(previous) | {MANIFEST}
        conflicts = sorted(
            path for path in new_paths if path not in ours and os.path.lexists(out / path)
        )
        if conflicts:
            raise CourseError(
                f"{out} already holds {', '.join(conflicts[:5])}, which publish did not write "
                f"(not in {MANIFEST}); it never replaces such files. Move them away, or "
                "publish into a new folder."
            )
    return previous


def publish_nbhosting(repo: Path, out: Path, *, force: bool = False) -> list[Path]:
    """Write the student-only nbhosting course tree of ``repo`` into ``out``; return its files.

    ``out`` must be new or empty, unless ``force``: then the files a previous publish listed in
    its manifest are replaced or removed, and no other file is touched. Everything is staged in
    a temporary folder beside ``out`` first, so a refusal or an error leaves ``out`` as it was.
    """
    repo = Path(repo).resolve()
    out = Path(out).resolve()
    _check_out(out, repo, force, None)  # cheap refusals before the build check
    files = nbhosting_files(repo)
    new_paths = {file.relative_path for file in files}
    previous = _check_out(out, repo, force, new_paths)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-publish-", dir=out.parent))
    except OSError as exc:
        raise CourseError(f"Cannot write beside {out}: {exc}.") from None
    try:
        for file in [*files, PublishedFile(MANIFEST, _manifest_text(sorted(new_paths)))]:
            staged = staging / file.relative_path
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(file.content)
        out.mkdir(exist_ok=True)
        # While files move in, the manifest lists both the old and the new files, so that an
        # interrupted publish can be finished with --force.
        _replace(out / MANIFEST, _manifest_text(sorted(set(previous) | new_paths)), staging)
        for relative in sorted(new_paths):
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, target)
        for relative in sorted(set(previous) - new_paths - {MANIFEST}):
            _remove_stale(out, relative)
        os.replace(staging / MANIFEST, out / MANIFEST)
    except OSError as exc:
        raise CourseError(f"Could not write the course tree into {out}: {exc}.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / relative for relative in sorted([*new_paths, MANIFEST])]


def _replace(path: Path, content: bytes, staging: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = staging / ".manifest.partial"
    temporary.write_bytes(content)
    os.replace(temporary, path)


def _remove_stale(out: Path, relative: str) -> None:
    """Remove one file an earlier publish wrote, and the folders it leaves empty."""
    path = out / relative
    if path.is_file() or path.is_symlink():
        path.unlink()
    parent = path.parent
    while parent != out and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
