"""Hidden tests of the lab `cnn_lab`: each judges the plain record the probe made, in the grader.

Each test case is a function with its points beside it, registered for its question; the points
of a question's tests add up to those the lab's front matter declares (checked when the course
is built and when grading starts). The judging rules are those of ``cnn_course.judging``, shared
with the visible checks; these tests apply them to inputs and images the grader chooses.
"""

from __future__ import annotations

import torch
from torch import nn

from cnn_course import judging
from cnn_course.judging import Verdict
from cnn_course.labs.cnn_lab import verdicts
from cnn_course.labs.cnn_lab.specs import CIFAR_LAYERS, MNIST_LAYERS
from cnn_course_instructor.contract import (
    GRADING_IMAGES,
    Context,
    LabContract,
    Registry,
    Retraining,
    accuracy_verdict,
    calls,
    history,
    model,
    need,
    optimizer,
    training,
    value,
)

from . import reference

__all__ = ["CONTRACT"]

# What the probe records from the student's kernel: the steps the tests below read.
CONV2D = calls("conv2d", inputs="convolutions")
OUTPUT_SIZE = calls("conv_output_size", inputs="sizes")
CONV_PARAMETERS = calls("conv_parameters", inputs="convs")
LINEAR_PARAMETERS = calls("linear_parameters", inputs="linears")
MNIST_PARAMETERS = value("mnist_parameters")
MNIST_MODEL = model("mnist_model", input_shape=(1, 28, 28))
MNIST_OPTIM = optimizer(
    "mnist_optim", criterion="criterion", optimizer="optimizer", model="mnist_model"
)
VECTOR_TO_CLASS = calls("vector_to_class", inputs="scores")
CNN_ACCURACY = calls("cnn_accuracy", inputs="predictions")
MNIST_HISTORY = history("mnist_history")
MLP_MODEL = model("mlp_model", input_shape=(1, 28, 28))
CIFAR_MODEL = model("cifar_model", input_shape=(3, 32, 32))
CIFAR_OPTIM = optimizer(
    "cifar_optim", criterion="cifar_criterion", optimizer="cifar_optimizer", model="cifar_model"
)
CIFAR_HISTORY = history("cifar_history")
# The training cells, watched while they run: what they trained on, where they stopped, and each
# model right after its own cell (a later cell's bug cannot cost an earlier exercise).
MNIST_TRAINING = training("q8_mnist_training", model="mnist_model", input_shape=(1, 28, 28))
CIFAR_TRAINING = training("q12_cifar_training", model="cifar_model", input_shape=(3, 32, 32))

tests = Registry()


def grading_inputs(seed: int) -> dict:
    """Inputs for the function questions, drawn afresh for each grading run from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    random_scores = torch.randn(64, 10, generator=generator) * 3
    ties = torch.randn(16, 10, generator=generator)
    ties[:, 7] = ties.max(dim=1).values + 1.0
    ties[:, 2] = ties[:, 7]  # two equal maxima per row: either index is a right answer
    single = torch.randn(1, 10, generator=generator)
    # class 0 neither the largest nor the smallest score: a softmax over dim=0 (all ones) picks 0
    single[0, 0] = (single[0, 1:].max() + single[0, 1:].min()) / 2
    large = torch.randn(32, 10, generator=generator) * 1000  # a hand-written exp() overflows
    labels = torch.randint(0, 10, (50,), generator=generator)
    predict = labels.clone()
    wrong = torch.rand(50, generator=generator) < 0.4
    wrong[0], wrong[1] = True, False  # a fraction strictly between 0 and 1 on every seed
    predict[wrong] = (
        labels[wrong] + torch.randint(1, 10, (int(wrong.sum()),), generator=generator)
    ) % 10
    all_right = torch.randint(0, 10, (20,), generator=generator)
    none_right = (all_right + 1) % 10
    return {
        **_convolution_inputs(generator),
        "scores": [(random_scores,), (ties,), (single,), (large,)],
        "predictions": [
            (predict, labels),
            (all_right, all_right.clone()),
            (none_right, all_right.clone()),
        ],
    }


# One image (C_in, H, W), filters (C_out, C_in, kH, kW), stride and padding per case; the values
# and the sizes are drawn for each run.
_CONVOLUTION_CASES = (
    ("one channel, no padding", 1, 1, (3, 3), 1, 0),
    ("three channels, padding 1", 3, 4, (3, 3), 1, 1),
    ("stride 2", 2, 3, (3, 3), 2, 0),
    ("a 2x3 filter, stride 2 and padding 1", 3, 2, (2, 3), 2, 1),
)


def _convolution_inputs(generator: torch.Generator) -> dict:
    """Inputs of the convolution, output-size and parameter-count questions."""

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    convolutions = []
    for _, c_in, c_out, kernel, stride, padding in _CONVOLUTION_CASES:
        x = torch.rand(c_in, draw(5, 9), draw(5, 9), generator=generator)
        weight = torch.randn(c_out, c_in, *kernel, generator=generator)
        bias = torch.randn(c_out, generator=generator)
        convolutions.append((x, weight, bias, stride, padding))
    # Each case separates the right count from nearly right ones on every seed: rounding a
    # half step to even (right here) or up (wrong), a third of a step left over (math.ceil
    # alone goes up), padding counted once or not at all, the stride or the + 1 missing; no two
    # nearly right counts give the same four values.
    sizes = [
        (draw(8, 40), 3, 1, 1),  # 'same' padding keeps the size
        (4 * draw(2, 10) + 3, 2, 2, 0),  # pooling an odd size: half a step over an even count
        (4 * draw(2, 10) + 2, 3, 2, 0),  # half a step over an odd count: round() goes up
        (3 * draw(3, 12) + 2, 5, 3, 2),  # a third of a step over, with padding 2
    ]
    # Drawn so that no two nearly right counts give the same number: 4 to 8 input channels for
    # 10 to 16 filters, fewer outputs than inputs for the linear layer.
    convs = [(3, draw(8, 64), 5), (draw(4, 8), draw(10, 16), 3)]
    linears = [(draw(50, 800), draw(2, 40))]
    return {"convolutions": convolutions, "sizes": sizes, "convs": convs, "linears": linears}


# --- architectures ----------------------------------------------------------------------------


def _layers(record: dict, key: str):
    records = need(record, key)
    return judging.layers_from_records(records), records.get("error")


def _register_architecture(question: str, key: str, spec, points: dict[str, float]) -> None:
    @tests.case(question, points=points["convolutions"], name="convolutions")
    def convolutions(record: dict, context: Context) -> Verdict:
        layers, _ = _layers(record, key)
        return judging.convolutions_verdict(layers, spec)

    @tests.case(question, points=points["order"], name="activations and pooling in order")
    def order(record: dict, context: Context) -> Verdict:
        layers, _ = _layers(record, key)
        return judging.layer_order_verdict(layers, spec)

    @tests.case(question, points=points["classifier"], name="classifier output")
    def classifier(record: dict, context: Context) -> Verdict:
        layers, error = _layers(record, key)
        return judging.classifier_verdict(layers, spec, error)


def _register_loss_optimizer(question, key, model_name, schedule, points: float) -> None:
    @tests.case(question, points=points / 2, name="loss function")
    def loss(record: dict, context: Context) -> Verdict:
        return judging.loss_verdict(need(record, key))

    @tests.case(question, points=points / 2, name="optimiser")
    def optimizer(record: dict, context: Context) -> Verdict:
        learning_rate = context.lab.training[schedule].learning_rate
        return judging.optimizer_verdict(need(record, key), model_name, learning_rate)


# --- training outcomes ------------------------------------------------------------------------


def _register_training(
    question, model_step, training_step, history_step, dataset, subset, schedule, spec, points
):
    """The trained model's accuracy on unseen images (the points), as its own cell left it
    (``training_step``), and its training history, which is what the student's code says about
    itself: feedback, never points."""

    @tests.case(
        question,
        points=points,
        name=f"trained model reaches {{thresholds[{dataset}]:.2f}} accuracy on unseen images",
    )
    def accuracy(record: dict, context: Context) -> Verdict:
        return accuracy_verdict(
            record,
            context,
            model_step,
            dataset,
            classes=spec[-1].output_shape[0],
            retraining=Retraining(subset, schedule, reference.train_model),
            training_cell=training_step,
        )

    @tests.case(
        question,
        points=0,
        name="one mean loss and accuracy per epoch, loss going down (feedback only: no points)",
    )
    def history(record: dict, context: Context) -> Verdict:
        epochs = context.lab.training[schedule].fast_epochs
        return judging.history_verdict(need(record, history_step), epochs, shortened=True)


# --- the lab's questions ----------------------------------------------------------------------

for _index, (_name, *_) in enumerate(_CONVOLUTION_CASES):

    @tests.case("q1_conv2d", points=0.75, name=_name)
    def _convolution(record: dict, context: Context, index: int = _index) -> Verdict:
        output = need(record, CONV2D)[index]
        return verdicts.conv2d_verdict(output, *context.inputs["convolutions"][index])


_SIZE_CASES = (
    "padding 1",
    "pooling 2x2, stride 2, an odd size",
    "stride 2, half a step left over",
    "a 5x5 window, stride 3, padding 2",
)
for _index, _name in enumerate(_SIZE_CASES):

    @tests.case("q2_output_size", points=0.5, name=_name)
    def _size(record: dict, context: Context, index: int = _index) -> Verdict:
        # all four values: a fault is named by the mistake that gives them all
        outputs = need(record, OUTPUT_SIZE)
        return verdicts.output_size_verdicts(outputs, context.inputs["sizes"])[index]


for _index, _name in enumerate(("convolution with 3 input channels", "another convolution")):

    @tests.case("q3_parameter_count", points=0.5, name=_name)
    def _conv_count(record: dict, context: Context, index: int = _index) -> Verdict:
        output = need(record, CONV_PARAMETERS)[index]
        c_in, c_out, kernel = context.inputs["convs"][index]
        return verdicts.parameter_count_verdict(output, nn.Conv2d(c_in, c_out, kernel))


@tests.case("q3_parameter_count", points=0.5, name="linear layer")
def _linear_count(record: dict, context: Context) -> Verdict:
    (n_in, n_out) = context.inputs["linears"][0]
    output = need(record, LINEAR_PARAMETERS)[0]
    return verdicts.parameter_count_verdict(output, nn.Linear(n_in, n_out))


@tests.case("q3_parameter_count", points=0.5, name="mnist_parameters: the whole MNIST model")
def _mnist_count(record: dict, context: Context) -> Verdict:
    return verdicts.model_parameter_count_verdict(need(record, MNIST_PARAMETERS), MNIST_LAYERS)


_register_architecture(
    "q4_mnist_model", MNIST_MODEL, MNIST_LAYERS, {"convolutions": 1, "order": 1, "classifier": 1}
)
_register_loss_optimizer("q5_loss_optimizer", MNIST_OPTIM, "mnist_model", "mnist", 1)

_SCORE_CASES = ("random scores (64, 10)", "rows with tied maxima", "a single row (1, 10)")
for _index, _name in enumerate((*_SCORE_CASES, "very large scores")):

    @tests.case("q6_vector_to_class", points=0.5, name=_name)
    def _classes(record: dict, context: Context, index: int = _index) -> Verdict:
        outputs = need(record, VECTOR_TO_CLASS)
        (scores,) = context.inputs["scores"][index]
        return judging.classes_verdict(outputs[index], scores)


_FRACTION_CASES = ("fraction of right predictions", "all predictions right", "no prediction right")
for _index, _name in enumerate(_FRACTION_CASES):

    @tests.case("q7_cnn_accuracy", points=0.5, name=_name)
    def _fraction(record: dict, context: Context, index: int = _index) -> Verdict:
        outputs = need(record, CNN_ACCURACY)
        predict, labels = context.inputs["predictions"][index]
        return judging.fraction_verdict(outputs[index], predict, labels)


@tests.case("q7_cnn_accuracy", points=0.5, name="returns a Python number")
def _returns_number(record: dict, context: Context) -> Verdict:
    return judging.number_verdict(need(record, CNN_ACCURACY)[0])


_register_training(
    "q8_mnist_training",
    MNIST_MODEL,
    MNIST_TRAINING,
    MNIST_HISTORY,
    "mnist",
    "mnist_train",
    "mnist",
    MNIST_LAYERS,
    3,
)


@tests.case("q9_mlp_model", points=1, name="fully connected layers only, raw scores out")
def _mlp_layers(record: dict, context: Context) -> Verdict:
    layers, error = _layers(record, MLP_MODEL)
    return verdicts.mlp_verdict(layers, MNIST_LAYERS[-1].output_shape, error)


@tests.case("q9_mlp_model", points=1, name="about as many parameters as the CNN")
def _mlp_budget(record: dict, context: Context) -> Verdict:
    layers, _ = _layers(record, MLP_MODEL)
    budget = sum(p.numel() for p in verdicts.parametrised_layers(MNIST_LAYERS).parameters())
    return verdicts.budget_verdict(layers, budget)


_register_architecture(
    "q11_cifar_model", CIFAR_MODEL, CIFAR_LAYERS, {"convolutions": 1, "order": 1, "classifier": 0.5}
)
_register_loss_optimizer("q11_cifar_model", CIFAR_OPTIM, "cifar_model", "cifar", 0.5)
_register_training(
    "q12_cifar_training",
    CIFAR_MODEL,
    CIFAR_TRAINING,
    CIFAR_HISTORY,
    "cifar10",
    "cifar_train",
    "cifar",
    CIFAR_LAYERS,
    4,
)

CONTRACT = LabContract(
    tests=tests,
    probe=(
        CONV2D,
        OUTPUT_SIZE,
        CONV_PARAMETERS,
        LINEAR_PARAMETERS,
        MNIST_PARAMETERS,
        MNIST_MODEL,
        MNIST_OPTIM,
        VECTOR_TO_CLASS,
        CNN_ACCURACY,
        MNIST_HISTORY,
        MNIST_TRAINING,
        MLP_MODEL,
        CIFAR_MODEL,
        CIFAR_OPTIM,
        CIFAR_HISTORY,
        CIFAR_TRAINING,
    ),
    inputs=grading_inputs,
    # Facts of the grading that the lab's text quotes (`{{ grading.images }}`), so that what
    # students read is what the grader does; its thresholds are the front matter's.
    public_facts={
        "images": GRADING_IMAGES,
        "mlp_tolerance": f"{verdicts.BUDGET_TOLERANCE:.0%}",
    },
    reference=reference,
)
