"""Sample submissions of part 2 (cnn_part2): the solution, the stub, right variants and mistakes.

Made like part 1's (``autograder/cnn_lab/corpus.py``): the built solution notebook with exact
edits, and the points each sample must lose. ``cnn-course corpus --lab cnn_part2`` grades them
all through the real grader; ``tests/test_part2.py`` also judges each sample's functions alone,
in seconds.
"""

from __future__ import annotations

from cnn_course_instructor.corpus import ALL, Sample

SALIENCY_BACKWARD = "    scores.gather(1, classes.view(-1, 1)).sum().backward()\n    return x.grad"
SALIENCY_COPY = "    x = images.clone().requires_grad_()\n    scores = model(x)\n    scores.gather"
OCCLUSION_SOFTMAX = "torch.softmax(model(torch.stack([image, *copies])), dim=1)[:, label]"
GRADCAM_RETURN = "    return F.relu((weights * activations).sum(dim=1)).detach()"
TRAIN_AUGMENT = "        imgs = torch.stack([augment(image) for image in imgs])\n"
FGSM_RETURN = "    return (images + epsilon * x.grad.sign()).clamp(0, 1).detach()"
OCCLUSION_BODY = """    _, height, width = image.shape
    tops = range(0, height - patch_size + 1, stride)
    lefts = range(0, width - patch_size + 1, stride)
    copies = []
    for top in tops:
        for left in lefts:
            copy = image.clone()
            copy[:, top : top + patch_size, left : left + patch_size] = 0.5
            copies.append(copy)
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.stack([image, *copies])), dim=1)[:, label]
    return (probabilities[0] - probabilities[1:]).view(len(tops), len(lefts))
"""
GRADCAM_TAIL = """    scores = model(images)
    handle.remove()
    activations = caught["A"]
    score = scores.gather(1, classes.view(-1, 1)).sum()
    (gradients,) = torch.autograd.grad(score, activations)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
"""

TOP_HOOK = (
    "    model.eval()\n    caught = {}\n    handle = layer.register_forward_hook(lambda module, "
    "inputs, output: caught.update(A=output))\n    with torch.no_grad():\n        model(images)"
)
OCCLUSION_RANGES = (
    "    tops = range(0, height - patch_size + 1, stride)\n"
    "    lefts = range(0, width - patch_size + 1, stride)\n"
)
GRADCAM_WEIGHTS = "    weights = gradients.mean(dim=(2, 3), keepdim=True)\n"
OCCLUSION_DROPS = "    return (probabilities[0] - probabilities[1:]).view(len(tops), len(lefts))"


def _mistake(name: str, edits, question: str, points: float, fault: str) -> Sample:
    """A sample with one typical mistake: ``edits`` of the solution, the points it loses."""
    return Sample(name, tuple(edits), lost={question: points}, fault=fault)


SAMPLES = [
    Sample("solution", fast=True),
    Sample("untouched_stub", lost=ALL, fault="NotImplementedError", fast=True, base="student"),
    Sample(
        "right_other_spellings",
        (
            (
                SALIENCY_BACKWARD,
                "    scores[torch.arange(len(classes)), classes].sum().backward()\n"
                "    return x.grad",
            ),
            ("x.grad.abs().amax(dim=1)", "x.grad.abs().max(dim=1).values"),
            (
                FGSM_RETURN,
                "    with torch.no_grad():\n"
                "        return torch.clamp(images + epsilon * torch.sign(x.grad), 0.0, 1.0)",
            ),
            (
                "augment = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(32, padding=4)])",
                "augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(p=0.5)])",
            ),
        ),
    ),
    Sample(
        # Whole other ways to write each function, all right: one image at a time, one
        # patch at a time, gradients caught by a backward hook, torch.topk, torch.autograd.grad.
        "right_other_implementations",
        (
            (
                SALIENCY_COPY + "(1, classes.view(-1, 1)).sum().backward()\n"
                "    return x.grad.abs().amax(dim=1)",
                "    maps = []\n"
                "    for image, label in zip(images, classes):\n"
                "        x = image.unsqueeze(0).detach().clone()\n"
                "        x.requires_grad = True\n"
                "        model.zero_grad()\n"
                "        model(x)[0, label].backward()\n"
                "        maps.append(x.grad[0].abs().max(dim=0).values)\n"
                "    return torch.stack(maps)",
            ),
            (
                OCCLUSION_BODY,
                "    _, height, width = image.shape\n"
                "    rows, columns = [], range(0, width - patch_size + 1, stride)\n"
                "    with torch.no_grad():\n"
                "        base = F.softmax(model(image[None]), dim=-1)[0, label].item()\n"
                "        for top in range(0, height - patch_size + 1, stride):\n"
                "            row = []\n"
                "            for left in columns:\n"
                "                x = image.clone()\n"
                "                x[..., top : top + patch_size, left : left + patch_size] = 0.5\n"
                "                row.append(base - F.softmax(model(x[None]), dim=-1)[0, label].item())\n"
                "            rows.append(row)\n"
                "    return torch.tensor(rows)\n",
            ),
            (
                GRADCAM_TAIL + GRADCAM_RETURN,
                "    caught_gradient = {}\n"
                "    backward = layer.register_full_backward_hook(\n"
                "        lambda module, grad_in, grad_out: caught_gradient.update(G=grad_out[0])\n"
                "    )\n"
                "    scores = model(images)\n"
                "    handle.remove()\n"
                "    model.zero_grad()\n"
                "    scores[torch.arange(len(classes)), classes].sum().backward()\n"
                "    backward.remove()\n"
                "    weights = caught_gradient['G'].mean(dim=(2, 3))\n"
                "    cam = torch.einsum('nc,nchw->nhw', weights, caught['A'])\n"
                "    return torch.clamp(cam, min=0).detach()",
            ),
            (
                "    chosen = best.argsort(descending=True)[:k]\n",
                "    chosen = torch.topk(best, k).indices\n",
            ),
            (
                "    loss = F.cross_entropy(model(x), labels)\n    loss.backward()\n" + FGSM_RETURN,
                "    loss = nn.CrossEntropyLoss(reduction='sum')(model(x), labels)\n"
                "    (gradient,) = torch.autograd.grad(loss, x)\n"
                "    with torch.no_grad():\n"
                "        return torch.clamp(x + epsilon * gradient.sign(), 0.0, 1.0)",
            ),
        ),
    ),
    Sample(
        "saliency_of_the_loss",
        (
            (
                SALIENCY_BACKWARD,
                "    F.cross_entropy(scores, classes).backward()\n    return x.grad",
            ),
        ),
        lost={"q4_saliency": 2},
        fault="gradient of the loss",
    ),
    Sample(
        "saliency_without_eval",
        (("    model.eval()\n" + SALIENCY_COPY, SALIENCY_COPY),),
        lost={"q4_saliency": 2},
        fault="model.eval()",
    ),
    Sample(
        "saliency_gradients_pile_up",
        ((SALIENCY_COPY, SALIENCY_COPY.replace("images.clone()", "images")),),
        lost={"q4_saliency": 1},
        fault="gradients pile up",
    ),
    Sample(
        "occlusion_of_scores",
        ((OCCLUSION_SOFTMAX, "model(torch.stack([image, *copies]))[:, label]"),),
        lost={"q5_occlusion": 2},
        fault="probabilities",
    ),
    Sample(
        "occlusion_in_place",
        (("            copy = image.clone()\n", "            copy = image\n"),),
        lost={"q5_occlusion": 3},
        fault="in place",
    ),
    Sample(
        "grad_cam_not_detached",
        ((GRADCAM_RETURN, GRADCAM_RETURN.replace(".detach()", "")),),
        lost={"q6_grad_cam": 0.5},
        fault="requires grad",
    ),
    Sample(
        "grad_cam_of_the_loss",
        (
            (
                "    score = scores.gather(1, classes.view(-1, 1)).sum()\n",
                "    score = F.cross_entropy(scores, classes)\n",
            ),
        ),
        lost={"q6_grad_cam": 2},
        fault="gradient of the loss",
    ),
    Sample(
        "top_in_increasing_order",
        (("chosen = best.argsort(descending=True)[:k]", "chosen = best.argsort()[:k]"),),
        lost={"q7_top_activations": 1.5},
        fault="expected the images",
    ),
    Sample(
        "fgsm_wrong_sign",
        ((FGSM_RETURN, FGSM_RETURN.replace("images + epsilon", "images - epsilon")),),
        lost={"q8_fgsm": 2},
        fault="lowers the loss",
    ),
    Sample(
        "fgsm_no_clamp",
        ((FGSM_RETURN, FGSM_RETURN.replace(".clamp(0, 1)", "")),),
        lost={"q8_fgsm": 2.5},
        fault="clamp",
    ),
    Sample(
        "fgsm_not_detached",
        ((FGSM_RETURN, "    return (x + epsilon * x.grad.sign()).clamp(0, 1)"),),
        lost={"q8_fgsm": 0.5},
        fault="requires grad",
    ),
    Sample(
        "augment_without_flips",
        (
            (
                "augment = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(32, padding=4)])",
                "augment = v2.RandomCrop(32, padding=4)",
            ),
        ),
        lost={"q2_augmentation": 1},
        fault="flip at random",
    ),
    Sample(
        # Hooks left on the network: the maps are right, and every later forward pass of the
        # network runs the hook (the grader's fresh network per call would not show it).
        "grad_cam_hook_left",
        (("    scores = model(images)\n    handle.remove()\n", "    scores = model(images)\n"),),
        lost={"q6_grad_cam": 0.5},
        fault="left 1 forward hook on layer",
    ),
    Sample(
        "top_activations_hook_left",
        (("        model(images)\n    handle.remove()\n", "        model(images)\n"),),
        lost={"q7_top_activations": 0.5},
        fault="call handle.remove()",
    ),
    Sample(
        # A loop that never calls the augmentation the exercise asks for: its accuracy may even
        # be higher after the shortened run, so only what it trained on shows it.
        "training_without_augment",
        ((TRAIN_AUGMENT, ""),),
        lost={"q3_better_training": 0.5},
        fault="exactly as stored",
    ),
    Sample(
        # Right: each epoch augments the whole training set first, then loops over its batches.
        "right_augmented_dataset_loop",
        (
            (
                "    for imgs, labels in monitor.batches(train_loader):\n",
                "    augmented = torch.stack([augment(image) for image in cifar_train.images])\n"
                "    epoch_loader = data.make_loader(\n"
                "        augmented, cifar_train.labels, schedule.batch_size, seed=epoch\n"
                "    )\n"
                "    for imgs, labels in monitor.batches(epoch_loader):\n",
            ),
            (TRAIN_AUGMENT, ""),
        ),
    ),
    Sample(
        # Grad-CAM up to scale: summed (not averaged) gradients, each map divided by its largest
        # value after the ReLU; the saliency through torch.autograd.grad and max(1)[0].
        "right_scaled_grad_cam",
        (
            (GRADCAM_WEIGHTS, "    weights = gradients.sum(dim=(2, 3), keepdim=True)\n"),
            (
                GRADCAM_RETURN,
                "    cam = F.relu((weights * activations).sum(dim=1))\n"
                "    return (cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).detach()",
            ),
            (
                SALIENCY_BACKWARD + ".abs().amax(dim=1)",
                "    score = scores.gather(1, classes.view(-1, 1)).sum()\n"
                "    (gradient,) = torch.autograd.grad(score, x)\n"
                "    return gradient.abs().max(1)[0]",
            ),
        ),
    ),
    # The typical mistakes of issue 25, each named in the lab's words.
    _mistake(
        "saliency_of_the_predicted_class",
        [
            (
                "scores.gather(1, classes.view(-1, 1)).sum().backward()",
                "scores.gather(1, scores.argmax(dim=1, keepdim=True)).sum().backward()",
            )
        ],
        "q4_saliency",
        2,
        "the class the network predicts",
    ),
    _mistake(
        "saliency_of_the_probability",
        [
            (
                "scores.gather(1, classes.view(-1, 1)).sum().backward()",
                "torch.softmax(scores, dim=1).gather(1, classes.view(-1, 1)).sum().backward()",
            )
        ],
        "q4_saliency",
        2,
        "softmax probability",
    ),
    _mistake(
        "saliency_without_abs",
        [("    return x.grad.abs().amax(dim=1)", "    return x.grad.amax(dim=1)")],
        "q4_saliency",
        2,
        "absolute value",
    ),
    _mistake(
        "occlusion_sign_reversed",
        [
            (
                OCCLUSION_DROPS,
                OCCLUSION_DROPS.replace(
                    "probabilities[0] - probabilities[1:]", "probabilities[1:] - probabilities[0]"
                ),
            )
        ],
        "q5_occlusion",
        2,
        "opposite sign",
    ),
    _mistake(
        "occlusion_black_patch",
        [("left : left + patch_size] = 0.5", "left : left + patch_size] = 0")],
        "q5_occlusion",
        2,
        "0 (black)",
    ),
    _mistake(
        "occlusion_mean_patch",
        [("left : left + patch_size] = 0.5", "left : left + patch_size] = image.mean()")],
        "q5_occlusion",
        2,
        "the image's mean",
    ),
    _mistake(
        "occlusion_last_place_missing",
        [(OCCLUSION_RANGES, OCCLUSION_RANGES.replace(" + 1,", ","))],
        "q5_occlusion",
        2,
        "last place",
    ),
    _mistake(
        "occlusion_stride_of_the_patch",
        [(OCCLUSION_RANGES, OCCLUSION_RANGES.replace("1, stride)", "1, patch_size)"))],
        "q5_occlusion",
        2,
        "move by patch_size",
    ),
    _mistake(
        "grad_cam_without_relu",
        [(GRADCAM_RETURN, "    return (weights * activations).sum(dim=1).detach()")],
        "q6_grad_cam",
        2,
        "negative values",
    ),
    _mistake(
        "grad_cam_normalised_before_relu",
        [
            (
                GRADCAM_RETURN,
                "    cam = (weights * activations).sum(dim=1)\n"
                "    low = cam.amin(dim=(1, 2), keepdim=True)\n"
                "    high = cam.amax(dim=(1, 2), keepdim=True)\n"
                "    return F.relu((cam - low) / (high - low)).detach()",
            )
        ],
        "q6_grad_cam",
        2,
        "before the ReLU",
    ),
    _mistake(
        "grad_cam_mean_over_the_channels",
        [(GRADCAM_WEIGHTS, "    weights = gradients.mean(dim=1, keepdim=True)\n")],
        "q6_grad_cam",
        2,
        "over dim=1",
    ),
    _mistake(
        "grad_cam_gradient_as_weight",
        [(GRADCAM_WEIGHTS, "    weights = gradients\n")],
        "q6_grad_cam",
        2,
        "the gradient itself",
    ),
    _mistake(
        "grad_cam_of_the_predicted_class",
        [
            (
                "    score = scores.gather(1, classes.view(-1, 1)).sum()\n",
                "    score = scores.max(dim=1).values.sum()\n",
            )
        ],
        "q6_grad_cam",
        2,
        "the class the network predicts",
    ),
    _mistake(
        "top_without_eval",
        [(TOP_HOOK, TOP_HOOK.replace("    model.eval()\n", ""))],
        "q7_top_activations",
        1.5,  # the positions test (its hooks test passes)
        "model.eval()",
    ),
    _mistake(
        "top_row_and_column_swapped",
        [
            (
                "[chosen, where[chosen] // width, where[chosen] % width]",
                "[chosen, where[chosen] % width, where[chosen] // width]",
            )
        ],
        "q7_top_activations",
        1.5,  # the positions test (its hooks test passes)
        "swapped",
    ),
    _mistake(
        "fgsm_of_the_predictions",
        [
            (
                "    loss = F.cross_entropy(model(x), labels)\n",
                "    scores = model(x)\n    loss = F.cross_entropy(scores, scores.argmax(dim=1))\n",
            )
        ],
        "q8_fgsm",
        2,
        "own predictions",
    ),
    _mistake(
        "fgsm_without_sign",
        [(FGSM_RETURN, FGSM_RETURN.replace("x.grad.sign()", "x.grad"))],
        "q8_fgsm",
        2,
        "its sign",
    ),
    _mistake(
        # load_state_dict's report (missing and unexpected keys) kept as if it were the model
        "loaded_model_is_the_load_report",
        [
            (
                "loaded_model = make_better_model()\n"
                'loaded_model.load_state_dict(torch.load("better_model.pt", weights_only=True))\n',
                'loaded_model = make_better_model().load_state_dict(torch.load("better_model.pt", '
                "weights_only=True))\n",
            )
        ],
        "q3_better_training",
        0.5,
        "what load_state_dict returns",
    ),
]
