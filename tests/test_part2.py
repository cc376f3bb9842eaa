"""Part 2 (cnn_part2): its functions judged alone, the probe's model calls, helpers and figures."""

from __future__ import annotations

import functools

import nbformat
import pytest
import torch
from conftest import COURSE, REPO, corpus
from torch import nn

from cnn_course import judging, training
from cnn_course.errors import CourseError
from cnn_course.labs.cnn_part2 import checks, explorers, figures, specs, verdicts
from cnn_course_instructor.course import Course
from cnn_course_instructor.grading.registry import Context
from cnn_course_instructor.grading.worker import probe_cell

LAB = "cnn_part2"
CONTENT = COURSE.content(LAB)
REFERENCE = CONTENT.reference
SAMPLES = {sample.name: sample for sample in corpus(LAB)}
SOLUTION = SAMPLES["solution"].notebook(COURSE, LAB)
STUDENT = SAMPLES["untouched_stub"].notebook(COURSE, LAB)
FUNCTION_QUESTIONS = ("q2_augmentation", "q4_saliency", "q5_occlusion", "q6_grad_cam",
                      "q7_top_activations", "q8_fgsm")  # fmt: skip
SETUP = (
    "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
    "from torchvision.transforms import v2\nfrom cnn_course.labs.cnn_part2 import checks\n"
)


def function_cells(notebook: nbformat.NotebookNode) -> list[str]:
    """The code of the cells that define the graded functions and ``augment`` (no training)."""
    wanted = ("def ", "augment = ")
    return [
        cell.source
        for cell in notebook.cells
        if cell.cell_type == "code" and any(w in cell.source for w in wanted)
        and "for epoch" not in cell.source
    ]  # fmt: skip


def define_functions(notebook: nbformat.NotebookNode) -> dict:
    """A namespace where a notebook's function cells ran, as a kernel would run them."""
    namespace: dict = {}
    exec(SETUP, namespace)
    for source in function_cells(notebook):
        try:
            exec(source, namespace)
        except NotImplementedError:
            pass  # the stub: the cell stops where it raises, as in a kernel
    return namespace


def probe_functions(notebook: nbformat.NotebookNode, tmp_path, seed: int = 11) -> tuple[dict, dict]:
    """Run a notebook's function cells, then the real probe cell on the function steps."""
    namespace = define_functions(notebook)
    inputs = CONTENT.grading_inputs(seed)
    plan = [step for step in CONTENT.probe_plan if step["kind"] in ("calls", "model_calls")]
    torch.save({"plan": plan, "inputs": inputs}, tmp_path / "plan.pt")
    exec(probe_cell(str(tmp_path / "plan.pt"), str(tmp_path / "out.pt")), namespace)
    return torch.load(tmp_path / "out.pt", weights_only=True), inputs


def function_scores(record: dict, inputs: dict) -> tuple[dict[str, float], str]:
    results = CONTENT.tests.run(record, Context(CONTENT.lab, inputs), questions=FUNCTION_QUESTIONS)
    scores = dict.fromkeys(FUNCTION_QUESTIONS, 0.0)
    for result in results:
        if result.question in scores:
            scores[result.question] += result.score
    return scores, " ".join(r.message for r in results if not r.passed)


@pytest.mark.parametrize("sample", SAMPLES.values(), ids=SAMPLES)
def test_each_sample_s_functions_get_the_expected_scores(sample, tmp_path):
    """Judged through the real probe cell and hidden tests (no training), does each corpus
    sample get, on the function questions, the scores the corpus expects, with its fault named?"""
    record, inputs = probe_functions(sample.notebook(COURSE, LAB), tmp_path)
    scores, messages = function_scores(record, inputs)
    expected = {q: sample.expected(CONTENT.lab)[q] for q in FUNCTION_QUESTIONS}
    assert scores == expected, messages
    if (
        sample.fault
        and sample.base == "solution"
        and any(scores[q] < expected_full for q, expected_full in _full().items())
    ):
        assert sample.fault in messages


def _full() -> dict[str, float]:
    return {q: CONTENT.lab.questions[q].points for q in FUNCTION_QUESTIONS}


def test_new_inputs_and_weights_each_run_and_the_solution_still_passes(tmp_path):
    """Do two grading seeds draw different networks and images, both judged full marks?"""
    first, second = CONTENT.grading_inputs(1), CONTENT.grading_inputs(2)
    weight = lambda inputs: inputs["grader_model"]["layers"][0]["tensors"]["weight"]  # noqa: E731
    assert not torch.equal(weight(first), weight(second))
    assert not torch.equal(first["fgsm"][0][0], second["fgsm"][0][0])
    for seed in (1, 2):
        scores, messages = function_scores(*probe_functions(SOLUTION, tmp_path, seed))
        assert scores == _full(), messages


def test_visible_checks_pass_the_solution_and_name_the_mistakes():
    """Do the visible checks pass every solution function (and the right samples'), and fail
    each typical mistake they can see, naming it as the hidden tests do?"""

    def functions(name: str) -> dict:
        return define_functions(SAMPLES[name].notebook(COURSE, LAB))

    right = functions("solution")
    model = right["make_better_model"]()
    assert checks.q1_better_model(model).passed
    for check, name in [
        (checks.q2_augmentation, "augment"),
        (checks.q4_saliency, "saliency_map"),
        (checks.q5_occlusion, "occlusion_map"),
        (checks.q6_grad_cam, "grad_cam"),
        (checks.q7_top_activations, "top_activations"),
        (checks.q8_fgsm, "fgsm"),
    ]:
        for sample in RIGHT_SAMPLES:
            report = check(_sample_functions(sample)[name])
            assert report.passed, (sample, str(report))
    for sample, check, name, words in [
        ("saliency_without_eval", checks.q4_saliency, "saliency_map", "model.eval()"),
        ("saliency_gradients_pile_up", checks.q4_saliency, "saliency_map", "pile up"),
        ("saliency_of_the_loss", checks.q4_saliency, "saliency_map", "differs"),
        ("occlusion_in_place", checks.q5_occlusion, "occlusion_map", "in place"),
        ("grad_cam_not_detached", checks.q6_grad_cam, "grad_cam", "requires grad"),
        ("top_in_increasing_order", checks.q7_top_activations, "top_activations", "images"),
        ("fgsm_wrong_sign", checks.q8_fgsm, "fgsm", "the loss went from"),
        ("fgsm_no_clamp", checks.q8_fgsm, "fgsm", "clamp"),
        ("augment_without_flips", checks.q2_augmentation, "augment", "flip at random"),
        ("saliency_without_abs", checks.q4_saliency, "saliency_map", verdicts.SALIENCY_NO_ABS),
        ("saliency_of_the_predicted_class", checks.q4_saliency, "saliency_map", "predicts"),
        ("occlusion_sign_reversed", checks.q5_occlusion, "occlusion_map", "opposite sign"),
        ("occlusion_black_patch", checks.q5_occlusion, "occlusion_map", "is the patch black"),
        ("occlusion_last_place_missing", checks.q5_occlusion, "occlusion_map", "last place"),
        ("occlusion_stride_of_the_patch", checks.q5_occlusion, "occlusion_map", "patch_size"),
        ("grad_cam_without_relu", checks.q6_grad_cam, "grad_cam", verdicts.CAM_NO_RELU),
        ("grad_cam_normalised_before_relu", checks.q6_grad_cam, "grad_cam", "before the ReLU"),
        ("grad_cam_mean_over_the_channels", checks.q6_grad_cam, "grad_cam", "over dim=1"),
        ("grad_cam_gradient_as_weight", checks.q6_grad_cam, "grad_cam", "the gradient itself"),
    ]:
        report = check(functions(sample)[name])
        assert not report.passed and words in str(report), (sample, str(report))


def test_the_stub_s_functions_are_reported_not_implemented(tmp_path):
    """Does the untouched notebook score zero on the functions, saying they are not written?"""
    record, inputs = probe_functions(STUDENT, tmp_path)
    scores, messages = function_scores(record, inputs)
    assert set(scores.values()) == {0.0} and "not implemented" in messages


# --- the probe's model calls ----------------------------------------------------------------------


def test_model_calls_get_a_fresh_grader_network_in_training_mode_and_the_layer_asked(tmp_path):
    """Does each call get the grader's network rebuilt afresh (its weights, training mode), the
    layer named by {"layer": i}, copies of the tensors, and is a second call recorded?"""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
    records = judging.layer_records(net, (1, 4, 4))
    seen = []

    def spy(model, layer, images):
        seen.append(
            (model.training, layer is model[1], torch.equal(model[0].weight, net[0].weight))
        )
        images.add_(1)  # changes its argument: recorded, and the grader's tensor stays as it was
        return model[0](images).sum(dim=1)

    images = torch.zeros(2, 1, 4, 4)
    plan = [{"key": "spy", "kind": "model_calls", "name": "spy", "model": "net", "inputs": "cases",
             "repeat": True}]  # fmt: skip
    inputs = {"net": records, "cases": [({"layer": 1}, images)]}
    torch.save({"plan": plan, "inputs": inputs}, tmp_path / "plan.pt")
    exec(probe_cell(str(tmp_path / "plan.pt"), str(tmp_path / "out.pt")), {"spy": spy})
    (entry,) = torch.load(tmp_path / "out.pt", weights_only=True)["spy"]
    assert seen == [(True, True, True), (True, True, True)]
    assert entry["changed"] == [1] and entry["requires_grad"] is True
    assert not torch.equal(entry["output"]["tensor"], entry["repeat"]["tensor"])
    assert torch.equal(images, torch.zeros(2, 1, 4, 4))


# --- the reference, the tables and the helpers ----------------------------------------------------


def test_reference_network_follows_part_2_s_table():
    """Does the reference better network match the table the visible check uses?"""
    layers, error = judging.describe_model(REFERENCE.better_model(), (3, 32, 32))
    assert error is None and judging.compare_layers(layers, specs.BETTER_LAYERS) == []


def test_reference_mistakes_differ_from_the_reference_on_the_grader_network():
    """Does every mistake the hidden tests recognise give a result that differs from the right
    one on the grader's network (else it could not be told apart)?"""
    inputs = CONTENT.grading_inputs(3)
    from cnn_course_instructor.grading.rebuild import rebuild

    model = rebuild(inputs["grader_model"]).eval()
    images, classes = inputs["saliency_map"][0]
    right = REFERENCE.saliency_map(model, images, classes)
    for how in ({"loss": True}, {"training": True}, {"reduce": "mean"}, {"reduce": "raw"}):
        assert not torch.allclose(right, REFERENCE.saliency_map(model, images, classes, **how))
    image, label = inputs["occlusion_map"][0]
    right = REFERENCE.occlusion_map(model, image, label)
    for how in ({"scores": True}, {"training": True}):
        assert not torch.allclose(right, REFERENCE.occlusion_map(model, image, label, **how))
    assert torch.allclose(right, REFERENCE.occlusion_map(model, image, label))  # no state left


@pytest.mark.parametrize("seed", range(6))
def test_each_fgsm_mistake_is_told_apart_whatever_the_draw(seed):
    """For any run's draw, does each FGSM mistake the hidden test names (wrong sign, no clamp,
    training mode) move more of the values than the 1% the test forgives?"""
    from cnn_course_instructor.grading.rebuild import rebuild

    inputs = CONTENT.grading_inputs(seed)
    model = rebuild(inputs["grader_model"]).eval()
    for images, labels, epsilon in inputs["fgsm"]:
        right = REFERENCE.fgsm(model, images, labels, epsilon)
        for how in ({"sign": -1.0}, {"clamp": False}, {"training": True}):
            wrong = REFERENCE.fgsm(model, images, labels, epsilon, **how)
            moved = float(((wrong - right).abs() > 1e-4).float().mean())
            assert moved > 0.01, (how, epsilon, moved)


# Each typical mistake the hidden tests name: (question, function, the reference's keywords that
# reproduce it, what its message must say). Every one must fail and be named, whatever the draw.
_PATCH = verdicts.occlusion_patch_message
MISTAKES = [
    ("q4_saliency", "saliency_map", {"loss": True}, verdicts.SCORE_NOT_LOSS),
    ("q4_saliency", "saliency_map", {"probability": True}, verdicts.PROBABILITY),
    ("q4_saliency", "saliency_map", {"predicted": True}, verdicts.PREDICTED_CLASS),
    ("q4_saliency", "saliency_map", {"training": True}, verdicts.EVAL_MODE),
    ("q4_saliency", "saliency_map", {"reduce": "raw"}, verdicts.SALIENCY_NO_ABS),
    ("q4_saliency", "saliency_map", {"reduce": "mean"}, verdicts.SALIENCY_MEAN),
    ("q5_occlusion", "occlusion_map", {"sign": -1.0}, verdicts.OCCLUSION_SIGN),
    ("q5_occlusion", "occlusion_map", {"scores": True}, verdicts.OCCLUSION_SCORES),
    ("q5_occlusion", "occlusion_map", {"predicted": True}, "the class the network predicts"),
    ("q5_occlusion", "occlusion_map", {"training": True}, verdicts.EVAL_MODE),
    ("q5_occlusion", "occlusion_map", {"patch_value": 0.0}, _PATCH("0 (black)")),
    ("q5_occlusion", "occlusion_map", {"patch_value": 1.0}, _PATCH("1 (white)")),
    ("q5_occlusion", "occlusion_map", {"patch_value": "mean"}, _PATCH("the image's mean")),
    ("q5_occlusion", "occlusion_map", {"patch_value": "channel_mean"}, _PATCH("each channel's mean")),
    ("q5_occlusion", "occlusion_map", {"last": 0}, verdicts.OCCLUSION_LAST_PLACE),
    ("q5_occlusion", "occlusion_map", {"stride": 8}, verdicts.OCCLUSION_STRIDE),
    ("q6_grad_cam", "grad_cam", {"loss": True}, verdicts.SCORE_NOT_LOSS),
    ("q6_grad_cam", "grad_cam", {"probability": True}, verdicts.PROBABILITY),
    ("q6_grad_cam", "grad_cam", {"predicted": True}, verdicts.PREDICTED_CLASS),
    ("q6_grad_cam", "grad_cam", {"training": True}, verdicts.EVAL_MODE),
    ("q6_grad_cam", "grad_cam", {"relu": False}, verdicts.CAM_NO_RELU),
    ("q6_grad_cam", "grad_cam", {"normalise_first": True}, verdicts.CAM_NORMALISED_FIRST),
    *[("q6_grad_cam", "grad_cam", {"dims": dims}, verdicts.cam_dims_message(dims))
      for dims in ((1,), (0, 2, 3), (1, 2, 3), (2,), (3,), ())],
    ("q7_top_activations", "top_activations", {"training": True}, verdicts.EVAL_MODE),
    ("q7_top_activations", "top_activations", {"swapped": True}, verdicts.SWAPPED_PLACES),
    ("q8_fgsm", "fgsm", {"sign": -1.0}, "lowers the loss"),
    ("q8_fgsm", "fgsm", {"clamp": False}, "clamp"),
    ("q8_fgsm", "fgsm", {"training": True}, verdicts.EVAL_MODE),
    ("q8_fgsm", "fgsm", {"predicted": True}, verdicts.FGSM_PREDICTED),
    ("q8_fgsm", "fgsm", {"raw": True}, verdicts.FGSM_NO_SIGN),
]  # fmt: skip
RIGHT_SAMPLES = [name for name in SAMPLES if name == "solution" or name.startswith("right_")]
STEPS = {step["name"]: step for step in CONTENT.probe_plan if step["kind"] == "model_calls"}


def _model_call_entries(function, name: str, inputs: dict) -> list[dict]:
    """What the probe records of ``function`` on the grader's network (rebuilt afresh for each
    call, in training mode) and its inputs: the probe's own code, without a kernel."""
    from cnn_course_instructor.grading import probe

    return probe._model_calls(function, STEPS[name], inputs)


def _judged(question: str, name: str, function, inputs: dict) -> list:
    """The hidden tests of ``question`` on what ``function`` gives (the record holds that step)."""
    record = {STEPS[name]["key"]: _model_call_entries(function, name, inputs)}
    return CONTENT.tests.run(record, Context(CONTENT.lab, inputs), questions=(question,))


@pytest.fixture
def one_torch_thread():
    """One torch thread, as in the grader's judge: many small tensors on a shared machine run
    several times faster than with a thread per core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# the first draws in `make test`, all 30 in the stress tier (CI)
DRAWS = [pytest.param(seed, marks=[pytest.mark.stress] if seed >= 1 else []) for seed in range(30)]


@pytest.mark.parametrize("seed", DRAWS)
def test_each_mistake_fails_and_is_named_whatever_the_draw(seed, one_torch_thread):
    """For each of 30 runs' draws, does every typical mistake of every function fail a hidden
    test, named by its own message (the first failing test's), and by no other mistake's?"""
    inputs = CONTENT.grading_inputs(seed)
    for question, name, how, words in MISTAKES:
        function = functools.partial(getattr(REFERENCE, name), **how)
        results = _judged(question, name, function, inputs)
        failed = [result for result in results if not result.passed]
        assert failed and words in failed[0].message, (seed, name, how, failed[:1])
        for other in {w for _, n, h, w in MISTAKES if n == name and h != how} - {words}:
            assert other not in failed[0].message, (seed, name, how, failed[0].message)


@pytest.mark.parametrize(
    "seed", [DRAWS[0], DRAWS[6], DRAWS[12], DRAWS[18], DRAWS[24]]
)  # 1 in make test
@pytest.mark.parametrize("sample", RIGHT_SAMPLES)
def test_right_forms_keep_full_marks_whatever_the_draw(sample, seed, one_torch_thread):
    """Do the solution's and each right sample's functions (other spellings, other
    implementations, Grad-CAM up to scale) pass every function test for runs' draws?"""
    inputs = CONTENT.grading_inputs(seed)
    namespace = _sample_functions(sample)
    for question, name in dict.fromkeys((q, n) for q, n, _, _ in MISTAKES):
        results = _judged(question, name, namespace[name], inputs)
        assert all(r.passed for r in results), (seed, sample, name, results)


@functools.cache
def _sample_functions(name: str) -> dict:
    return define_functions(SAMPLES[name].notebook(COURSE, LAB))


def test_a_mistake_no_variant_matches_is_described_in_the_test_s_own_terms():
    """Is a Grad-CAM no known mistake explains (a test up to scale) described by scale-free
    numbers (the difference of the maps each divided by its largest value, a correlation),
    never by raw differences a factor would change; and a saliency map by raw ones?"""
    torch.manual_seed(0)
    expected = torch.rand(2, 4, 4)
    wrong = expected.clone()
    wrong[:, 0, 0] = 0.0  # a map that differs where it matters, whatever its scale
    for factor in (1.0, 27.0):
        entry = {"output": judging.plain(factor * wrong)}
        verdict = verdicts.map_verdict(entry, expected, "the Grad-CAM map", scale_free=True)
        assert not verdict.passed and "even up to scale" in verdict.message
        assert f"{factor:g}" not in verdict.message.split("(of 1)")[0].split("difference is")[1]
        assert verdict.measured["difference"] < 1.0 + 1e-6, verdict.measured
    same = verdicts.map_verdict({"output": judging.plain(27.0 * expected)}, expected, "it",
                                scale_free=True)  # fmt: skip
    assert same.passed
    verdict = verdicts.map_verdict({"output": judging.plain(wrong)}, expected, "the saliency map")
    assert "largest difference" in verdict.message and "up to scale" not in verdict.message


def test_the_plan_drawn_by_concurrent_graders_is_the_one_the_judge_draws():
    """Do threads making the probe's plan at once (the scheduler's pool, a Dask worker's) all
    get the plan a lone process draws? The grader network's draw seeds torch's global
    generator: interleaved, its weights would differ from the judge's (maps judged wrong)."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from cnn_course_instructor.grading import local
    from cnn_course_instructor.grading.worker import grading_plan

    alone = grading_plan(CONTENT, 5)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, as a loaded machine may
    try:
        for _ in range(3):
            local._plan_once.cache_clear()
            courses = [Course(REPO)] * 8  # one run's course, as the scheduler shares it
            with ThreadPoolExecutor(4) as pool:
                plans = list(pool.map(local.probe_plan, courses, ["cnn_part2"] * 8, [5] * 8))
            assert all(plan == alone for plan in plans)
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("seed", range(12))
def test_top_activations_order_and_images_are_told_apart_whatever_the_draw(seed):
    """For any run's draw (a quarter of which leave channel 3 dead), do the grader's images
    excite the chosen channel with distinct maxima, so that increasing order, or the images
    with the lowest maxima, fail?"""
    from cnn_course_instructor.grading.rebuild import rebuild

    inputs = CONTENT.grading_inputs(seed)
    model = rebuild(inputs["grader_model"]).eval()
    ((layer, images, channel, k),) = inputs["top_activations"]
    right = REFERENCE.top_activations(model, model[layer["layer"]], images, channel, k)
    with torch.no_grad():
        maxima = model[: layer["layer"] + 1](images)[:, channel].flatten(1).max(dim=1).values
    top = maxima.sort(descending=True).values[: k + 1]
    assert float((top[:-1] - top[1:]).min()) > 1e-4, top
    assert verdicts.positions_verdict({"output": judging.plain(right)}, right).passed
    assert not verdicts.positions_verdict({"output": judging.plain(right.flip(0))}, right).passed


def test_load_state_dict_s_report_kept_as_the_model_is_told_so():
    """``loaded = model.load_state_dict(...)`` keeps the report of missing and unexpected keys,
    not a network: is that what the record says, rather than a bare type error?"""
    report = nn.Linear(2, 2).load_state_dict(nn.Linear(2, 2).state_dict())
    with pytest.raises(TypeError, match="what load_state_dict returns .* keep that model"):
        judging.layer_records(report, (2,))


def test_loaded_model_is_judged_by_its_learnt_weights_not_its_running_statistics():
    """Is a model loaded from the state dict accepted even when the trained one later ran in
    training mode (its running statistics moved), and a fresh one refused, naming the layer?"""
    trained = REFERENCE.better_model()
    loaded = REFERENCE.better_model()
    loaded.load_state_dict(trained.state_dict())
    trained.train()(torch.rand(4, 3, 32, 32))  # moves batch normalisation's running statistics
    record = lambda model: judging.layer_records(model, (3, 32, 32))  # noqa: E731
    assert verdicts.same_weights_verdict(record(loaded), record(trained)).passed
    verdict = verdicts.same_weights_verdict(record(REFERENCE.better_model()), record(trained))
    assert not verdict.passed and "layer 0 (Conv2d): weight differs" in verdict.message


def test_pick_device_prefers_a_gpu_and_obeys_the_environment(monkeypatch):
    """Is the CPU chosen here (no GPU), and a forced or unknown device handled with a message?"""
    monkeypatch.delenv(training.DEVICE_ENV, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert training.pick_device().type == expected
    monkeypatch.setenv(training.DEVICE_ENV, "cpu")
    assert training.pick_device() == torch.device("cpu")
    monkeypatch.setenv(training.DEVICE_ENV, "tpu")
    with pytest.raises(CourseError, match="must be one of cuda, mps, cpu"):
        training.pick_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv(training.DEVICE_ENV, "cuda")
        with pytest.raises(CourseError, match="does not have"):
            training.pick_device()


def test_receptive_field_of_two_convolutions_and_a_pooling():
    """Is the patch a unit sees found right: 3x3 conv, 2x2 pool, 3x3 conv -> 8x8 at (1, 1)?"""
    torch.manual_seed(0)  # weights drawn after other tests' draws left a border at 0 once
    model = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1)
    )
    rows, cols = figures.receptive_field(model, model[2], (3, 16, 16), 1, 1)
    assert (rows, cols) == (slice(0, 7), slice(0, 7))  # rows -1..6, clipped by the padding
    rows, cols = figures.receptive_field(model, model[2], (3, 16, 16), 4, 4)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (8, 8)


def test_part_2_figures_and_static_widgets_draw_with_the_solution_functions():
    """Do the map, patch, adversarial and curve figures and both widgets' static fallbacks draw
    with the solution's functions, and refuse bad input with a message?"""
    namespace = define_functions(SOLUTION)
    torch.manual_seed(0)
    model = REFERENCE.better_model().eval()
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    names = [str(i) for i in range(10)]
    figure = explorers.explain_maps(
        model, images, labels, names, namespace["saliency_map"], namespace["occlusion_map"],
        namespace["grad_cam"], layer=model[9], static=True,
    )  # fmt: skip
    assert len(figure.axes) == 5 and "maps for" in figure._suptitle.get_text()  # and a colour bar
    figure = explorers.fgsm_explorer(model, images, labels, names, namespace["fgsm"], static=True)
    assert "growing epsilon" in figure._suptitle.get_text() and len(figure.axes) == 5 * 4
    places = namespace["top_activations"](model, model[9], images, 0, 3)
    assert len(figures.show_patches(model, model[9], images, places).axes) == 6
    assert figures.show_curve(
        [0, 0.1], [0.5, 0.2], xlabel="epsilon", ylabel="accuracy"
    )._repr_png_()
    with pytest.raises(CourseError, match="one per image"):
        figures.show_maps(images, {"saliency": torch.rand(3, 32, 32)})
    with pytest.raises(CourseError, match="epsilon must be between"):
        explorers.fgsm_explorer(model, images, labels, names, namespace["fgsm"], epsilon=1.0)


def test_map_explorer_widget_redraws_for_another_image_and_class():
    """Does the interactive map explorer draw a new picture when the image or class changes?"""
    pytest.importorskip("ipywidgets")
    namespace = define_functions(SOLUTION)
    model = REFERENCE.better_model().eval()
    images, labels = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    names = [str(i) for i in range(10)]
    explorer = explorers.explain_maps(
        model, images, labels, names, namespace["saliency_map"], namespace["occlusion_map"],
        namespace["grad_cam"], layer=model[9], static=False,
    )  # fmt: skip
    first = explorer.image.value
    explorer.slider.value = 2
    second = explorer.image.value
    predicted = int(model(images[2:]).argmax())
    explorer.target.value = (predicted + 1) % 10
    assert bytes(first) != bytes(second) != bytes(explorer.image.value)
    slider = explorers.fgsm_explorer(model, images, labels, names, namespace["fgsm"], static=False)
    before = slider.image.value
    slider.slider.value = 0.04
    assert bytes(slider.image.value) != bytes(before)


# --- through the real grader --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("graded_lab", [LAB], indirect=True)
def test_part_2_s_notebooks_tell_their_lab_and_grade_in_time(graded_lab):
    """Graded for real with no lab named (kernels, shortened training, sandboxed where the
    machine allows; their scores: test_corpus.py), is each submission graded as part 2, told
    from its notebook, within ten minutes?"""
    results = list(graded_lab.results.values())
    assert sorted(result.student for result in results) == sorted(s.name for s in graded_lab.corpus)
    assert all(result.lab == LAB for result in results)
    assert max(result.seconds for result in results) < 600
