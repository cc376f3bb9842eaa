"""`make demo`: the main job end to end on the real data: data, training, build, grading.

python -m cnn_course_instructor.demo [--repo COURSE]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cnn_course import data, training
from cnn_course.errors import CourseError

from . import build
from .course import Course
from .grading.run import grade_class
from .sandbox import sandbox_available

LAB = "cnn_lab"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".", help="course repository (default: .)")
    args = parser.parse_args(argv)
    course = Course(Path(args.repo))
    lab = course.lab(LAB)
    root = data.resolve_root()
    print(f"== Data (root: {root.describe()})")
    mnist_train = lab.subsets["mnist_train"].load()
    mnist_test = data.load_mnist("test")
    started = time.perf_counter()
    cifar_train = lab.subsets["cifar_train"].load()
    cifar_test = data.load_cifar10("test")
    print(f"   {mnist_train}\n   {mnist_test}")
    print(
        f"   {cifar_train}\n   {cifar_test}  (CIFAR-10 loaded in {time.perf_counter() - started:.1f} s)"
    )

    reference = course.content(LAB).reference
    schedule = lab.training["mnist"]
    print(
        f"\n== Training the lab's MNIST model: {schedule.epochs} epochs, Adam lr "
        f"{schedule.learning_rate:g}, batches of {schedule.batch_size}"
    )
    model = reference.mnist_model()
    started = time.perf_counter()
    history = reference.train_model(model, mnist_train, schedule, epochs=schedule.epochs)
    for epoch, (loss, accuracy) in enumerate(
        zip(history["loss"], history["accuracy"], strict=True), 1
    ):
        print(f"   epoch {epoch:2d}: mean loss {loss:.4f}, mean accuracy {accuracy:.4f}")
    accuracy = training.evaluate(model, mnist_test.images, mnist_test.labels)
    print(f"   trained in {time.perf_counter() - started:.1f} s")
    print(f"\nMNIST test accuracy: {accuracy:.4f} (on {len(mnist_test):,} test images)")

    print("\n== Building the notebooks from source/ (nbgrader)")
    for path in build.build(course.root):
        print(f"   wrote {path.relative_to(course.root)}")

    print("\n== Grading two submissions: the solution and the untouched student notebook")
    with tempfile.TemporaryDirectory(prefix="cnn-course-demo-") as work:
        submitted = Path(work) / "submitted"
        submitted.mkdir()
        notebooks = course.root / "notebooks"
        shutil.copy(notebooks / "solution" / f"{LAB}.ipynb", submitted / "solution.ipynb")
        shutil.copy(notebooks / "student" / f"{LAB}.ipynb", submitted / "untouched.ipynb")
        out = course.root / "artifacts" / "demo-grades"
        sandbox = sandbox_available() is None  # our own notebooks: trusted, a sandbox is optional
        if not sandbox:
            print(f"   (no sandbox: {sandbox_available()})")
        grade_class(
            submitted,
            out,
            course=course,
            jobs=2,
            force=True,
            sandbox=sandbox,
            progress=lambda line: print(f"   {line}"),
        )
        print(f"\n{(out / LAB / 'grades.csv').read_text()}")
        print(f"Feedback pages and nbgrader's gradebook are in {out.relative_to(course.root)}/")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CourseError as error:
        print(f"demo: error: {error}", file=sys.stderr)
        sys.exit(2)
