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

from . import __version__
from .errors import CourseError

__all__ = [
    "CONTAINER_CACHE",
    "CONTAINER_DATA",
    "EXCLUDED_MODULES",
    "INSTRUCTOR_ONLY_DEPENDENCIES",
    "MANIFEST",
    "PublishedFile",
    "nbhosting_files",
    "publish_nbhosting",
    "read_manifest",
]

MANIFEST = ".nbhosting/cnn-course-manifest.txt"
# Instructor-only modules of cnn_course: the build (nbgrader, solutions), the grading hooks
# (autograder/), this module and the command line that drives them. Every other module of the
# package is what students import, and is published.
EXCLUDED_MODULES = ("_instructor.py", "build.py", "cli.py", "publish.py")
# nbgrader builds and grades; students never import it, and installing it would add nbgrader's
# assignment and formgrader menus to every student's Jupyter.
INSTRUCTOR_ONLY_DEPENDENCIES = ("nbgrader", "tomli")  # grading; reading pyproject on 3.10
# nbhosting mounts the course's static area read-only at /home/jovyan/static in each container;
# the static mapping below makes `data` a link to its `data/` folder beside every notebook.
STATIC_FOLDER = "data"
CONTAINER_DATA = f"/home/jovyan/static/{STATIC_FOLDER}"
# Inside the container, not in the student's (persisted) work folder /home/jovyan/work.
CONTAINER_CACHE = "/home/jovyan/.cache/cnn-course"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_PACKAGES = ("torch", "torchvision")
NOTEBOOK_FOLDER = "notebooks"
INSTRUCTOR_IMPORT = re.compile(
    r"^\s*(?:from\s+(?:\.|cnn_course\.?)\s*(?:_instructor|build|cli|publish)\b"
    r"|from\s+(?:\.|cnn_course)\s+import\s+[\w \t,(]*\b(?:_instructor|build|cli|publish)\b"
    r"|import\s+cnn_course\.(?:_instructor|build|cli|publish)\b)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class PublishedFile:
    """One file of the published tree: its path relative to the tree, and its bytes."""

    relative_path: str
    content: bytes


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
    files = [
        PublishedFile(f"{NOTEBOOK_FOLDER}/{path.name}", path.read_bytes()) for path, _ in notebooks
    ]
    files += _module_files(repo)
    files += [
        PublishedFile(".nbhosting/nbhosting.yaml", _nbhosting_yaml(notebooks).encode()),
        PublishedFile(".nbhosting/Dockerfile", _dockerfile(_dependencies(repo)).encode()),
        PublishedFile("README.md", _readme(notebooks).encode()),
        PublishedFile(".gitignore", _GITIGNORE.encode()),
    ]
    return sorted(files, key=lambda file: file.relative_path)


def _check_repository(repo: Path) -> None:
    for needed in ("pyproject.toml", "cnn_course/__init__.py", "source"):
        if not (repo / needed).exists():
            raise CourseError(
                f"{repo} is not the cnn-course repository: it has no {needed}. Run this from the "
                "course repository (the folder holding source/, notebooks/ and cnn_course/), or "
                "pass --repo."
            )


def _student_notebooks(repo: Path) -> list[tuple[Path, dict]]:
    """The MyST student notebooks with their ``nbhosting`` metadata (title, version)."""
    import jupytext

    folder = repo / "notebooks" / "student"
    paths = sorted(folder.glob("*.md")) if folder.is_dir() else []
    if not paths:
        raise CourseError(
            f"No student notebooks in {folder}: run `cnn-course build` first, then publish."
        )
    notebooks = []
    for path in paths:
        metadata = jupytext.read(path, fmt="md:myst").metadata
        kind = metadata.get("cnn_course", {}).get("kind")
        if kind != "student":
            raise CourseError(
                f"{path} says it is a {kind!r} notebook, not a student one; only student "
                "notebooks are published. Rebuild with `cnn-course build`."
            )
        nbhosting = metadata.get("nbhosting")
        if not isinstance(nbhosting, dict) or not nbhosting.get("title"):
            raise CourseError(
                f"{path} has no `nbhosting: title:` in its front matter; nbhosting shows that "
                "title to students. Add `nbhosting: {title: ..., version: ...}` to the source's "
                "front matter and rebuild."
            )
        title = " ".join(str(nbhosting["title"]).split())
        notebooks.append((path, {**nbhosting, "title": title}))
    return notebooks


def _module_files(repo: Path) -> list[PublishedFile]:
    """The student-facing modules of cnn_course, refused if one reaches instructor code."""
    files = []
    for path in sorted((repo / "cnn_course").glob("*.py")):
        if path.name in EXCLUDED_MODULES:
            continue
        text = path.read_text(encoding="utf-8")
        found = INSTRUCTOR_IMPORT.search(text)
        if found or "autograder" in text:
            what = found.group(0).strip() if found else "the word `autograder`"
            raise CourseError(
                f"cnn_course/{path.name} is published to students but refers to instructor-only "
                f"code ({what}). Students' containers do not have "
                f"{', '.join(EXCLUDED_MODULES)} or autograder/: move that code out of "
                f"{path.name}, or make the module instructor-only (EXCLUDED_MODULES in publish.py)."
            )
        files.append(PublishedFile(f"modules/cnn_course/{path.name}", text.encode("utf-8")))
    return files


def _dependencies(repo: Path) -> list[str]:
    """``[project].dependencies`` of pyproject.toml, as written there."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise CourseError(
                "Publishing reads pyproject.toml, which needs Python 3.11 or newer, or the "
                "`tomli` package on Python 3.10: run `pip install tomli`."
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


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement


# --- file contents -----------------------------------------------------------------------------

_HEADER = (
    "Generated by `cnn-course publish nbhosting` (cnn-course {version}). Do not edit by hand:\n"
    "edit the instructor's course repository and publish again."
)


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.split("\n"))


def _nbhosting_yaml(notebooks: list[tuple[Path, dict]]) -> str:
    titles = [meta["title"] for _, meta in notebooks]
    lines = [
        _comment(_HEADER.format(version=__version__)),
        "tracks:\n",
        "  - name: Labs\n",
        "    id: labs\n",
        f"    description: {json.dumps('; '.join(titles), ensure_ascii=False)}\n",
        "    sections:\n",
        "      - name: Labs\n",
        "        notebooks:\n",
    ]
    for path, meta in notebooks:
        version = f" (version {meta['version']})" if meta.get("version") else ""
        lines.append(f"          # {meta['title']}{version}\n")
        lines.append(f"          - {json.dumps(f'{NOTEBOOK_FOLDER}/{path.name}')}\n")
    lines += [
        "\n",
        "# In every folder holding a notebook, nbhosting links `data` (source) to the read-only\n",
        f"# static folder `data` (destination), seen in containers as {CONTAINER_DATA}.\n",
        "# This tree has no data/ folder: the instructor provisions it on the nbhosting host\n",
        "# (README.md, section Data). Never add a data/ folder here: nbhosting's update from git\n",
        "# would replace the provisioned folder with it.\n",
        "static-mappings:\n",
        f"  - source: {STATIC_FOLDER}\n",
        f"    destination: {STATIC_FOLDER}\n",
    ]
    return "".join(lines)


def _dockerfile(dependencies: list[str]) -> str:
    student = [
        dependency
        for dependency in dependencies
        if _requirement_name(dependency) not in INSTRUCTOR_ONLY_DEPENDENCIES
    ]
    torch = [dep for dep in student if _requirement_name(dep) in TORCH_PACKAGES]
    others = [dep for dep in student if _requirement_name(dep) not in TORCH_PACKAGES]

    def pip_install(requirements: list[str], options: str = "") -> str:
        quoted = " \\\n        ".join(shlex.quote(requirement) for requirement in requirements)
        return f"RUN pip install --no-cache-dir{options} \\\n        {quoted}\n"

    excluded = ", ".join(INSTRUCTOR_ONLY_DEPENDENCIES)
    parts = [
        _comment(_HEADER.format(version=__version__)),
        "#\n",
        "# The image nbhosting runs each student's container from. nbhosting builds it with\n",
        "# `nbh-manage course-build-image <course>` when the course's image name is the course name.\n",
        "FROM nbhosting/scipy-notebook\n",
        "\n",
        "# The runtime dependencies of cnn-course, as pyproject.toml [project].dependencies pins\n",
        f"# them ({excluded}: instructor-only, left out). torch and torchvision come from PyTorch's\n",
        "# CPU-only wheel index: nbhosting containers have no GPU, and the default Linux wheels\n",
        "# bring several GB of CUDA libraries.\n",
    ]
    if torch:
        parts.append(pip_install(torch, f" --index-url {TORCH_CPU_INDEX}"))
    if others:
        parts.append(pip_install(others))
    parts += [
        "\n",
        "# The helper package is not installed: nbhosting puts the course's modules/ folder on\n",
        "# PYTHONPATH. The data root is the read-only static folder of nbhosting.yaml's static\n",
        "# mapping; the cache (uncompressed copies, rebuilt after each container restart) stays\n",
        "# inside the container, out of the student's work folder.\n",
        f"ENV CNN_COURSE_DATA={CONTAINER_DATA} \\\n",
        f"    CNN_COURSE_CACHE={CONTAINER_CACHE}\n",
    ]
    return "".join(parts)


_GITIGNORE = """\
# Generated by `cnn-course publish nbhosting`.
__pycache__/
.ipynb_checkpoints/
# The data is provisioned on the nbhosting host, never committed (see README.md, section Data).
/data/
"""


def _readme(notebooks: list[tuple[Path, dict]]) -> str:
    listing = "\n".join(
        f"| `{NOTEBOOK_FOLDER}/{path.name}` | {meta['title']}"
        + (f" (version {meta['version']})" if meta.get("version") else "")
        + " |"
        for path, meta in notebooks
    )
    return _README.format(
        version=__version__,
        listing=listing,
        manifest=MANIFEST,
        data=CONTAINER_DATA,
        cache=CONTAINER_CACHE,
        folder=STATIC_FOLDER,
        excluded=", ".join(f"`{name}`" for name in EXCLUDED_MODULES),
        excluded_deps=", ".join(INSTRUCTOR_ONLY_DEPENDENCIES),
    )


_README = """\
# cnn-course for nbhosting (student tree)

This repository is the **student-only** form of the cnn-course labs, generated by
`cnn-course publish nbhosting` (cnn-course {version}) from the instructor's course repository.
Do not edit it by hand: edit the course repository and publish again (section Updating).

nbhosting mounts this whole repository read-only in every student's container, so **everything
here is readable by every student**. It holds no solutions, no hidden tests and no grading code,
and must never receive any: keep the instructor's repository private and separate.

| path | what |
|---|---|
{listing}
| `modules/cnn_course/` | the helper package the notebooks import (nbhosting puts `modules/` on `PYTHONPATH`); the instructor-only modules {excluded} are left out |
| `.nbhosting/nbhosting.yaml` | the track students see, and the static mapping for the data |
| `.nbhosting/Dockerfile` | the course image: `nbhosting/scipy-notebook` plus the lab's dependencies |
| `{manifest}` | the files `cnn-course publish` wrote; an update replaces or removes only these |

## Deploying

1. Put this folder under git and push it to a **new** repository that the nbhosting host can
   clone:

   ```bash
   git init && git add -A && git commit -m "cnn-course labs for nbhosting"
   git remote add origin <giturl> && git push -u origin HEAD
   ```

2. On the nbhosting host, create the course (here named `cnn-course`; its image name defaults
   to the course name, which makes nbhosting build the image from `.nbhosting/Dockerfile`),
   pull it, and build its image:

   ```bash
   nbh-manage course-create cnn-course <giturl>
   nbh-manage course-pull cnn-course          # or "update from git" on the course's staff page
   nbh-manage course-build-image cnn-course   # or "rebuild image"; pip-installs torch (CPU) etc.
   ```

3. Provision the data (next section), then open the notebook from the course's staff page to
   check that it runs.

## Data

The containers may have no network, and the data is too large for git (the CIFAR-10 pack is
above 100 MB), so the data lives on the nbhosting host, outside this repository:

1. On a machine with the data and the course repository, write an offline data root:
   `cnn-course data pack DIR` (MNIST `.gz` files, one CIFAR-10 `.npz` pack, `SHA256SUMS`).
2. Copy the **contents** of `DIR` to the course's static area on the nbhosting host,
   `$NBHROOT/static/cnn-course/{folder}/` (`NBHROOT` is usually `/nbhosting/current`), so that it
   holds `MNIST/raw/*.gz`, `CIFAR-10/*.npz` and `SHA256SUMS`; check the copy with
   `cd $NBHROOT/static/cnn-course/{folder} && sha256sum -c SHA256SUMS`, and make it readable by all
   (`chmod -R a+rX`).

nbhosting mounts the static area read-only at `/home/jovyan/static` in every container, and the
static mapping in `.nbhosting/nbhosting.yaml` links `{folder}` beside each notebook to it. The
image sets `CNN_COURSE_DATA={data}`, the root every loader reads; without it, the
loaders' default `./{folder}` reaches the same folder through that link. Uncompressed copies
are cached in `CNN_COURSE_CACHE={cache}`, inside the container, not in the student's
work folder: the first CIFAR-10 load after a container start takes about 10 s.

nbhosting's "update from git" copies each mapped folder of this repository into the static area.
This repository has no `{folder}/` folder, so that copy finds nothing (its log says `link_stat ...
failed`) and leaves the provisioned folder alone. **Never add a `{folder}/` folder here**: the next
update would replace the provisioned data with it (`.gitignore` lists it to prevent that).

## Updating

In the instructor's course repository:

```bash
cnn-course build                                      # after editing source/
cnn-course publish nbhosting <this folder> --force    # replaces only the files in the manifest
cd <this folder> && git status && git diff            # review, then commit and push
```

Then "update from git" on nbhosting (or turn on autopull). When `.nbhosting/Dockerfile`
changed, rebuild the image too. nbhosting copies a notebook into a student's space the first
time the student opens it: students who already opened it keep their copy.

## Choices made here

- torch and torchvision come from PyTorch's CPU-only wheel index: the containers have no GPU
  and the default wheels add several GB of CUDA libraries to the image. Versions follow the
  ranges of the course package's `pyproject.toml`; {excluded_deps} (build and grading only) is
  not installed.
- The helper package is copied, not pip-installed, because nbhosting already puts `modules/` on
  `PYTHONPATH`; it is importable from `modules/` alone.
"""


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
