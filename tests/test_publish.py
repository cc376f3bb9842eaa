"""Tests of cnn_course.publish: the student-only nbhosting tree, its leaks, its writes, its use."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from conftest import REPO

from cnn_course import build, publish
from cnn_course.cli import main
from cnn_course.errors import CourseError

SAMPLE = Path(__file__).parent / "samples" / "build_repo"
INSTRUCTOR_FILE_NAMES = {"build.py", "_instructor.py", "publish.py", "cli.py"}


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """The real course published once for the module (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("published") / "cnn-course-nbhosting"
    publish.publish_nbhosting(REPO, out)
    return out


@pytest.fixture(scope="module")
def sample_repo(tmp_path_factory) -> Path:
    """A small course repository: the sample lab, built, with this package and pyproject.toml."""
    repo = tmp_path_factory.mktemp("sample") / "course"
    shutil.copytree(SAMPLE / "source", repo / "source")
    shutil.copytree(
        REPO / "cnn_course", repo / "cnn_course", ignore=shutil.ignore_patterns("__pycache__")
    )
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


def _student_modules() -> list[str]:
    return sorted(
        path.name
        for path in (REPO / "cnn_course").glob("*.py")
        if path.name not in INSTRUCTOR_FILE_NAMES
    )


# --- what the tree holds ---------------------------------------------------------------------


def test_tree_holds_the_notebooks_modules_and_nbhosting_files(published):
    """Does the tree hold exactly the student notebooks, the student modules and .nbhosting/?"""
    files = _files(published)
    assert sorted(files) == sorted(
        [
            ".gitignore",
            ".nbhosting/Dockerfile",
            ".nbhosting/cnn-course-manifest.txt",
            ".nbhosting/nbhosting.yaml",
            "README.md",
            "notebooks/cnn_lab.md",
            *(f"modules/cnn_course/{name}" for name in _student_modules()),
        ]
    )
    assert "modules/cnn_course/data.py" in files and "modules/cnn_course/checks.py" in files
    assert files["notebooks/cnn_lab.md"] == (REPO / "notebooks/student/cnn_lab.md").read_bytes()
    manifest = publish.read_manifest(published)
    assert sorted(manifest) == sorted(set(files) - {publish.MANIFEST})


def test_nbhosting_yaml_lists_every_notebook_with_its_title(published):
    """Does nbhosting.yaml parse, and list each published notebook, titled as nbhosting shows it?"""
    config = yaml.safe_load((published / ".nbhosting/nbhosting.yaml").read_text())
    [track] = config["tracks"]
    assert {"name", "description", "id", "sections"} <= set(track)
    listed = sorted(
        path.relative_to(published).as_posix()
        for section in track["sections"]
        for pattern in section["notebooks"]
        for path in published.glob(pattern)
    )
    assert listed == ["notebooks/cnn_lab.md"]
    for relative in listed:
        # nbhosting reads a notebook's title with jupytext, from its `nbhosting` metadata.
        title = jupytext.read(published / relative).metadata["nbhosting"]["title"]
        source = jupytext.read(REPO / "source" / Path(relative).name).metadata["nbhosting"]
        assert title == source["title"] == "Convolutional neural networks in PyTorch"
        assert title in track["description"]
    assert config["static-mappings"] == [{"source": "data", "destination": "data"}]


def test_dockerfile_installs_the_runtime_dependencies_and_points_at_the_data(published):
    """Does the Dockerfile install pyproject's dependencies (nbgrader aside) and set the data root?"""
    text = (published / ".nbhosting/Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM nbhosting/scipy-notebook"
    tomllib = pytest.importorskip("tomllib")
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in dependencies:
        if dependency.startswith(publish.INSTRUCTOR_ONLY_DEPENDENCIES):
            assert dependency not in text
        else:
            assert f"'{dependency}'" in text, f"{dependency} is not installed by the Dockerfile"
    torch_install = text.split("RUN pip install")[1]
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_install
    assert "'torch>=" in torch_install and "'torchvision>=" in torch_install
    config = yaml.safe_load((published / ".nbhosting/nbhosting.yaml").read_text())
    destination = config["static-mappings"][0]["destination"]
    assert f"CNN_COURSE_DATA=/home/jovyan/static/{destination}" in text


def test_modules_import_from_the_tree_alone(published, tmp_path):
    """Does every published module import from modules/ alone, without the instructor's modules?"""
    tree = shutil.copytree(published, tmp_path / "tree")
    names = [name.removesuffix(".py") for name in _student_modules() if name != "__init__.py"]
    script = (
        "import importlib, importlib.util, sys\n"
        f"for name in {names!r}:\n"
        "    module = importlib.import_module('cnn_course.' + name)\n"
        "    print(module.__file__)\n"
        "for name in ('build', 'cli', 'publish', '_instructor'):\n"
        "    assert importlib.util.find_spec('cnn_course.' + name) is None, name\n"
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


@pytest.fixture(scope="module")
def secrets() -> dict[str, set[str]]:
    """What must never be published, as stripped lines, by kind."""
    given: set[str] = set()
    solution_lines: set[str] = set()
    for source in sorted((REPO / "source").glob("*.md")):
        marked = build.mark_cells(build.read_source(source), source.name)
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
    autograder = {
        line.strip()
        for path in (REPO / "autograder").rglob("*.py")
        for line in path.read_text().split("\n")
        if len(line.strip()) >= 30 and not line.strip().startswith(("import ", "from ", "#", '"""'))
    }
    # Lines the students are given anyway: the lab's code outside the regions, and the helper
    # package, which by convention never holds hidden tests. Few lines may be shared with it.
    modules = "\n".join((REPO / "cnn_course" / name).read_text() for name in _student_modules())
    shared = {line for line in autograder if line in modules}
    assert len(shared) <= 10, f"autograder/ and the student package share many lines: {shared}"
    autograder -= given | shared
    assert len(solution_lines) > 20 and len(solution_notebook) > 20 and len(autograder) > 100
    return {
        "solution": solution_lines,
        "solution notebook": solution_notebook,
        "autograder": autograder,
    }


def _leaks(tree: Path, secrets: dict[str, set[str]]) -> list[str]:
    """Every way the files under ``tree`` reveal instructor material; empty when none."""
    leaks = []
    instructor_files = {
        path.read_bytes()
        for folder in ("source", "autograder")
        for path in (REPO / folder).rglob("*")
        if path.is_file()
    }
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        relative = path.relative_to(tree).as_posix()
        content = path.read_bytes()
        text = content.decode("utf-8", errors="replace")
        lines = _lines(path)
        if path.name in INSTRUCTOR_FILE_NAMES:
            leaks.append(f"{relative}: an instructor-only module")
        if content in instructor_files:
            leaks.append(f"{relative}: a copy of a file of source/ or autograder/")
        if relative.startswith("modules/") and "autograder" in text.lower():
            leaks.append(f"{relative}: mentions the autograder")
        for kind in ("solution", "solution notebook"):
            found = sorted(secrets[kind] & lines)
            if found:
                leaks.append(f"{relative}: {len(found)} {kind} lines, e.g. {found[0]!r}")
        found = sorted(line for line in secrets["autograder"] if line in text)
        if found:
            leaks.append(f"{relative}: {len(found)} autograder lines, e.g. {found[0]!r}")
    return leaks


def test_no_solution_or_grading_code_reaches_the_published_tree(published, secrets):
    """Does no file of the tree hold a solution line, autograder code or a source/ file?"""
    assert _leaks(published, secrets) == []


def test_the_leak_search_finds_what_it_looks_for(published, secrets, tmp_path):
    """Does the same search find solution lines, hidden tests and instructor modules when present?"""
    solution = REPO / "notebooks/solution/cnn_lab.ipynb"
    assert secrets["solution"] <= _lines(solution)
    plants = {
        "notebooks/cnn_lab_solution.ipynb": solution,
        "modules/cnn_course/hidden.py": REPO / "autograder/hidden_tests.py",
        "modules/cnn_course/build.py": REPO / "cnn_course/build.py",
        "notebooks/lab_source.md": REPO / "source/cnn_lab.md",
    }
    for number, (relative, planted) in enumerate(plants.items()):
        tree = shutil.copytree(published, tmp_path / f"tree{number}")
        shutil.copy(planted, tree / relative)
        leaks = _leaks(tree, secrets)
        assert leaks and all(leak.startswith(relative) for leak in leaks), (relative, leaks)


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
        "print('imported from', cnn_course.__file__)\\n"
        "print('build importable:', importlib.util.find_spec('cnn_course.build') is not None)"
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

    missing = run(python, "-c", "import cnn_course")
    assert missing.returncode != 0 and "No module named 'cnn_course'" in missing.stderr
    assert run(python, "-c", "import torch, nbclient, jupytext").returncode == 0

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
    assert "build importable: False" in probe
