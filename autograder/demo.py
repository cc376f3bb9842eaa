"""`make demo`: the main job end to end on the real data: data, training, build, grading."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from cnn_course import build, data, training
from cnn_course.errors import CourseError

from .grading import REPO, grade_class
from .reference import MNIST_RECIPE, mnist_model, train_model
from .sandbox import sandbox_available


def main() -> int:
    root = data.resolve_root()
    print(f"== Data (root: {root.describe()})")
    mnist_train = data.load_mnist("train", n=1000, seed=0)
    mnist_test = data.load_mnist("test")
    started = time.perf_counter()
    cifar_train = data.load_cifar10("train", n=2000, seed=0)
    cifar_test = data.load_cifar10("test")
    print(f"   {mnist_train}\n   {mnist_test}")
    print(
        f"   {cifar_train}\n   {cifar_test}  (CIFAR-10 loaded in {time.perf_counter() - started:.1f} s)"
    )

    recipe = MNIST_RECIPE
    print(
        f"\n== Training the lab's MNIST model: {recipe.epochs} epochs, Adam lr {recipe.learning_rate}, "
        f"batches of {recipe.batch_size}"
    )
    model = mnist_model()
    started = time.perf_counter()
    history = train_model(
        model,
        mnist_train,
        epochs=recipe.epochs,
        learning_rate=recipe.learning_rate,
        batch_size=recipe.batch_size,
        seed=0,
    )
    for epoch, (loss, accuracy) in enumerate(
        zip(history["loss"], history["accuracy"], strict=True), 1
    ):
        print(f"   epoch {epoch:2d}: mean loss {loss:.4f}, mean accuracy {accuracy:.4f}")
    accuracy = training.evaluate(model, mnist_test.images, mnist_test.labels)
    print(f"   trained in {time.perf_counter() - started:.1f} s")
    print(f"\nMNIST test accuracy: {accuracy:.4f} (on {len(mnist_test):,} test images)")

    print("\n== Building the notebooks from source/ (nbgrader)")
    for path in build.build(REPO):
        print(f"   wrote {path.relative_to(REPO)}")

    print("\n== Grading two submissions: the solution and the untouched student notebook")
    with tempfile.TemporaryDirectory(prefix="cnn-course-demo-") as work:
        submitted = Path(work) / "submitted"
        submitted.mkdir()
        shutil.copy(REPO / "notebooks/solution/cnn_lab.ipynb", submitted / "solution.ipynb")
        shutil.copy(REPO / "notebooks/student/cnn_lab.ipynb", submitted / "untouched.ipynb")
        out = REPO / "artifacts" / "demo-grades"
        sandbox = (
            sandbox_available() is None
        )  # our own notebooks: trusted, so a sandbox is optional
        if not sandbox:
            print(f"   (no sandbox: {sandbox_available()})")
        grade_class(
            submitted,
            out,
            jobs=2,
            force=True,
            sandbox=sandbox,
            progress=lambda line: print(f"   {line}"),
        )
        print(f"\n{(out / 'grades.csv').read_text()}")
        print(f"Feedback pages and nbgrader's gradebook are in {out.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CourseError as error:
        print(f"demo: error: {error}", file=sys.stderr)
        sys.exit(2)
