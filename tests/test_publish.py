"""Tests of cnn_course_instructor.publish: the student-only nbhosting tree, its leaks, its writes, its use."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from conftest import REPO, searchable_text

import cnn_course
from cnn_course.errors import CourseError
from cnn_course_instructor import build, publish
from cnn_course_instructor.cli import main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the instructor extra installs tomli
    import tomli as tomllib

SAMPLE = Path(__file__).parent / "samples" / "build_repo"
INSTRUCTOR_PACKAGE = "cnn_course_instructor"
TEMPLATES = (
    "nbhosting.yaml.j2",
    "Dockerfile.j2",
    "nbhosting-README.md.j2",
    "nbhosting-gitignore.j2",
)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """The real course published once for the module (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("published") / "cnn-course-nbhosting"
    publish.publish_nbhosting(REPO, out)
    return out


@pytest.fixture(scope="module")
def sample_repo(tmp_path_factory) -> Path:
    """A small course repository: the sample course, built, with the repository's pyproject.toml.

    It holds no copy of cnn_course: publish takes the student package from the installed one.
    """
    repo = tmp_path_factory.mktemp("sample") / "course"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", "notebooks"))
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    build.build(repo)
    return repo


def _files(tree: Path) -> dict[str, bytes]:
    """Every file under ``tree``, by relative path."""
    return {
        path.relative_to(tree).as_posix(): path.read_bytes()
        for path in sorted(tree.rglob("*"))
        if path.is_file()
    }


def _installed_student_package() -> dict[str, bytes]:
    """Every file of the installed ``cnn_course`` package, bytecode aside, by relative path."""
    package = Path(cnn_course.__file__).parent
    files = {}
    for folder, subfolders, names in os.walk(package):
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        for name in names:
            if not name.endswith(".pyc"):
                path = Path(folder) / name
                files[path.relative_to(package).as_posix()] = path.read_bytes()
    return files


def _name(requirement: str) -> str:
    """The project name a requirement names (``torch>=2.2`` -> ``torch``)."""
    return re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0).lower()


def _lab_title(source: Path) -> str:
    return jupytext.read(source).metadata["cnn_course"]["title"]


def _track(tree: Path) -> tuple[dict, list[str]]:
    """nbhosting.yaml's only track, and the published notebooks its sections list, in order."""
    config = yaml.safe_load((tree / ".nbhosting/nbhosting.yaml").read_text())
    [track] = config["tracks"]
    listed = [
        path.relative_to(tree).as_posix()
        for section in track["sections"]
        for pattern in section["notebooks"]
        for path in sorted(tree.glob(pattern))
    ]
    return track, listed


# --- what the tree holds ---------------------------------------------------------------------


def test_tree_holds_the_notebooks_modules_and_nbhosting_files(published):
    """Does the tree hold exactly the student notebooks, the student package and .nbhosting/?"""
    files = _files(published)
    labs = [source.stem for source in sorted((REPO / "source").glob("*.md"))]
    assert "cnn_lab" in labs
    assert sorted(files) == sorted(
        [
            ".gitignore",
            ".nbhosting/Dockerfile",
            ".nbhosting/cnn-course-manifest.txt",
            ".nbhosting/nbhosting.yaml",
            "README.md",
            *(f"notebooks/{lab}.md" for lab in labs),
            *(f"notebooks/{lab}.ipynb" for lab in labs),
            *(f"modules/cnn_course/{name}" for name in _installed_student_package()),
        ]
    )
    for lab in labs:
        for suffix in (".md", ".ipynb"):
            built = (REPO / f"notebooks/student/{lab}{suffix}").read_bytes()
            assert files[f"notebooks/{lab}{suffix}"] == built
    manifest = publish.read_manifest(published)
    assert sorted(manifest) == sorted(set(files) - {publish.MANIFEST})


def test_published_package_is_the_installed_student_package(published, sample_repo, tmp_path):
    """Is modules/cnn_course/ the installed cnn_course, every file of it, even from a repository
    without a cnn_course/ folder?"""
    installed = _installed_student_package()
    assert {
        "__init__.py",
        "checks.py",
        "data.py",
        "judging/__init__.py",
        "labs/__init__.py",
    } <= set(installed)
    assert any(name.startswith("labs/cnn_lab/") for name in installed)  # each lab's package
    for tree in (published, None):
        if tree is None:
            assert not (sample_repo / "cnn_course").exists()
            tree = tmp_path / "sample-tree"
            publish.publish_nbhosting(sample_repo, tree)
        modules = {
            relative.removeprefix("modules/cnn_course/"): content
            for relative, content in _files(tree).items()
            if relative.startswith("modules/")
        }
        assert modules == installed


def test_no_published_file_imports_or_names_the_instructor_package(published):
    """Does no published file import, or even name, cnn_course_instructor (nor the autograder)?"""
    naming = []
    for relative, content in _files(published).items():
        text = content.decode("utf-8", errors="replace")
        if INSTRUCTOR_PACKAGE in text:
            naming.append(relative)
        if relative.startswith("modules/") and "autograder" in text.lower():
            naming.append(relative)
    assert naming == []


def test_nbhosting_yaml_lists_every_notebook_with_its_title(published):
    """Does nbhosting.yaml parse, and list each lab's notebook, titled as nbhosting shows it?"""
    config = yaml.safe_load((published / ".nbhosting/nbhosting.yaml").read_text())
    track, listed = _track(published)
    assert {"name", "description", "id", "sections"} <= set(track)
    sources = sorted((REPO / "source").glob("*.md"))
    assert listed == [f"notebooks/{source.stem}.md" for source in sources]
    for relative, source in zip(listed, sources, strict=True):
        # nbhosting reads a notebook's title with jupytext, from its `nbhosting` metadata.
        title = jupytext.read(published / relative).metadata["nbhosting"]["title"]
        assert title == _lab_title(source)
        assert title in track["description"]
    cnn_lab = jupytext.read(published / "notebooks/cnn_lab.md").metadata["nbhosting"]["title"]
    assert cnn_lab == "Convolutional neural networks in PyTorch"
    assert config["static-mappings"] == [{"source": "data", "destination": "data"}]


def test_templates_list_every_lab_in_source_order(sample_repo, tmp_path):
    """With two labs, do the rendered nbhosting.yaml and README list both, in source order,
    each with the title of its front matter (a colon and an ampersand kept as they are)?"""
    repo = shutil.copytree(sample_repo, tmp_path / "repo")
    source = (repo / "source/sample_lab.md").read_text()
    title = _lab_title(repo / "source/sample_lab.md")
    front, body = source.split("\ncnn_course:\n", 1)
    body = re.sub(r"^  assignment: .*$", "  assignment: another_lab", body, count=1, flags=re.M)
    body = re.sub(
        r"^  title: .*$", '  title: "Another lab: a colon & more"', body, count=1, flags=re.M
    )
    other = f"{front}\ncnn_course:\n{body}"
    assert "another_lab" in other and "Another lab" in other
    (repo / "source/another_lab.md").write_text(other)
    shutil.copytree(repo / "autograder/sample_lab", repo / "autograder/another_lab")
    build.build(repo)

    out = tmp_path / "out"
    publish.publish_nbhosting(repo, out)
    track, listed = _track(out)
    assert listed == ["notebooks/another_lab.md", "notebooks/sample_lab.md"]  # source order
    titles = [jupytext.read(out / path).metadata["nbhosting"]["title"] for path in listed]
    assert titles == ["Another lab: a colon & more", title]
    assert track["description"] == "; ".join(titles)
    readme = (out / "README.md").read_text()
    for path, shown in zip(listed, titles, strict=True):
        assert f"| `{path}` | {shown}" in readme


def test_templates_are_package_data():
    """Are the templates publish renders files of the instructor package, shipped as its data?"""
    templates = Path(publish.__file__).parent / "templates"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"][INSTRUCTOR_PACKAGE]
    for name in TEMPLATES:
        assert (templates / name).is_file(), name
        assert any(fnmatch.fnmatch(f"templates/{name}", pattern) for pattern in shipped), name


def test_dockerfile_installs_exactly_the_student_dependencies(published):
    """Does the Dockerfile pip-install exactly pyproject's [project] dependencies (torch from the
    CPU wheel index), none of the instructor extra, and set the data root?"""
    text = (published / ".nbhosting/Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM nbhosting/scipy-notebook"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runs = [
        shlex.split(line.removeprefix("RUN "))
        for line in text.replace("\\\n", " ").split("\n")
        if line.startswith("RUN ")
    ]
    assert [run[:3] for run in runs[:2]] == [["pip", "install", "--no-cache-dir"]] * 2
    torch, others = (run[3:] for run in runs[:2])
    assert torch[:2] == ["--index-url", publish.TORCH_CPU_INDEX]
    assert [_name(requirement) for requirement in torch[2:]] == ["torch", "torchvision"]
    assert sorted(torch[2:] + others) == sorted(project["dependencies"])
    assert len(torch[2:] + others) == len(project["dependencies"])
    instructor = {
        _name(requirement) for requirement in project["optional-dependencies"]["instructor"]
    }
    assert {"nbgrader", "jinja2"} <= instructor
    assert not instructor & {_name(requirement) for requirement in others}
    config = yaml.safe_load((published / ".nbhosting/nbhosting.yaml").read_text())
    destination = config["static-mappings"][0]["destination"]
    assert f"CNN_COURSE_DATA=/home/jovyan/static/{destination}" in text


@pytest.mark.parametrize("cuda", [None, "12.4"])
def test_the_image_build_stops_on_a_cuda_torch_with_a_message(published, tmp_path, cuda):
    """The Dockerfile's last install step, run against a torch that says it is a CPU build or a
    CUDA one: does it pass the first and stop the build, saying what to do, on the second?"""
    text = (published / ".nbhosting/Dockerfile").read_text()
    runs = [line.removeprefix("RUN ") for line in text.split("\n") if line.startswith("RUN ")]
    guard = shlex.split(runs[-1])
    assert guard[:2] == ["python", "-c"]
    fake = tmp_path / "torch"
    (fake / "version").mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '2.14.1'\nfrom . import version\n")
    (fake / "version" / "__init__.py").write_text(f"cuda = {cuda!r}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, *guard[1:]], env=env, capture_output=True, text=True)
    if cuda is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0
        assert "is a CUDA build" in done.stderr and publish.TORCH_CPU_INDEX in done.stderr


def test_modules_import_from_the_tree_alone(published, tmp_path):
    """Does every published module import from modules/ alone, with no instructor package there?"""
    tree = shutil.copytree(published, tmp_path / "tree")
    names = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in _installed_student_package()
        if name.endswith(".py") and name != "__init__.py"
    )
    assert {"checks", "data", "judging", "labs", "labs.cnn_lab.checks"} <= set(names)
    script = (
        "import importlib, importlib.util, sys\n"
        f"for name in {names!r}:\n"
        "    module = importlib.import_module('cnn_course.' + name)\n"
        "    print(module.__file__)\n"
        f"assert importlib.util.find_spec({INSTRUCTOR_PACKAGE!r}) is None\n"
    )
    # -S: no site-packages processing, so the editable install of cnn-course is not visible;
    # the dependencies come from the site-packages folder put on the path by hand.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree / "modules"), sysconfig.get_paths()["purelib"]]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split()
    assert len(imported) == len(names)
    assert all(Path(path).is_relative_to(tree / "modules" / "cnn_course") for path in imported)


# --- leaks ----------------------------------------------------------------------------------


def _lines(path: Path) -> set[str]:
    """A file's stripped lines; for a notebook (JSON with cells), its cells' lines too."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = {line.strip() for line in text.split("\n")}
    try:
        notebook = json.loads(text)
    except ValueError:
        return lines
    if isinstance(notebook, dict) and isinstance(notebook.get("cells"), list):
        for cell in notebook["cells"]:
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            lines |= {line.strip() for line in source.split("\n")}
    return lines


def _code_lines(folder: Path) -> set[str]:
    """The distinctive lines of the Python files under ``folder``: long, not imports or comments."""
    return {
        line.strip()
        for path in folder.rglob("*.py")
        for line in path.read_text().split("\n")
        if len(line.strip()) >= 30 and not line.strip().startswith(("import ", "from ", "#", '"""'))
    }


@pytest.fixture(scope="module")
def secrets() -> dict[str, set[str]]:
    """What must never be published, as stripped lines, by kind."""
    given: set[str] = set()
    solution_lines: set[str] = set()
    for source in sorted((REPO / "source").glob("*.md")):
        relative = f"source/{source.name}"
        facts = build.public_facts(REPO, source.stem)
        filled = build.fill_facts(build.read_source(source), relative, facts)
        marked = build.mark_cells(filled, relative)
        given |= {line.strip() for line in build.shown_lines(marked)}
        solution_lines |= {
            line.strip() for line in build.solution_lines(marked) if len(line.strip()) > 3
        }
    solution_lines -= given  # e.g. `loss.backward()`, also shown outside the regions
    student = set().union(*(_lines(p) for p in (REPO / "notebooks/student").glob("*.ipynb")))
    solution_notebook = {
        line
        for path in (REPO / "notebooks/solution").glob("*.ipynb")
        for line in _lines(path)
        if len(line) > 3
    } - student
    # Lines the students are given anyway: the lab's code outside the regions, and the student
    # package, which by convention never holds hidden tests or instructor tooling. Few lines
    # may be shared with it (the same idiom written twice).
    package = "\n".join(
        content.decode("utf-8", errors="replace")
        for content in _installed_student_package().values()
    )
    # Idioms a solution shares with the package (`model.eval()`, `handle.remove()`) reveal
    # nothing; few may be shared.
    idioms = (solution_lines | solution_notebook) & {line.strip() for line in package.split("\n")}
    assert len(idioms) <= 10, f"solutions and cnn_course share many lines: {idioms}"
    solution_lines -= idioms
    solution_notebook -= idioms
    given_text = "\n".join(given)
    kinds = {
        "autograder": (_code_lines(REPO / "autograder"), 10, 100),
        "instructor": (_code_lines(REPO / INSTRUCTOR_PACKAGE), 20, 500),
    }
    found = {"solution": solution_lines, "solution notebook": solution_notebook}
    for kind, (lines, most_shared, least_kept) in kinds.items():
        shared = {line for line in lines if line in package}
        assert len(shared) <= most_shared, f"{kind} and cnn_course share many lines: {shared}"
        shown = {line for line in lines if line in given_text}  # e.g. with a comment added
        found[kind] = lines - shared - shown
        assert len(found[kind]) > least_kept, kind
    assert len(solution_lines) > 20 and len(solution_notebook) > 20
    return found


def _leaks(tree: Path, secrets: dict[str, set[str]]) -> list[str]:
    """Every way the files under ``tree`` reveal instructor material; empty when none."""
    leaks = []
    instructor_files = {
        path.read_bytes()
        for folder in ("source", "autograder", INSTRUCTOR_PACKAGE)
        for path in (REPO / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        relative = path.relative_to(tree).as_posix()
        content = path.read_bytes()
        text = searchable_text(content)
        lines = _lines(path)
        if content in instructor_files:
            leaks.append(
                f"{relative}: a copy of a file of source/, autograder/ or {INSTRUCTOR_PACKAGE}/"
            )
        if INSTRUCTOR_PACKAGE in text:
            leaks.append(f"{relative}: names {INSTRUCTOR_PACKAGE}")
        if relative.startswith("modules/") and "autograder" in text.lower():
            leaks.append(f"{relative}: mentions the autograder")
        for kind in ("solution", "solution notebook"):
            found = sorted(secrets[kind] & lines)
            if found:
                leaks.append(f"{relative}: {len(found)} {kind} lines, e.g. {found[0]!r}")
        for kind in ("autograder", "instructor"):
            found = sorted(line for line in secrets[kind] if line in text)
            if found:
                leaks.append(f"{relative}: {len(found)} {kind} lines, e.g. {found[0]!r}")
    return leaks


def test_no_solution_or_instructor_code_reaches_the_published_tree(published, secrets):
    """Does no file of the tree hold a solution line, hidden-test or instructor code, or a source?"""
    assert _leaks(published, secrets) == []


def _disguised(path: Path) -> bytes:
    """``path``'s text, no longer byte-identical to it and no longer naming the instructor package."""
    text = path.read_text().replace(INSTRUCTOR_PACKAGE, "helpers")
    return f"# copied here by mistake\n{text}".encode()


def test_the_leak_search_finds_what_it_looks_for(published, secrets, tmp_path):
    """Does the same search find solution lines, hidden tests, instructor code and sources when
    planted, each by the rule meant for it?"""
    solution = REPO / "notebooks/solution/cnn_lab.ipynb"
    every_solution = set().union(
        *(_lines(p) for p in (REPO / "notebooks/solution").glob("*.ipynb"))
    )
    assert secrets["solution"] <= every_solution
    hidden_tests = REPO / "autograder/cnn_lab/__init__.py"
    plants = {
        "notebooks/cnn_lab_solution.ipynb": (solution.read_bytes(), "solution lines"),
        "modules/cnn_course/hidden.py": (_disguised(hidden_tests), "autograder lines"),
        "modules/cnn_course/grading.py": (
            _disguised(REPO / INSTRUCTOR_PACKAGE / "grading" / "registry.py"),
            "instructor lines",
        ),
        "modules/cnn_course/tools.py": (
            _disguised(REPO / INSTRUCTOR_PACKAGE / "build.py"),
            "instructor lines",
        ),
        "modules/cnn_course/extra.py": (
            f"from {INSTRUCTOR_PACKAGE} import build\n".encode(),
            f"names {INSTRUCTOR_PACKAGE}",
        ),
        "modules/cnn_course/publish.py": (
            (REPO / INSTRUCTOR_PACKAGE / "publish.py").read_bytes(),
            "a copy of a file",
        ),
        "notebooks/lab_source.md": ((REPO / "source/cnn_lab.md").read_bytes(), "a copy of a file"),
    }
    for number, (relative, (content, rule)) in enumerate(plants.items()):
        tree = shutil.copytree(published, tmp_path / f"tree{number}")
        (tree / relative).write_bytes(content)
        leaks = _leaks(tree, secrets)
        assert leaks and all(leak.startswith(f"{relative}: ") for leak in leaks), (relative, leaks)
        assert any(rule in leak for leak in leaks), (relative, rule, leaks)


# --- writing --------------------------------------------------------------------------------


def test_non_empty_folder_is_refused_without_force(sample_repo, tmp_path):
    """Is a folder holding anything refused without --force, and left exactly as it was?"""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CourseError, match="is not empty.*--force"):
        publish.publish_nbhosting(sample_repo, out)
    assert _files(out) == {"notes.txt": b"mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


def test_force_touches_only_the_files_publish_wrote_and_is_idempotent(sample_repo, tmp_path):
    """With --force, do others' files survive, stale ones go, and the tree come out byte-identical?"""
    out = tmp_path / "out"
    written = publish.publish_nbhosting(sample_repo, out)
    first = _files(out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == sorted(first)
    assert "notebooks/sample_lab.md" in first
    # Files publish never wrote, and one it wrote earlier but no longer produces.
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "notebooks" / "my_notes.md").write_text("# mine\n")
    (out / "modules" / "cnn_course" / "old_helper.py").write_text("OLD = 1\n")
    (out / "old").mkdir()
    (out / "old" / "lab.md").write_text("old\n")
    manifest = out / publish.MANIFEST
    manifest.write_text(manifest.read_text() + "modules/cnn_course/old_helper.py\nold/lab.md\n")

    publish.publish_nbhosting(sample_repo, out, force=True)
    second = _files(out)
    assert second.pop(".git/HEAD") == b"ref: refs/heads/main\n"
    assert second.pop("notebooks/my_notes.md") == b"# mine\n"
    assert second == first  # stale files removed, everything else byte-identical
    assert not (out / "old").exists()


def test_force_never_replaces_a_file_publish_did_not_write(sample_repo, tmp_path):
    """Is a file in the way that is not in the manifest refused, and left untouched?"""
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my own readme\n")
    with pytest.raises(CourseError, match="README.md, which publish did not write"):
        publish.publish_nbhosting(sample_repo, out, force=True)
    assert _files(out) == {"README.md": b"my own readme\n"}


def test_paths_leading_outside_the_tree_are_refused(sample_repo, tmp_path):
    """Do a manifest listing ../ paths, or a link out of the tree, stop publish before it acts?"""
    out = tmp_path / "out"
    (out / ".nbhosting").mkdir(parents=True)
    (out / publish.MANIFEST).write_text("../victim.txt\n")
    (tmp_path / "victim.txt").write_text("keep me")
    with pytest.raises(CourseError, match="not a plain path inside"):
        publish.publish_nbhosting(sample_repo, out, force=True)
    assert (tmp_path / "victim.txt").read_text() == "keep me"
    # A listed path that a symbolic link sends outside the tree is refused as well.
    (tmp_path / "elsewhere" / "cnn_course").mkdir(parents=True)
    (tmp_path / "elsewhere" / "cnn_course" / "old.py").write_text("keep me")
    (out / "modules").symlink_to(tmp_path / "elsewhere")
    (out / publish.MANIFEST).write_text("modules/cnn_course/old.py\n")
    with pytest.raises(CourseError, match="leads outside .* through a symbolic link"):
        publish.publish_nbhosting(sample_repo, out, force=True)
    assert (tmp_path / "elsewhere" / "cnn_course" / "old.py").read_text() == "keep me"


def test_publishing_over_the_course_repository_is_refused(sample_repo):
    """Is OUT refused when it is the course repository itself, or a folder around it?"""
    for out in (sample_repo, sample_repo.parent):
        with pytest.raises(CourseError, match="holds the instructor's course repository"):
            publish.publish_nbhosting(sample_repo, out, force=True)


def test_missing_or_stale_notebooks_are_refused(sample_repo, tmp_path):
    """Is publishing refused, naming `cnn-course build`, when notebooks/ is stale or missing?"""
    repo = shutil.copytree(sample_repo, tmp_path / "repo")
    student = repo / "notebooks/student/sample_lab.md"
    student.write_text(student.read_text().replace("A sample lab", "An edited lab"))
    with pytest.raises(CourseError, match="(?s)sample_lab.md: differs.*`cnn-course build`"):
        publish.publish_nbhosting(repo, tmp_path / "out")
    shutil.rmtree(repo / "notebooks")
    with pytest.raises(CourseError, match="(?s)missing.*`cnn-course build`"):
        publish.publish_nbhosting(repo, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_command_line_prints_the_files_and_their_total_size(sample_repo, tmp_path, capsys):
    """Does `cnn-course publish nbhosting` list each file written and the total, then refuse a rerun?"""
    out = tmp_path / "out"
    code = main(["publish", "nbhosting", str(out), "--repo", str(sample_repo)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    files = _files(out)
    for relative in files:
        assert f"wrote {relative} " in printed
    assert f"{len(files)} files, {sum(map(len, files.values())):,} bytes in {out}" in printed
    code = main(["publish", "nbhosting", str(out), "--repo", str(sample_repo)])
    assert code == 2
    assert "cnn-course: error:" in capsys.readouterr().err


# --- as deployed ----------------------------------------------------------------------------

DEV_INSTALL = (
    "__editable__.cnn_course*",
    "__editable___cnn_course*",
    "_cnn_course*.pth",
    "cnn_course*.dist-info",
    "cnn_course*.egg-info",
    "cnn_course.egg-link",
    "cnn_course",
    INSTRUCTOR_PACKAGE,
)

RUN_SETUP = """\
import sys

import nbformat
from nbclient import NotebookClient

source, target, workdir, kernel = sys.argv[1:5]
notebook = nbformat.read(source, as_version=4)
first_plot = next(
    index
    for index, cell in enumerate(notebook.cells)
    if cell.cell_type == "code" and "plots.show_images" in cell.source
)
notebook.cells = notebook.cells[: first_plot + 1]
notebook.cells.append(
    nbformat.v4.new_code_cell(
        "import cnn_course, importlib.util\\n"
        "from cnn_course import checks, data, judging, labs\\n"
        "print('imported from', cnn_course.__file__)\\n"
        "print('instructor importable:', "
        "importlib.util.find_spec('cnn_course_instructor') is not None)"
    )
)
client = NotebookClient(
    notebook, kernel_name=kernel, timeout=600, resources={"metadata": {"path": workdir}}
)
client.execute()
nbformat.write(notebook, target)
"""


@pytest.mark.slow
@pytest.mark.realdata
def test_published_notebook_runs_as_deployed(published, real_root, tmp_path):
    """In a fresh environment without cnn-course, do the setup and data cells run from modules/?

    The environment sees the dependencies but not the development install of cnn-course: the
    helper package comes only from the tree's modules/ on PYTHONPATH, as nbhosting sets it.
    """
    tree = shutil.copytree(published, tmp_path / "tree")
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        IPYTHONDIR=str(tmp_path / "ipython"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
        JUPYTER_PATH=str(venv / "share" / "jupyter"),
    )

    def run(*args: str | Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(arg) for arg in args],
            cwd=tmp_path,
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=900,
        )

    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    linked = tmp_path / "dependencies"
    linked.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not any(fnmatch.fnmatch(entry.name, pattern) for pattern in DEV_INSTALL):
            (linked / entry.name).symlink_to(entry)
    (site / "dependencies.pth").write_text(f"{linked}\n")

    for package in ("cnn_course", INSTRUCTOR_PACKAGE):
        missing = run(python, "-c", f"import {package}")
        assert missing.returncode != 0 and f"No module named '{package}'" in missing.stderr
    assert run(python, "-c", "import torch, yaml, nbclient, jupytext").returncode == 0

    kernel = "cnn-course-deployed"
    installed = run(python, "-m", "ipykernel", "install", "--prefix", venv, "--name", kernel)
    assert installed.returncode == 0, installed.stderr
    ipynb = tmp_path / "cnn_lab.ipynb"
    converted = run(
        python, "-m", "jupytext", "--to", "ipynb", "--output", ipynb, tree / "notebooks/cnn_lab.md"
    )
    assert converted.returncode == 0, converted.stderr
    (tmp_path / "run_setup.py").write_text(RUN_SETUP)
    executed_path = tmp_path / "executed.ipynb"
    deployed = {
        "PYTHONPATH": str(tree / "modules"),
        "CNN_COURSE_DATA": str(real_root),
        "CNN_COURSE_CACHE": str(tmp_path / "cache"),
    }
    result = run(
        python, "run_setup.py", ipynb, executed_path, tree / "notebooks", kernel, extra=deployed
    )
    assert result.returncode == 0, result.stderr[-3000:]

    executed = nbformat.read(executed_path, as_version=4)
    outputs = [
        output for cell in executed.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs)
    probe = "".join(output.get("text", "") for output in executed.cells[-1].outputs)
    assert f"imported from {tree / 'modules' / 'cnn_course' / '__init__.py'}" in probe
    assert "instructor importable: False" in probe
