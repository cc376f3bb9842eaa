"""Hidden tests: judge the plain data a submission's kernel produced, in the grader's process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from cnn_course import checks, data, training
from cnn_course.checks import LayerInfo, LayerSpec

from .rebuild import RebuildError, rebuild
from .reference import CIFAR_RECIPE, MNIST_RECIPE, Recipe, train_model

__all__ = ["GradingContext", "TestResult", "grading_inputs", "run_hidden_tests"]

# Accuracy a trained model must reach on the grading images in shortened mode (CNN_COURSE_FAST:
# 2 MNIST epochs, 4 CIFAR-10 epochs). `python -m autograder.calibrate` on the solution, seeds 0-4
# (2026-11-30): MNIST 0.8875 0.8880 0.8770 0.8925 0.8785, CIFAR-10 0.3685 0.3950 0.3750 0.3750
# 0.3780. Chance is 0.10. The thresholds sit about 0.07 below the lowest seed.
MNIST_THRESHOLD = 0.80
CIFAR_THRESHOLD = 0.30
GRADING_IMAGES = 2000
GRADING_SEED = 20261130


@dataclass(frozen=True)
class TestResult:
    """One hidden test case: its question, name, points available and earned, and feedback."""

    question: str
    name: str
    points: float
    score: float
    message: str

    @property
    def passed(self) -> bool:
        return self.score >= self.points

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


class GradingContext:
    """What the tests need beyond the submission: grading images, training subsets, recipes.

    The grading images are training images that the lab's seeded subset leaves out, so no
    student has trained on them. Everything is loaded lazily, once.
    """

    def __init__(self, root=None):
        self.root = root
        self._cache: dict[str, object] = {}

    def _once(self, key: str, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def grading_set(self, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
        def make():
            full = self._load(dataset, None)
            _, unseen = data.split_indices(len(full), self.lab_size(dataset), seed=0)
            order = torch.randperm(
                len(unseen), generator=torch.Generator().manual_seed(GRADING_SEED)
            )
            chosen = unseen[order[:GRADING_IMAGES]]
            return full.images[chosen], full.labels[chosen]

        return self._once(f"grading-{dataset}", make)

    def training_set(self, dataset: str) -> data.ImageSet:
        return self._once(f"train-{dataset}", lambda: self._load(dataset, self.lab_size(dataset)))

    @staticmethod
    def lab_size(dataset: str) -> int:
        return 1000 if dataset == "mnist" else 2000

    def _load(self, dataset: str, n):
        loader = data.load_mnist if dataset == "mnist" else data.load_cifar10
        return loader("train", root=self.root, n=n, seed=0)


def grading_inputs(seed: int) -> dict:
    """Inputs for the function questions, drawn afresh for each grading run from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    random_scores = torch.randn(64, 10, generator=generator) * 3
    ties = torch.randn(16, 10, generator=generator)
    ties[:, 7] = ties.max(dim=1).values + 1.0
    ties[:, 2] = ties[:, 7]  # two equal maxima per row: either index is a right answer
    single = torch.randn(1, 10, generator=generator)
    large = torch.randn(32, 10, generator=generator) * 1000  # a hand-written exp() overflows
    labels = torch.randint(0, 10, (50,), generator=generator)
    predict = labels.clone()
    wrong = torch.rand(50, generator=generator) < 0.4
    predict[wrong] = (
        labels[wrong] + torch.randint(1, 10, (int(wrong.sum()),), generator=generator)
    ) % 10
    all_right = torch.randint(0, 10, (20,), generator=generator)
    none_right = (all_right + 1) % 10
    return {
        "vector_to_class": [(random_scores,), (ties,), (single,), (large,)],
        "cnn_accuracy": [
            (predict, labels),
            (all_right, all_right.clone()),
            (none_right, all_right.clone()),
        ],
    }


# --- helpers --------------------------------------------------------------------------------


def _error(entry) -> str | None:
    return entry.get("error") if isinstance(entry, dict) else "nothing was recorded"


def _layers(records: dict) -> list[LayerInfo]:
    return [
        LayerInfo(
            layer["kind"],
            layer["config"],
            tuple(layer["output_shape"]) if layer["output_shape"] is not None else None,
            sum(t.numel() for name, t in layer["tensors"].items() if name in ("weight", "bias")),
        )
        for layer in records["layers"]
    ]


def _architecture_tests(
    question: str, records, spec: tuple[LayerSpec, ...], weights: dict
) -> list[TestResult]:
    """Convolutions, activations and pooling, classifier: each a test with its own points."""
    names = ("convolutions", "activations and pooling in order", "classifier output")
    if "layers" not in records:
        return [TestResult(question, name, weights[name], 0.0, _error(records)) for name in names]
    layers = _layers(records)
    forward_error = records.get("error")
    results = []

    convs = [layer for layer in layers if layer.kind == "Conv2d"]
    expected_convs = [s for s in spec if s.kind == "Conv2d"]
    message = ""
    if len(convs) != len(expected_convs):
        message = f"expected {len(expected_convs)} convolutions, found {len(convs)}"
    else:
        for number, (found, expected) in enumerate(zip(convs, expected_convs, strict=True), 1):
            wrong = [
                key for key, value in expected.config.items() if found.config.get(key) != value
            ]
            if wrong:
                message = (
                    f"convolution {number}: expected {expected.describe()}, got {found.describe()} "
                    f"({', '.join(wrong)} differ)"
                )
                break
    results.append(_result(question, names[0], weights[names[0]], not message, message))

    # A softmax after the last layer is the classifier's fault (judged below), not the order's.
    body = list(layers)
    while body and body[-1].kind in ("Softmax", "LogSoftmax"):
        body.pop()
    kinds, expected_kinds = [layer.kind for layer in body], [s.kind for s in spec]
    message = ""
    if kinds != expected_kinds:
        kind_spec = [LayerSpec(s.kind, {}, s.output_shape) for s in spec]
        kind_layers = [LayerInfo(layer.kind, {}, layer.output_shape, 0) for layer in body]
        mismatch = checks.compare_layers(kind_layers, kind_spec)
        message = mismatch[0] if mismatch else f"expected the layers {expected_kinds}, got {kinds}"
    results.append(_result(question, names[1], weights[names[1]], not message, message))

    linear_found = [layer for layer in layers if layer.kind == "Linear"]
    linear_expected = [s for s in spec if s.kind == "Linear"]
    softmax = [layer for layer in layers if layer.kind in ("Softmax", "LogSoftmax")]
    message = ""
    if softmax:
        message = (
            f"the model ends with {softmax[0].kind}: nn.CrossEntropyLoss applies the softmax itself, "
            "so the network must output raw scores"
        )
    elif [(x.config.get("in"), x.config.get("out")) for x in linear_found] != [
        (s.config["in"], s.config["out"]) for s in linear_expected
    ]:
        found_text = ", ".join(x.describe() for x in linear_found) or "none"
        wanted = ", ".join(s.describe() for s in linear_expected)
        message = f"expected the linear layers {wanted}, got {found_text}"
    elif layers[-1].output_shape != spec[-1].output_shape:
        message = (
            forward_error or f"the output for one image must have shape {spec[-1].output_shape}"
        )
    results.append(_result(question, names[2], weights[names[2]], not message, message))
    return results


def _result(question: str, name: str, points: float, passed: bool, message: str) -> TestResult:
    return TestResult(question, name, points, points if passed else 0.0, "" if passed else message)


def _optimizer_tests(question: str, facts, model_name: str, points: float) -> list[TestResult]:
    half = points / 2
    problem = _error(facts) if "criterion" not in facts else None
    if problem:
        return [
            TestResult(question, "loss function", half, 0.0, problem),
            TestResult(question, "optimiser", half, 0.0, problem),
        ]
    criterion = facts["criterion"]
    hints = {
        "BCELoss": "BCELoss is for yes/no (binary) targets; 10 classes need CrossEntropyLoss",
        "NLLLoss": "NLLLoss expects log-probabilities; raw scores need CrossEntropyLoss",
        "MSELoss": "MSELoss is for regression; classification needs CrossEntropyLoss",
    }
    message = hints.get(criterion, f"expected CrossEntropyLoss, got {criterion}")
    results = [_result(question, "loss function", half, criterion == "CrossEntropyLoss", message)]
    message = ""
    if facts["optimizer"] != "Adam":
        message = f"expected torch.optim.Adam, got {facts['optimizer']}"
    elif not facts["covers_model"]:
        message = (
            f"the optimiser does not hold {model_name}'s parameters: pass {model_name}.parameters()"
        )
    elif facts["lr"] is None or abs(facts["lr"] - 1e-3) > 1e-9:
        message = f"expected the learning rate learning_rate = 0.001, got {facts['lr']}"
    results.append(_result(question, "optimiser", half, not message, message))
    return results


def _function_output(entry) -> tuple[torch.Tensor | float | None, str]:
    if "error" in entry:
        return None, f"raised {entry['error']}"
    if "tensor" in entry:
        return entry["tensor"], ""
    if "value" in entry:
        return entry["value"], ""
    return None, f"returned a {entry.get('type', 'value')}, not a tensor or a number"


def _vector_to_class_tests(question: str, outputs, inputs, points: float) -> list[TestResult]:
    names = (
        "random scores (64, 10)",
        "rows with tied maxima",
        "a single row (1, 10)",
        "very large scores",
    )
    share = points / len(names)
    problem = _error(outputs) if not isinstance(outputs, list) else None
    results = []
    for index, name in enumerate(names):
        if problem:
            results.append(TestResult(question, name, share, 0.0, problem))
            continue
        (scores,) = inputs[index]
        value, message = _function_output(outputs[index])
        if value is not None:
            message = _class_problem(value, scores)
        results.append(_result(question, name, share, not message, message))
    return results


def _class_problem(value, scores: torch.Tensor) -> str:
    count = scores.shape[0]
    if not isinstance(value, torch.Tensor):
        return f"returned a {type(value).__name__}, expected a tensor of shape ({count},)"
    if tuple(value.shape) != (count,):
        hint = (
            " (argmax over dim=0 gives one value per class, not per image)"
            if value.shape == (10,)
            else ""
        )
        return f"expected shape ({count},), got {tuple(value.shape)}{hint}"
    if value.is_floating_point():
        return f"expected integer classes, got dtype {value.dtype}"
    best = scores.max(dim=1, keepdim=True).values
    acceptable = scores == best
    chosen = value.long().clamp(0, scores.shape[1] - 1)
    right = acceptable.gather(1, chosen.view(-1, 1)).view(-1) & (value.long() == chosen)
    if not bool(right.all()):
        row = int((~right).nonzero()[0])
        return f"{int((~right).sum())} of {count} rows wrong; e.g. row {row}: got class {int(value[row])}"
    return ""


def _cnn_accuracy_tests(question: str, outputs, inputs, points: float) -> list[TestResult]:
    names = ("fraction of right predictions", "all predictions right", "no prediction right")
    share = points / (len(names) + 1)
    problem = _error(outputs) if not isinstance(outputs, list) else None
    results = []
    for index, name in enumerate(names):
        if problem:
            results.append(TestResult(question, name, share, 0.0, problem))
            continue
        predict, labels = inputs[index]
        expected = float((predict == labels).float().mean())
        value, message = _function_output(outputs[index])
        if isinstance(value, torch.Tensor):
            value = float(value) if value.numel() == 1 else None
            message = message or (
                "" if value is not None else "returned a tensor with several values"
            )
        if value is not None:
            count = int((predict == labels).sum())
            if abs(value - expected) > 1e-6:
                hint = (
                    f" (the count of right predictions is {count}: divide by N)"
                    if value == count
                    else ""
                )
                message = f"expected {expected:.4f}, got {value:.4f}{hint}"
        results.append(_result(question, name, share, not message, message))
    if problem:
        results.append(TestResult(question, "returns a Python number", share, 0.0, problem))
    else:
        first = outputs[0]
        number = first.get("type") in ("float", "int")
        message = (
            "returned a tensor: use .item() to return a number"
            if "tensor" in first
            else (first.get("error") or f"returned a {first.get('type')}")
        )
        results.append(_result(question, "returns a Python number", share, number, message))
    return results


def _training_tests(
    question: str,
    records,
    history,
    dataset: str,
    recipe: Recipe,
    threshold: float,
    context: GradingContext,
    points: tuple[float, float],
) -> list[TestResult]:
    accuracy_points, history_points = points
    name = f"trained model reaches {threshold:.2f} accuracy on unseen images"
    problem = _error(records) if "layers" not in records else None
    if problem:
        results = [TestResult(question, name, accuracy_points, 0.0, problem)]
    else:
        results = [
            _accuracy_test(
                question, name, records, dataset, recipe, threshold, context, accuracy_points
            )
        ]

    name = "one mean loss and accuracy per epoch, loss going down"
    problem = _error(history) if not isinstance(history, dict) or "error" in history else None
    if problem is None:
        losses, accuracies = history.get("loss", []), history.get("accuracy", [])
        if len(losses) != recipe.fast_epochs or len(accuracies) != recipe.fast_epochs:
            problem = f"expected {recipe.fast_epochs} epochs recorded, got {len(losses)} losses and {len(accuracies)} accuracies"
        elif not losses[-1] < 0.99 * losses[0]:  # a model that never updates only wobbles
            problem = f"the mean loss did not go down (first epoch {losses[0]:.4f}, last {losses[-1]:.4f})"
        elif not all(0.0 <= a <= 1.0 for a in accuracies):
            problem = "recorded accuracies must be fractions between 0 and 1"
    results.append(_result(question, name, history_points, problem is None, problem or ""))
    return results


def _accuracy_test(
    question, name, records, dataset, recipe, threshold, context, points
) -> TestResult:
    images, labels = context.grading_set(dataset)
    try:
        model = rebuild(records)
        accuracy = training.evaluate(model, images, labels)
    except (RebuildError, RuntimeError) as exc:
        return TestResult(
            question, name, points, 0.0, f"the trained model could not be evaluated: {exc}"
        )
    if accuracy != accuracy:  # NaN weights give NaN scores
        accuracy = 0.0
    if accuracy >= threshold:
        return TestResult(question, name, points, points, f"accuracy {accuracy:.4f}")
    # Tell a wrong model from a wrong training loop: train the same architecture ourselves.
    try:
        fresh = rebuild(records, with_weights=False)
        train_model(
            fresh,
            context.training_set(dataset),
            epochs=recipe.fast_epochs,
            learning_rate=recipe.learning_rate,
            batch_size=recipe.batch_size,
        )
        retrained = training.evaluate(fresh, images, labels)
    except (RebuildError, RuntimeError) as exc:
        return TestResult(
            question,
            name,
            points,
            0.0,
            f"accuracy {accuracy:.4f}; the architecture cannot be trained: {exc}",
        )
    if retrained >= threshold:
        message = (
            f"accuracy {accuracy:.4f} on unseen images, below {threshold:.2f}; the same architecture "
            f"trained by the grader reaches {retrained:.4f}, so look at the training loop "
            "(zero_grad, forward, loss, backward, step, and the data it is fed)"
        )
    else:
        message = (
            f"accuracy {accuracy:.4f} on unseen images, below {threshold:.2f}; the grader's own "
            f"training of this architecture reaches only {retrained:.4f}, so the model itself is at fault"
        )
    return TestResult(question, name, points, 0.0, message)


def run_hidden_tests(
    probe: dict, inputs: dict, points: dict[str, float], context: GradingContext
) -> list[TestResult]:
    """Every hidden test for every question; ``points`` maps question id to its points."""
    results: list[TestResult] = []
    third = points["q1_mnist_model"] / 3
    results += _architecture_tests(
        "q1_mnist_model",
        probe.get("mnist_model", {}),
        checks.MNIST_LAYERS,
        {
            "convolutions": third,
            "activations and pooling in order": third,
            "classifier output": third,
        },
    )
    results += _optimizer_tests(
        "q2_loss_optimizer",
        probe.get("mnist_optim", {}),
        "mnist_model",
        points["q2_loss_optimizer"],
    )
    results += _vector_to_class_tests(
        "q3_vector_to_class",
        probe.get("vector_to_class", {}),
        inputs["vector_to_class"],
        points["q3_vector_to_class"],
    )
    results += _cnn_accuracy_tests(
        "q4_cnn_accuracy",
        probe.get("cnn_accuracy", {}),
        inputs["cnn_accuracy"],
        points["q4_cnn_accuracy"],
    )
    total = points["q5_mnist_training"]
    results += _training_tests(
        "q5_mnist_training",
        probe.get("mnist_model", {}),
        probe.get("mnist_history", {}),
        "mnist",
        MNIST_RECIPE,
        MNIST_THRESHOLD,
        context,
        (total * 2 / 3, total / 3),
    )
    total = points["q6_cifar_model"]
    results += _architecture_tests(
        "q6_cifar_model",
        probe.get("cifar_model", {}),
        checks.CIFAR_LAYERS,
        {
            "convolutions": total / 3,
            "activations and pooling in order": total / 3,
            "classifier output": total / 6,
        },
    )
    results += _optimizer_tests(
        "q6_cifar_model", probe.get("cifar_optim", {}), "cifar_model", total / 6
    )
    total = points["q7_cifar_training"]
    results += _training_tests(
        "q7_cifar_training",
        probe.get("cifar_model", {}),
        probe.get("cifar_history", {}),
        "cifar",
        CIFAR_RECIPE,
        CIFAR_THRESHOLD,
        context,
        (total * 3 / 4, total / 4),
    )
    return results
