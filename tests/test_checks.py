"""Tests of how cnn_course.checks reports render: an HTML table in Jupyter, text elsewhere."""

from __future__ import annotations

from html.parser import HTMLParser

from IPython.core.formatters import DisplayFormatter

from cnn_course.checks import CheckReport


class Cells(HTMLParser):
    """The text of each table row, cell by cell."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self._in_cell = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rows[-1][-1] += data


def report() -> CheckReport:
    result = CheckReport("Exercise 1: <mnist_model>")
    result.add("is a torch.nn.Module", True, note="1,234 trainable parameters")
    result.add("7 layers as specified", False, "layer 6: expected Linear(6272, 10) & more")
    return result


def test_jupyter_gets_an_html_table_and_a_text_fallback():
    """Does Jupyter's formatter give an HTML table (one row per check) and plain text?"""
    bundle, _ = DisplayFormatter().format(report())
    assert set(bundle) == {"text/plain", "text/html"}
    html = bundle["text/html"]
    assert "&lt;mnist_model&gt;" in html and "<mnist_model>" not in html
    table = Cells()
    table.feed(html)
    assert table.rows == [
        ["check", "result", "details"],
        ["is a torch.nn.Module", "✔ passed", "1,234 trainable parameters"],
        ["7 layers as specified", "✘ failed", "layer 6: expected Linear(6272, 10) & more"],
    ]
    assert "1 of 2 tests failed." in html and "color:#c00" in html
    assert bundle["text/plain"] == str(report())


def test_text_report_marks_each_check_and_says_all_passed():
    """Does the text form mark each check, and end with "All tests passed!" when all pass?"""
    text = str(report()).splitlines()
    assert text == [
        "Exercise 1: <mnist_model>",
        "  [ok  ] is a torch.nn.Module: 1,234 trainable parameters",
        "  [FAIL] 7 layers as specified: layer 6: expected Linear(6272, 10) & more",
        "1 of 2 tests failed.",
    ]
    passing = CheckReport("q")
    passing.add("runs", True)
    assert str(passing).endswith("All tests passed!")
    assert "All tests passed!" in passing._repr_html_() and "color:green" in passing._repr_html_()
