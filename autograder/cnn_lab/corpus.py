"""Sample submissions of part 1 (cnn_lab): the solution, the untouched stub, right variants and
typical mistakes.

Each sample is the built solution notebook with a few exact edits, so the corpus follows the
lab as it changes (an edit that no longer applies fails loudly), and the points it must lose
(its expected scores come from the front matter's points; see ``cnn_course_instructor.corpus``).
``cnn-course corpus --lab cnn_lab`` grades the whole corpus through the real grader; the tests
grade its ``fast`` samples.
"""

from __future__ import annotations

from cnn_course_instructor.corpus import ALL, Sample

CONV2D_SUM = "            out[:, i, j] = (weight * patch).sum(dim=(1, 2, 3)) + bias\n"
CONV2D_LOOPS = (
    """    h_out = (padded.shape[1] - k_h) // stride + 1
    w_out = (padded.shape[2] - k_w) // stride + 1
    out = torch.zeros(c_out, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            patch = padded[:, i * stride : i * stride + k_h, j * stride : j * stride + k_w]
"""
    + CONV2D_SUM
)
OUTPUT_SIZE = "    out = (size + 2 * padding - kernel_size) // stride + 1"
CONV_COUNT = "    count = out_channels * (in_channels * kernel_size * kernel_size + 1)"
LINEAR_COUNT = "    count = out_features * (in_features + 1)"
CONV2D_PATCH = "patch = padded[:, i * stride : i * stride + k_h, j * stride : j * stride + k_w]"
CONV2D_PADDED = "    padded[:, padding : padding + height, padding : padding + width] = x\n"
CLASSES = "    y = torch.argmax(probabilities, dim=1)"
ACCURACY = "accuracy = (predict == labels).float().mean().item()"
MLP_WIDTH = "n_hidden_mlp = 91  # 784 * 91 + 91 + 91 * 10 + 10 = 72,355 parameters"
MNIST_LINEAR = "    nn.Linear(n_h_2 * 14 * 14, nb_classes),\n)"
MNIST_SECOND_RELU = '    nn.Conv2d(n_h_1, n_h_2, kernel_size=kernel_size, stride=1, padding="same"),\n    nn.ReLU(),\n'

CIFAR_SEQUENTIAL = """cifar_model = nn.Sequential(
    nn.Conv2d(n_h_0, n_h_1, kernel_size=kernel_size, padding="same"),
    nn.ReLU(),
    nn.Conv2d(n_h_1, n_h_2, kernel_size=kernel_size, padding="same"),
    nn.ReLU(),
    nn.MaxPool2d(pool_size, pool_size),
    nn.Conv2d(n_h_2, n_h_3, kernel_size=kernel_size, padding="same"),
    nn.ReLU(),
    nn.MaxPool2d(pool_size, pool_size),
    nn.Flatten(),
    nn.Linear(n_h_3 * 8 * 8, n_hidden),
    nn.ReLU(),
    nn.Linear(n_hidden, nb_classes),
)
"""

SAMPLES = [
    Sample("solution", fast=True),
    Sample("untouched_stub", lost=ALL, fault="NotImplementedError", fast=True, base="student"),
    Sample(
        "right_other_spellings",
        (
            (
                "mnist_model = nn.Sequential(\n",
                "mnist_model = nn.Sequential()\nfor layer in [\n",
            ),
            (MNIST_LINEAR, "    nn.Linear(6272, 10),\n]:\n    mnist_model.append(layer)"),
            (
                'nn.Conv2d(n_h_0, n_h_1, kernel_size=kernel_size, stride=1, padding="same")',
                "nn.Conv2d(1, 32, 3, 1, 1)",
            ),
            (
                "    probabilities = torch.softmax(x, dim=1)\n    y = torch.argmax(probabilities, dim=1)",
                "    y = x.argmax(1)",
            ),
            (
                "accuracy = (predict == labels).float().mean().item()",
                "accuracy = (predict == labels).sum().item() / len(labels)",
            ),
            # an nn.Module subclass with F.relu / F.max_pool2d / x.view in forward, and a shape
            # guard and an assert that torch.fx cannot follow
            (
                CIFAR_SEQUENTIAL,
                "import torch.nn.functional as F\n\n\n"
                "class CifarNet(nn.Module):\n"
                "    def __init__(self):\n"
                "        super().__init__()\n"
                "        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)\n"
                "        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)\n"
                "        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)\n"
                "        self.fc1 = nn.Linear(32 * 8 * 8, 256)\n"
                "        self.fc2 = nn.Linear(256, 10)\n\n"
                "    def forward(self, x):\n"
                "        if x.dim() == 3:  # one image: a batch of one\n"
                "            x = x.unsqueeze(0)\n"
                '        assert x.shape[1:] == (3, 32, 32), f"CIFAR-10 images, not {tuple(x.shape)}"\n'
                "        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)\n"
                "        x = F.max_pool2d(F.relu(self.conv3(x)), 2)\n"
                "        x = x.view(x.size(0), -1)\n"
                "        return self.fc2(F.relu(self.fc1(x)))\n\n\n"
                "cifar_model = CifarNet()\n",
            ),
            # n_epochs = 1 typed into the locked settings cell: the released cell runs instead
            ('n_epochs = lab.training["mnist"].num_epochs', "n_epochs = 1"),
        ),
        fault='learning_rate = lab.training["mnist"].learning_rate',  # the locked cell it restored
        fast=True,
    ),
    Sample(
        "right_new_exercises_otherwise",
        (
            (
                CONV2D_LOOPS,
                "    patches = padded.unfold(1, k_h, stride).unfold(2, k_w, stride)\n"
                '    out = torch.einsum("chwab,ocab->ohw", patches, weight) + bias.view(-1, 1, 1)\n',
            ),
            (OUTPUT_SIZE, "    out = math.floor((size + 2 * padding - kernel_size) / stride) + 1"),
            ("def conv_output_size(", "import math\n\n\ndef conv_output_size("),
            (
                CONV_COUNT,
                "    count = nn.Conv2d(in_channels, out_channels, kernel_size).weight.numel() + out_channels",
            ),
            (MLP_WIDTH, "n_hidden_mlp = 90"),
        ),
    ),
    Sample(
        # Other whole forms, all right: unfold and a matrix product, named layers, a network of
        # two nn.Sequential parts, literal sizes, gradients zeroed after the step.
        "right_other_forms",
        (
            (
                "    padded = torch.zeros(c_in, height + 2 * padding, width + 2 * padding)\n"
                "    padded[:, padding : padding + height, padding : padding + width] = x\n"
                + CONV2D_LOOPS,
                "    padded = F.pad(x, (padding, padding, padding, padding))\n"
                "    columns = F.unfold(padded.unsqueeze(0), (k_h, k_w), stride=stride)[0]\n"
                "    h_out = (padded.shape[1] - k_h) // stride + 1\n"
                "    w_out = (padded.shape[2] - k_w) // stride + 1\n"
                "    out = (weight.reshape(c_out, -1) @ columns + bias[:, None]).reshape(c_out, h_out, w_out)\n",
            ),
            ("def conv2d(", "import torch.nn.functional as F\n\n\ndef conv2d("),
            (OUTPUT_SIZE, "    out = int((size - kernel_size + 2 * padding) / stride) + 1"),
            (
                "mnist_model = nn.Sequential(\n",
                "from collections import OrderedDict\n\nmnist_model = nn.Sequential(\n",
            ),
            (
                'nn.Conv2d(n_h_0, n_h_1, kernel_size=kernel_size, stride=1, padding="same"),\n'
                "    nn.ReLU(),\n"
                + MNIST_SECOND_RELU
                + "    nn.MaxPool2d(kernel_size=pool_size, stride=pool_size),\n    nn.Flatten(),\n"
                + MNIST_LINEAR,
                "OrderedDict(\n"
                "        conv1=nn.Conv2d(1, 32, kernel_size=(3, 3), padding=1),\n"
                "        relu1=nn.ReLU(inplace=True),\n"
                "        conv2=nn.Conv2d(32, 32, 3, padding=(1, 1)),\n"
                "        relu2=nn.ReLU(),\n"
                "        pool=nn.MaxPool2d(2),\n"
                "        flatten=nn.Flatten(start_dim=1),\n"
                "        fc=nn.Linear(6272, 10, bias=True),\n"
                "    )\n)",
            ),
            (
                "optimizer = torch.optim.Adam(mnist_model.parameters(), lr=learning_rate)",
                "optimizer = torch.optim.Adam(params=mnist_model.parameters(), lr=0.001)",
            ),
            (
                "    probabilities = torch.softmax(x, dim=1)\n    y = torch.argmax(probabilities, dim=1)",
                "    y = torch.max(x, dim=1).indices",
            ),
            (
                "accuracy = (predict == labels).float().mean().item()",
                "accuracy = float(torch.sum(predict == labels)) / labels.numel()",
            ),
            (
                CIFAR_SEQUENTIAL,
                "class CifarNet(nn.Module):\n"
                "    def __init__(self):\n"
                "        super().__init__()\n"
                "        self.features = nn.Sequential(\n"
                "            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),\n"
                "            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
                "            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
                "        )\n"
                "        self.classifier = nn.Sequential(nn.Linear(2048, 256), nn.ReLU(), nn.Linear(256, 10))\n\n"
                "    def forward(self, x):\n"
                "        return self.classifier(torch.flatten(self.features(x), 1))\n\n\n"
                "cifar_model = CifarNet()\n",
            ),
            (
                "    for imgs, labels in monitor.batches(cifar_train_loader):\n"
                "        cifar_optimizer.zero_grad()\n",
                "    for step, (imgs, labels) in enumerate(monitor.batches(cifar_train_loader)):\n",
            ),
            (
                "        cifar_optimizer.step()\n",
                "        cifar_optimizer.step()\n        cifar_optimizer.zero_grad(set_to_none=True)\n",
            ),
            (
                "filters = cifar_model[0].weight.detach()\nfirst_channel = filters[:, 0]",
                "filters = cifar_model.features[0].weight.data.clone()\n"
                "first_channel = filters[:, 0, :, :]",
            ),
        ),
    ),
    Sample(
        "conv2d_flipped_filter",
        ((CONV2D_SUM, CONV2D_SUM.replace("(weight * patch)", "(weight.flip(2, 3) * patch)")),),
        lost={"q1_conv2d": 3.0},
        fault="the filter is flipped",
    ),
    Sample(
        "conv2d_without_bias",
        ((CONV2D_SUM, CONV2D_SUM.replace(" + bias\n", "\n")),),
        lost={"q1_conv2d": 3.0},
        fault="the bias is missing",
    ),
    Sample(
        "output_size_true_division",
        ((OUTPUT_SIZE, OUTPUT_SIZE.replace(") // stride", ") / stride")),),
        # mnist_parameters, computed from a float size, is a float too.
        lost={"q2_output_size": 2.0, "q3_parameter_count": 0.5},
        fault="use // (floor division)",
    ),
    Sample(
        "output_size_padding_once",
        ((OUTPUT_SIZE, OUTPUT_SIZE.replace("2 * padding", "padding")),),
        lost={"q2_output_size": 1.0},  # the two cases without padding still pass
        fault="2 × padding in all",
    ),
    Sample(
        "parameters_without_biases",
        ((CONV_COUNT, "    count = out_channels * in_channels * kernel_size * kernel_size"),),
        lost={"q3_parameter_count": 1.5},  # both convolutions, and the total
        fault="the biases are missing",
    ),
    Sample(
        "mlp_too_wide",
        ((MLP_WIDTH, "n_hidden_mlp = 512"),),
        lost={"q9_mlp_model": 1.0},
        fault="the comparison is fair only with about the CNN's 72,298",
    ),
    Sample(
        "wrong_linear_input",
        ((MNIST_LINEAR, "    nn.Linear(n_h_2 * 7 * 7, nb_classes),\n)"),),
        lost={"q4_mnist_model": 1.0, "q8_mnist_training": 3.0},
        fault="Linear(6272, 10)",
    ),
    Sample(
        "missing_relu",
        ((MNIST_SECOND_RELU, MNIST_SECOND_RELU.replace("    nn.ReLU(),\n", "")),),
        lost={"q4_mnist_model": 1.0},
        fault="expected ReLU",
    ),
    Sample(
        "argmax_over_batch",
        (
            (
                "    y = torch.argmax(probabilities, dim=1)",
                "    y = torch.argmax(probabilities, dim=0)",
            ),
        ),
        lost={"q6_vector_to_class": 2.0, "q8_mnist_training": 3.0, "q12_cifar_training": 4.0},
        fault="dim=0",
    ),
    Sample(
        "accuracy_as_count",
        (
            (
                "accuracy = (predict == labels).float().mean().item()",
                "accuracy = (predict == labels).sum().item()",
            ),
        ),
        # The histories' accuracies over 1 cost no points: a history is feedback only.
        lost={"q7_cnn_accuracy": 1.0},
        fault="divide by N",
    ),
    Sample(
        "softmax_before_loss",
        ((MNIST_LINEAR, "    nn.Linear(n_h_2 * 14 * 14, nb_classes),\n    nn.Softmax(dim=1),\n)"),),
        # Softmax then CrossEntropyLoss learns too slowly: 2 epochs stay under the threshold.
        lost={"q4_mnist_model": 1.0, "q8_mnist_training": 3.0},
        fault="applies the softmax itself",
    ),
    Sample(
        "bce_loss",
        (("HERE\ncriterion = nn.CrossEntropyLoss()", "HERE\ncriterion = nn.BCELoss()"),),
        lost={"q5_loss_optimizer": 0.5, "q8_mnist_training": 3.0},
        fault="BCELoss",
    ),
    Sample(
        "no_optimizer_step",
        (("        cifar_optimizer.step()\n", ""),),
        lost={"q12_cifar_training": 4.0},
        fault="training loop",
        fast=True,
    ),
    Sample(
        "no_zero_grad",
        (("        cifar_optimizer.zero_grad()\n", ""),),
        # Gradients pile up over the epoch: the loss does not go down and accuracy stays low.
        lost={"q12_cifar_training": 4.0},
        fault="training loop",
    ),
    Sample(
        "nhwc_input",
        (
            (
                "        predict = cifar_model(imgs)\n",
                "        predict = cifar_model(imgs.permute(0, 2, 3, 1))\n",
            ),
        ),
        lost={"q12_cifar_training": 4.0},
        # The model refuses the images: the training cell stops at its first batch, and says so.
        fault="to have 3 channels",
    ),
    Sample(
        "cifar_nine_outputs",
        (
            (
                "    nn.Linear(n_hidden, nb_classes),\n)\ncifar_criterion",
                "    nn.Linear(n_hidden, 9),\n)\ncifar_criterion",
            ),
        ),
        # The student's own training raises (target 9 out of bounds); the grader's tests do not.
        # The layer table loses its classifier points; the training, 10 scores needed for 10 classes.
        lost={"q11_cifar_model": 0.5, "q12_cifar_training": 4.0},
        fault="per image where the 10 classes need 10 scores",
    ),
    Sample(
        "accuracy_broadcast_column",
        (
            (
                "accuracy = (predict == labels).float().mean().item()",
                "accuracy = (predict.reshape(-1, 1) == labels).float().mean().item()",
            ),
        ),
        # A number is returned (the type check passes); every value is wrong, and said why.
        lost={"q7_cnn_accuracy": 1.5},
        fault="broadcasts; make both tensors (N,)",
    ),
    Sample(
        "loss_class_not_instance",
        (("HERE\ncriterion = nn.CrossEntropyLoss()", "HERE\ncriterion = nn.CrossEntropyLoss"),),
        lost={"q5_loss_optimizer": 0.5, "q8_mnist_training": 3.0},
        fault="nn.CrossEntropyLoss()",
    ),
    Sample(
        "optimizer_over_other_parameters",
        (
            (
                "optimizer = torch.optim.Adam(mnist_model.parameters(), lr=learning_rate)",
                "optimizer = torch.optim.Adam(nn.Linear(784, 10).parameters(), lr=learning_rate)",
            ),
        ),
        lost={"q5_loss_optimizer": 0.5, "q8_mnist_training": 3.0},
        fault="does not hold mnist_model's parameters",
    ),
    Sample(
        "cifar_learning_rate_one",
        (
            (
                "cifar_optimizer = torch.optim.Adam(cifar_model.parameters(), lr=learning_rate)",
                "cifar_optimizer = torch.optim.Adam(cifar_model.parameters(), lr=1.0)",
            ),
        ),
        # The optimiser test names the rate; the training test sends the student to the optimiser.
        lost={"q11_cifar_model": 0.25, "q12_cifar_training": 4.0},
        fault="expected the learning rate learning_rate = 0.001, got 1",
    ),
    # Issue 25: each nearly right function loses what it gets wrong on every seed, and its
    # feedback names the mistake in the student's terms.
    Sample(
        "output_size_round",
        ((OUTPUT_SIZE, "    out = round((size + 2 * padding - kernel_size) / stride) + 1"),),
        # right where a half step rounds to an even count, wrong where it rounds up
        lost={"q2_output_size": 0.5},
        fault="round() goes to the nearest whole number, and from .5 to the even one",
    ),
    Sample(
        "output_size_ceil",
        (
            (OUTPUT_SIZE, "    out = math.ceil((size + 2 * padding - kernel_size) / stride) + 1"),
            ("def conv_output_size(", "import math\n\n\ndef conv_output_size("),
        ),
        lost={"q2_output_size": 1.5},  # every case with a fraction of a step left over
        fault="rounded up, as math.ceil does",
    ),
    Sample(
        "output_size_no_plus_one",
        ((OUTPUT_SIZE, OUTPUT_SIZE.replace(" + 1", "")),),
        # mnist_parameters, computed with it, counts the linear layer from 32 x 13 x 13 inputs
        lost={"q2_output_size": 2.0, "q3_parameter_count": 0.5},
        fault="count the window's first position too (the + 1)",
    ),
    Sample(
        "right_size_spellings",
        (
            (
                OUTPUT_SIZE,
                "    out = int(np.floor((size - kernel_size + 2 * padding) / stride) + 1)",
            ),
            ("def conv_output_size(", "import numpy as np\n\n\ndef conv_output_size("),
            (CONV_COUNT, "    count = in_channels * out_channels * kernel_size**2 + out_channels"),
            (LINEAR_COUNT, "    count = in_features * out_features + out_features"),
            (CLASSES, "    y = torch.max(probabilities, 1)[1]"),
            (ACCURACY, "accuracy = torch.eq(predict, labels).double().mean().item()"),
        ),
    ),
    Sample(
        "parameters_without_pooling",
        (
            (
                "pooled = conv_output_size(28, kernel_size=2, stride=2)",
                "pooled = conv_output_size(28, kernel_size=3, stride=1, padding=1)",
            ),
        ),
        lost={"q3_parameter_count": 0.5},
        fault="the 2×2 pooling halves the height and the width (28 → 14)",
    ),
    Sample(
        "conv_parameters_xor",
        ((CONV_COUNT, "    count = out_channels * (in_channels * (kernel_size ^ 2) + 1)"),),
        lost={"q3_parameter_count": 1.5},  # both convolutions, and the total
        fault="kernel_size ^ 2 is a bitwise XOR",
    ),
    Sample(
        "linear_bias_per_input",
        ((LINEAR_COUNT, "    count = in_features * (out_features + 1)"),),
        lost={"q3_parameter_count": 1.0},  # the linear layer, and the total
        fault="not one per input",
    ),
    Sample(
        "conv2d_window_moves_one",
        ((CONV2D_PATCH, "patch = padded[:, i : i + k_h, j : j + k_w]"),),
        lost={"q1_conv2d": 1.5},  # the two cases with stride 2
        fault="the window moves 1 pixel at a time",
    ),
    Sample(
        "conv2d_image_in_corner",
        ((CONV2D_PADDED, "    padded[:, :height, :width] = x\n"),),
        lost={"q1_conv2d": 1.5},  # the two cases with padding
        fault="x sits in the top left corner of the padded image",
    ),
    Sample(
        "classes_as_largest_values",
        ((CLASSES, "    y = torch.max(probabilities, dim=1).values"),),
        # The histories' accuracies (a float compared with the labels) cost no points.
        lost={"q6_vector_to_class": 2.0},
        fault="returned the largest probabilities themselves",
    ),
    Sample(
        "accuracy_floor_division",
        ((ACCURACY, "accuracy = (predict == labels).sum().item() // len(labels)"),),
        lost={"q7_cnn_accuracy": 0.5},  # all right and none right come out whole
        fault="integer division",
    ),
    Sample(
        "accuracy_as_percentage",
        ((ACCURACY, "accuracy = 100 * (predict == labels).float().mean().item()"),),
        lost={"q7_cnn_accuracy": 1.0},  # none right is 0 either way
        fault="a percentage: return a fraction",
    ),
    Sample(
        # Trains on the test images too: the grader's unseen images would not show it.
        "cifar_trains_on_test_images",
        (
            (
                "    for imgs, labels in monitor.batches(cifar_train_loader):\n",
                "    everything = data.make_loader(\n"
                "        torch.cat([X_train, X_test]), torch.cat([Y_train, Y_test]), batch_size\n"
                "    )\n"
                "    for imgs, labels in monitor.batches(everything):\n",
            ),
        ),
        lost={"q12_cifar_training": 4.0},
        fault="images of the cifar10 test split",
    ),
    Sample(
        # The CIFAR-10 loop steps the MNIST optimiser, which moves mnist_model with its last
        # gradients: the MNIST exercise is judged as its own cell left it, and keeps its points.
        "cifar_steps_mnist_optimizer",
        (("        cifar_optimizer.step()\n", "        optimizer.step()\n"),),
        lost={"q12_cifar_training": 4.0},
        fault="the optimiser it steps",
    ),
    Sample(
        # vector_to_class returns the probabilities: cnn_accuracy, right itself, raises in both
        # training loops, and each training exercise names it rather than its loop.
        "vector_to_class_probabilities",
        (("    y = torch.argmax(probabilities, dim=1)", "    y = probabilities"),),
        lost={"q6_vector_to_class": 2.0, "q8_mnist_training": 3.0, "q12_cifar_training": 4.0},
        fault="your cnn_accuracy raised RuntimeError",
    ),
    Sample(
        # Right: the CIFAR-10 loop slices the training tensors itself, no loader.
        "right_cifar_loop_by_slices",
        (
            (
                "    for imgs, labels in monitor.batches(cifar_train_loader):\n",
                "    order = torch.randperm(len(X_train))\n"
                "    for start in range(0, len(X_train), batch_size):\n"
                "        imgs = X_train[order[start : start + batch_size]]\n"
                "        labels = Y_train[order[start : start + batch_size]]\n",
            ),
        ),
    ),
]
