"""The README's ten-line example runs and answers."""

import contextlib
import io
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_example_prints_the_answer():
    text = open(README).read()
    section = text[text.index("## A real model in ten lines"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert "Paris" in out.getvalue()
    expected = re.search(r"prints `(.*?)`", section).group(1)
    assert out.getvalue().strip() == expected
