"""The labs in JupyterLab 4 in a real browser: images render, checks show, widgets are live.

A JupyterLab server runs on a random local port with a token, in a temporary folder holding
every lab's built student notebook (ipynb and MyST) and solution notebook, in shortened mode.
Debian's Chromium, driven by Playwright, runs their cells and the assertions read the page:
what every lab must do (its student notebook stops at its first stub, its solution runs clean
with every check passed), and what each lab's own figures and widgets must show. Screenshots
are written to ``artifacts/browser/``. Without Chromium (``$CNN_COURSE_CHROMIUM``, default
/usr/bin/chromium) or Playwright the tests are skipped, and fail instead when
``CNN_COURSE_REQUIRE_BROWSER=1`` (as in CI).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import nbformat
import pytest
from conftest import REPO

from cnn_course_instructor.course import Course

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.browser]

LABS = list(Course(REPO).labs)  # every lab's notebooks run in the page; some get more checks
RUN_LIMIT = 900  # seconds a notebook's Run All may take in the page (part 2's solution: ~6 min)

CHROMIUM = Path(os.environ.get("CNN_COURSE_CHROMIUM") or "/usr/bin/chromium")
REQUIRE_ENV = "CNN_COURSE_REQUIRE_BROWSER"
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# JupyterLab user settings: every cell in the page (no virtual scrolling), no autosave into
# the copies, MyST markdown opened as a notebook by jupytext, no news or update checks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {
        "autosave": False,
        "defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"},
    },
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
STDERR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
MNIST_IMAGES = "plots.show_images(X_train[:10], Y_train[:10], mnist_classes)"
# The figures that explain the layers: the code that draws each, and its screenshot's name.
EXPLAINED = (
    ("figures.show_convolution(", "explain_convolution"),
    ("figures.show_padding_stride(", "explain_padding_stride"),
    ("figures.show_max_pooling(", "explain_max_pooling"),
    ("figures.show_relu(", "explain_relu"),
    ("figures.show_softmax_cross_entropy(", "explain_softmax_cross_entropy"),
    ("edges = conv2d(", "your_conv2d_edges"),
)


def _missing_tools() -> str | None:
    if not CHROMIUM.exists():
        return (
            f"{CHROMIUM} is missing (Debian: apt-get install chromium; or set CNN_COURSE_CHROMIUM)"
        )
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is missing (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright; closed even when a test fails."""
    reason = _missing_tools()
    if reason:
        if os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE_ENV} is set, so the browser tests must run")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    root: Path
    log: Path  # the server's output

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def page_url(self, path: str) -> str:
        # `reset` starts from an empty workspace: no tab of an earlier test comes back.
        return f"{self.url}/lab/tree/{path}?reset&token={self.token}"

    def kernel_state(self, path: str) -> str | None:
        """The execution state of the kernel of the session for ``path``, if it has one."""
        for session in self.api("sessions"):
            if session["path"] == path and session.get("kernel"):
                return session["kernel"]["execution_state"]
        return None

    def shut_down_kernels(self) -> None:
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(app: str, port: int, token: str, root: Path) -> list[str]:
    """A Jupyter server app (``jupyterlab``, ``jupyter_server``) on 127.0.0.1:``port`` with a
    token, serving ``root``."""
    return [
        *(sys.executable, "-m", app, "--no-browser", "--allow-root", "--ip=127.0.0.1"),
        *(f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"),
        f"--ServerApp.root_dir={root}",
    ]


def _stop(server: subprocess.Popen) -> None:
    """Stop the server's whole process group: SIGTERM (it shuts its kernels down), then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(browser, real_root, real_cache, tmp_path_factory) -> Iterator[Lab]:
    """JupyterLab 4 on 127.0.0.1, a random port and a token, in shortened mode on the real data."""
    root = tmp_path_factory.mktemp("lab-root")
    for form, suffixes in (("student", (".ipynb", ".md")), ("solution", (".ipynb",))):
        (root / form).mkdir()
        for name in (f"{lab}{suffix}" for lab in LABS for suffix in suffixes):
            shutil.copy(REPO / "notebooks" / form / name, root / form / name)
    home = tmp_path_factory.mktemp("lab-home")
    for plugin, values in LAB_SETTINGS.items():
        path = home / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ,
        "CNN_COURSE_DATA": str(real_root),
        "CNN_COURSE_CACHE": str(real_cache),
        "CNN_COURSE_FAST": "1",
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),  # not the user's own configuration
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    env.pop("CNN_COURSE_WIDGETS", None)
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        *server_command("jupyterlab", port, token, root),
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        lab = Lab(f"http://127.0.0.1:{port}", token, root, log_path)
        deadline = time.monotonic() + 90
        while True:
            try:
                lab.api("status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield lab
    finally:
        _stop(server)


@pytest.fixture
def page(browser, lab):
    """A fresh browser page; the kernels it started are shut down afterwards."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    try:
        yield context.new_page()
    finally:
        context.close()
        lab.shut_down_kernels()


# --- driving the notebook ---------------------------------------------------------------------


def open_notebook(page, lab: Lab, path: str):
    """Open ``path`` in a fresh workspace and wait until its kernel is up and idle."""
    page.goto(lab.page_url(path))
    notebook = page.locator(NOTEBOOK)
    notebook.locator(".jp-Cell").first.wait_for(timeout=60_000)
    if _wait_for_kernel(page, lab, path):
        # The kernel was chosen in a dialog: reload, so that the page's widget manager is the
        # new kernel's.
        page.reload()
        notebook.locator(".jp-Cell").first.wait_for(timeout=60_000)
        _wait_for_kernel(page, lab, path)
    return notebook


def _wait_for_kernel(page, lab: Lab, path: str, timeout_s: float = 180) -> bool:
    """Wait until the page shows the notebook's kernel idle and the server lists it idle too.

    On a slow machine JupyterLab may ask which kernel to start, though the notebook names it
    (its kernel specs were not loaded yet), at any moment of the start: the one it proposes,
    the notebook's own, is accepted. Returns whether it asked.
    """
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    idle = page.locator(f"{NOTEBOOK} .jp-Notebook-ExecutionIndicator[data-status='idle']")
    asked = False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if dialog.count():
            dialog.locator("button.jp-mod-accept").click()
            dialog.wait_for(state="detached", timeout=10_000)
            asked = True
        elif idle.count() and lab.kernel_state(path) == "idle":
            return asked
        time.sleep(0.5)
    fail_with_page(page, lab, f"the kernel of {path} was not idle within {timeout_s:.0f} s")


def start_running_all_cells(page, lab: Lab) -> None:
    """Run > Run All Cells, then wait until the first code cell is running or has run.

    The run must start within two minutes: a dialog that holds it (JupyterLab asking for a
    kernel) is accepted, and the menu is used once more if nothing started, with a warning
    saying what the page showed; the test fails if the run still does not start.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(2):
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        for _ in range(4):
            with contextlib.suppress(PlaywrightTimeout):
                page.wait_for_function(
                    """(selector) => [...document.querySelectorAll(
                            selector + ' .jp-CodeCell .jp-InputPrompt')]
                        .some((prompt) => /\\[(\\*|\\d+)\\]/.test(prompt.textContent))""",
                    arg=NOTEBOOK,
                    timeout=30_000,
                    polling=250,
                )
                return
            dialogs = page.locator(".jp-Dialog button.jp-mod-accept")
            if dialogs.count():
                warnings.warn(f"a dialog held the run: {describe_page(page, lab)}", stacklevel=2)
                dialogs.first.click()
        if attempt == 0:
            warnings.warn(
                f"Run All Cells started no cell in 2 minutes; running it again. The page showed: "
                f"{describe_page(page, lab)}",
                stacklevel=2,
            )
    fail_with_page(page, lab, "Run All Cells started no cell, twice")


def wait_until_run_ends(page, lab: Lab, timeout_s: float) -> None:
    """Wait until the first cell has run and no cell is running or queued any more.

    On a timeout the page is saved to ``artifacts/browser/timeout.png`` and the message says
    what the page and the server showed, so a stalled kernel can be told from a stalled page.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        _wait_for_prompts(page, timeout_s)
    except PlaywrightTimeout:
        fail_with_page(page, lab, f"the run did not end within {timeout_s:.0f} s")


def describe_page(page, lab: Lab) -> str:
    """What the page and the server show: prompts, dialogs, kernel status, sessions, log tail."""
    prompts = page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt").all_inner_texts()
    indicator = page.locator(".jp-Notebook-ExecutionIndicator").evaluate_all(
        "nodes => nodes.map((node) => node.dataset.status)"
    )
    try:
        sessions = [
            (session["path"], (session.get("kernel") or {}).get("execution_state"))
            for session in lab.api("sessions")
        ]
    except OSError as error:
        sessions = f"unreadable ({error})"
    return (
        f"input prompts: {prompts}; dialogs: {page.locator('.jp-Dialog').all_inner_texts()}; "
        f"kernel indicators: {indicator}; kernel name: "
        f"{page.locator('.jp-Toolbar-kernelName').all_inner_texts()}; sessions: {sessions}; "
        f"server log (end):\n{lab.log.read_text(errors='replace')[-3000:]}"
    )


def fail_with_page(page, lab: Lab, message: str) -> NoReturn:
    """Save the page to ``artifacts/browser/timeout.png`` and fail with what it showed."""
    page.screenshot(path=str(ARTIFACTS / "timeout.png"), full_page=True)
    pytest.fail(f"{message}; {describe_page(page, lab)}")


def _wait_for_prompts(page, timeout_s: float) -> None:
    page.wait_for_function(
        """(selector) => {
            const prompts = [...document.querySelectorAll(selector + ' .jp-CodeCell .jp-InputPrompt')]
                .map((prompt) => prompt.textContent);
            return prompts.length > 0 && /\\[\\d+\\]/.test(prompts[0])
                && !prompts.some((text) => text.includes('*'));
        }""",
        arg=NOTEBOOK,
        timeout=timeout_s * 1000,
        polling=500,
    )


def code_cell(notebook, code: str):
    """The one code cell whose text contains ``code``."""
    cell = notebook.locator(".jp-CodeCell", has_text=code)
    assert cell.count() == 1, f"{cell.count()} cells contain {code!r}"
    return cell


def shot(locator, name: str) -> None:
    locator.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def rendered_pngs(cell) -> list[int]:
    """Natural widths of the PNG outputs of ``cell`` (0 for one the browser could not decode)."""
    return cell.locator(".jp-OutputArea-output img[src^='data:image/png;base64,']").evaluate_all(
        "images => images.map((image) => image.naturalWidth)"
    )


def errors(notebook) -> list[str]:
    return notebook.locator(STDERR_OUTPUT).all_inner_texts()


def image_source(cell) -> str:
    return cell.locator("img.widget-image").first.get_attribute("src")


def wait_for_new_image(page, cell, old_source: str) -> str:
    """Wait until the widget's picture is replaced and decoded; return its new source."""
    image = cell.locator("img.widget-image").first
    image.element_handle().wait_for_element_state("visible")
    page.wait_for_function(
        "([image, old]) => image.src !== old && image.complete && image.naturalWidth > 0",
        arg=[image.element_handle(), old_source],
        timeout=30_000,
    )
    return image_source(cell)


# --- the tests --------------------------------------------------------------------------------


def check_student_run(notebook) -> None:
    """The first code cell ran, and the run stopped at the first exercise's stub: exactly one
    error output, a NotImplementedError."""
    prompts = notebook.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert prompts and prompts[0] == "[1]:", prompts
    problems = errors(notebook)
    assert len(problems) == 1 and "NotImplementedError" in problems[0], problems


def part_1_student_page(notebook) -> None:
    """Part 1's data cells and its MNIST grid and first figures rendered, and its first check
    said the first exercise is not done; screenshots of them."""
    printed = (
        code_cell(notebook, "mnist_train = lab.subsets").locator(".jp-OutputArea").inner_text()
    )
    assert "ImageSet('MNIST train" in printed
    widths = rendered_pngs(code_cell(notebook, MNIST_IMAGES))
    assert len(widths) == 1 and widths[0] > 300, widths
    for code, _ in EXPLAINED[:2]:
        assert len(rendered_pngs(code_cell(notebook, code))) == 1, code
    check = code_cell(notebook, "checks.q1_conv2d(conv2d)").locator(".cnn-course-check")
    assert "not implemented yet" in check.inner_text()
    first_use = code_cell(notebook, "edges = conv2d(")
    assert "NotImplementedError" in first_use.locator(".jp-OutputArea").inner_text()
    shot(code_cell(notebook, MNIST_IMAGES), "student_mnist_images")
    shot(notebook.locator(".jp-CodeCell", has_text="Replace this line").first, "student_first_stub")
    shot(code_cell(notebook, "checks.q1_conv2d(conv2d)"), "student_first_check")
    for code, name in EXPLAINED[:2]:  # the figures drawn before the first exercise
        shot(code_cell(notebook, code), f"student_{name}")


STUDENT_PAGES = {"cnn_lab": part_1_student_page}  # lab -> what more its student page shows


@pytest.mark.parametrize("name", LABS)
def test_each_student_notebook_runs_up_to_its_first_exercise(page, lab, name):
    """Does each lab's student notebook run in the page until its first stub stops it?"""
    notebook = open_notebook(page, lab, f"student/{name}.ipynb")
    start_running_all_cells(page, lab)
    wait_until_run_ends(page, lab, timeout_s=400)  # a cold machine starts its first kernel slowly
    check_student_run(notebook)
    STUDENT_PAGES.get(name, lambda notebook: None)(notebook)
    shot(page.locator(".jp-LabShell"), f"student_{name}")


def test_myst_student_notebook_opens_and_runs_as_a_notebook(page, lab):
    """Does jupytext serve the MyST file as a notebook, and does JupyterLab open and run it?"""
    name = LABS[0]
    model = lab.api(f"contents/student/{name}.md?type=notebook&content=1")
    assert model["type"] == "notebook"
    expected = nbformat.read(lab.root / "student" / f"{name}.ipynb", as_version=4)
    assert [cell["source"] for cell in model["content"]["cells"]] == [
        cell.source for cell in expected.cells
    ]
    notebook = open_notebook(page, lab, f"student/{name}.md")
    tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel")
    assert tab.inner_text() == f"{name}.md"
    assert notebook.locator(".jp-Cell").count() == len(expected.cells)
    start_running_all_cells(page, lab)
    wait_until_run_ends(page, lab, timeout_s=400)  # a cold machine starts its first kernel slowly
    check_student_run(notebook)
    shot(page.locator(".jp-LabShell"), "myst_notebook")


def check_calls(name: str) -> int:
    """How many visible checks the lab's solution notebook runs (cells calling ``checks.``)."""
    notebook = nbformat.read(REPO / "notebooks" / "solution" / f"{name}.ipynb", as_version=4)
    return sum(
        1
        for cell in notebook.cells
        if cell.cell_type == "code" and re.search(r"^checks\.\w+\(", cell.source, re.MULTILINE)
    )


def part_1_while_training(page, notebook) -> None:
    """While CIFAR-10 trains: its bars and, once an epoch is done, its curves so far."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    cifar_loop = code_cell(notebook, "widgets.TrainingMonitor(cifar_history")
    cifar_loop.locator(".widget-hprogress").first.wait_for(timeout=300_000)
    with contextlib.suppress(PlaywrightTimeout):  # for the picture only: epochs may be quick
        page.wait_for_function(
            """(cell) => cell.querySelector('.jp-InputPrompt').textContent.includes('*')
                && cell.querySelector('.jp-OutputArea-output img')""",
            arg=cifar_loop.element_handle(),
            timeout=60_000,
            polling=100,
        )
    shot(cifar_loop, "training_live")


def part_1_solution_page(page, notebook) -> None:
    """Part 1: its figures, its training bars and curves, and its three explorers answer."""
    shot(code_cell(notebook, "checks.q4_mnist_model(mnist_model)"), "check_report")

    # The figures that explain each layer, drawn in the page.
    for code, name in EXPLAINED:
        cell = code_cell(notebook, code)
        widths = rendered_pngs(cell)
        assert len(widths) == 1 and widths[0] > 300, (code, widths)
        shot(cell, name)

    # Training: one tqdm widget bar per epoch, full, with loss and accuracy, under the curves.
    schedules = Course(REPO).lab("cnn_lab").training  # what the shortened run trains
    for code, epochs, name in (
        ("widgets.TrainingMonitor(mnist_history", schedules["mnist"].fast_epochs, "mnist_training"),
        ("widgets.TrainingMonitor(cifar_history", schedules["cifar"].fast_epochs, "cifar_training"),
    ):
        cell = code_cell(notebook, code)
        bars = cell.locator(".widget-hprogress")
        assert bars.count() == epochs
        text = cell.locator(".jp-OutputArea").inner_text().replace("\u2007", " ")
        assert re.search(
            rf"epoch {epochs}/{epochs}: 100%.*loss [\d.]+, accuracy [\d.]+", text, re.S
        )
        assert len(rendered_pngs(cell)) == 1  # the live plot, replaced after every epoch
        shot(cell, name)

    # Image browser: the slider, the buttons and the mistakes toggle change the picture.
    browser_cell = code_cell(notebook, "widgets.image_browser(mnist_model")
    caption = browser_cell.locator(".widget-html-content").first
    assert caption.inner_text().startswith("image 0 of 1,000")
    shot(browser_cell, "image_browser")
    source = image_source(browser_cell)
    handle = browser_cell.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    source = wait_for_new_image(page, browser_cell, source)
    assert caption.inner_text().startswith("image 1 of 1,000")
    browser_cell.locator("button", has_text="next").click()
    source = wait_for_new_image(page, browser_cell, source)
    assert caption.inner_text().startswith("image 2 of 1,000")
    browser_cell.locator("button", has_text="show only mistakes").click()
    wait_for_new_image(page, browser_cell, source)
    assert re.match(r"mistake 1 of \d+", caption.inner_text())
    shot(browser_cell, "image_browser_mistakes")

    # Confusion matrix: picking a confusion shows its images.
    confusion = code_cell(notebook, "widgets.confusion_matrix(cifar_model")
    shot(confusion, "confusion_matrix")
    confusion.locator("select").select_option(index=1)
    examples = confusion.locator("img.widget-image").nth(1)
    examples.wait_for(state="visible", timeout=30_000)
    shot(confusion, "confusion_examples")

    # Feature maps: another layer and another image redraw the maps.
    viewer = code_cell(notebook, "widgets.feature_maps(cifar_model")
    shot(viewer, "feature_maps")
    source = image_source(viewer)
    viewer.locator("select").select_option(index=1)  # the first convolution's ReLU
    source = wait_for_new_image(page, viewer, source)
    viewer.locator(".noUi-handle").first.press("ArrowRight")
    wait_for_new_image(page, viewer, source)
    assert viewer.locator("img.widget-image").nth(1).is_hidden()  # a ReLU has no filters
    shot(viewer, "feature_maps_relu")


def part_2_solution_page(page, notebook) -> None:
    """Part 2: its maps, patches and fooled images drawn, and its map explorer and epsilon
    slider answer."""
    for code, name in (
        ("augmented = torch.stack", "part2_augmented"),
        ('maps = {"saliency": saliencies', "part2_maps"),
        ("figures.show_patches(better_model", "part2_patches"),
        ("figures.show_curve(epsilons", "part2_fgsm_curve"),
        ("figures.show_adversarial(X_test[shown]", "part2_fooled"),
    ):
        cell = code_cell(notebook, code)
        widths = rendered_pngs(cell)
        assert widths and all(width > 200 for width in widths), (code, widths)
        shot(cell, name)
    explorer = code_cell(notebook, "explorers.explain_maps(better_model")
    shot(explorer, "part2_map_explorer")
    source = image_source(explorer)
    explorer.locator(".noUi-handle").first.press("ArrowRight")
    source = wait_for_new_image(page, explorer, source)
    explorer.locator("select").select_option(index=4)  # the maps for another class
    wait_for_new_image(page, explorer, source)
    shot(explorer, "part2_map_explorer_class")
    slider = code_cell(notebook, "explorers.fgsm_explorer(better_model")
    source = image_source(slider)
    slider.locator(".noUi-handle").first.press("ArrowRight")
    wait_for_new_image(page, slider, source)
    shot(slider, "part2_fgsm_slider")


# lab -> (what to look at while it runs, what more its solution page must show)
SOLUTION_PAGES = {
    "cnn_lab": (part_1_while_training, part_1_solution_page),
    "cnn_part2": (None, part_2_solution_page),
}


@pytest.mark.parametrize("name", LABS)
def test_each_solution_runs_clean_with_every_check_passed(page, lab, name):
    """Does each lab's solution run without an error output in JupyterLab, each of its checks
    an HTML table ending "All tests passed!", and do its lab's widgets answer?"""
    while_running, then = SOLUTION_PAGES.get(name, (None, None))
    notebook = open_notebook(page, lab, f"solution/{name}.ipynb")
    start_running_all_cells(page, lab)
    if while_running:
        while_running(page, notebook)
    wait_until_run_ends(page, lab, timeout_s=RUN_LIMIT)
    assert errors(notebook) == []
    assert "Error displaying widget" not in notebook.inner_text()
    prompts = notebook.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert all(re.fullmatch(r"\[\d+\]:", prompt) for prompt in prompts), prompts
    reports = notebook.locator(".cnn-course-check")
    assert reports.count() == check_calls(name) > 0
    for report in reports.all():
        assert report.locator("table tbody tr").count() >= 1
        assert report.inner_text().strip().endswith("All tests passed!")
    if then:
        then(page, notebook)
    shot(page.locator(".jp-LabShell"), f"solution_{name}")
