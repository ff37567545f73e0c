"""Rules every page keeps, checked on the source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_downloads_do_not_rerun_the_page():
    """A download needs no rerun: with Streamlit's default (on_click="rerun") a click reruns the page
    and a second download clicked during that rerun was cancelled by the browser (seen in CI:
    ('Download DOT', 'canceled')). Every download button says on_click="ignore"."""
    missing = []
    for path in sorted((ROOT / "app_pages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "download_button":
                kw = {k.arg: k.value for k in node.keywords}
                value = kw.get("on_click")
                if not (isinstance(value, ast.Constant) and value.value == "ignore"):
                    missing.append(f"{path.name}:{node.lineno}")
    assert not missing, missing
