"""The cell appended to a submission: it turns the student's objects into plain data.

It runs inside the student's kernel, so it holds no test and no answer: it only records what
the student's names hold (layer records, function outputs on the grader's inputs, histories)
as tensors, numbers and strings, saved with ``torch.save``. The grader reads them back with
``torch.load(weights_only=True)``, which runs no code, and judges them in its own process.
"""

from __future__ import annotations

__all__ = ["probe_source"]

_PROBE = """
def _cnn_course_probe(inputs_path, output_path):
    import torch
    from cnn_course.checks import layer_records

    namespace = globals()
    inputs = torch.load(inputs_path, weights_only=True)
    found = {}

    def failure(exc):
        return {"error": (type(exc).__name__ + ": " + str(exc))[:400]}

    def need(name):
        if name not in namespace:
            raise NameError("`" + name + "` is not defined (did its cell run without error?)")
        return namespace[name]

    def plain(value):
        if isinstance(value, torch.Tensor):
            return {"tensor": value.detach().cpu().clone()}
        if isinstance(value, bool):
            return {"type": "bool"}
        if isinstance(value, (int, float)):
            return {"type": type(value).__name__, "value": float(value)}
        return {"type": type(value).__name__}

    def calls(function_name, cases):
        function = need(function_name)
        outputs = []
        for args in cases:
            try:
                outputs.append(plain(function(*[arg.clone() for arg in args])))
            except BaseException as exc:
                outputs.append(failure(exc))
        return outputs

    def optimiser_facts(criterion_name, optimizer_name, model_name):
        criterion, optimizer, model = need(criterion_name), need(optimizer_name), need(model_name)
        groups = list(getattr(optimizer, "param_groups", []))
        held = {id(p) for group in groups for p in group.get("params", [])}
        owned = [p for p in model.parameters() if p.requires_grad]
        return {
            "criterion": type(criterion).__name__,
            "optimizer": type(optimizer).__name__,
            "lr": float(groups[0]["lr"]) if groups else None,
            "covers_model": bool(owned) and all(id(p) in held for p in owned),
        }

    def history(name):
        return {key: [float(v) for v in values] for key, values in need(name).metrics.items()}

    steps = {
        "mnist_model": lambda: layer_records(need("mnist_model"), (1, 28, 28)),
        "mnist_optim": lambda: optimiser_facts("criterion", "optimizer", "mnist_model"),
        "vector_to_class": lambda: calls("vector_to_class", inputs["vector_to_class"]),
        "cnn_accuracy": lambda: calls("cnn_accuracy", inputs["cnn_accuracy"]),
        "mnist_history": lambda: history("mnist_history"),
        "cifar_model": lambda: layer_records(need("cifar_model"), (3, 32, 32)),
        "cifar_optim": lambda: optimiser_facts("cifar_criterion", "cifar_optimizer", "cifar_model"),
        "cifar_history": lambda: history("cifar_history"),
    }
    for key, step in steps.items():
        try:
            found[key] = step()
        except BaseException as exc:
            found[key] = failure(exc)
    torch.save(found, output_path)


_cnn_course_probe(__INPUTS__, __OUTPUT__)
del _cnn_course_probe
"""


def probe_source(inputs_path: str, output_path: str) -> str:
    """The probe cell's code, reading the grader's inputs and writing the plain record."""
    code = _PROBE.replace("__INPUTS__", repr(str(inputs_path))).replace(
        "__OUTPUT__", repr(str(output_path))
    )
    return code.strip() + "\n"
