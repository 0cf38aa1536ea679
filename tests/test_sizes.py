"""tools/sizes.py, the size rule `make lint` checks: long modules and functions say why."""

from pathlib import Path

from tools.sizes import problems


def write(root: Path, text: str) -> None:
    (root / "billing").mkdir()
    (root / "billing" / "long.py").write_text(text)


def function(lines: int, mark: str = "") -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 1))
    return f"{mark}def f():\n{body}"


def test_it_names_a_long_function_without_a_reason(tmp_path):
    write(tmp_path, function(61))
    assert problems(tmp_path) == ["billing/long.py:1: f() has 61 lines (> 60) and no '# size:' comment"]


def test_it_accepts_a_long_function_that_says_why_and_a_short_one(tmp_path):
    write(tmp_path, function(61, mark="# size: a table of cases, read top to bottom.\n") + function(60))
    assert problems(tmp_path) == []


def test_it_names_a_long_module_and_ignores_migrations(tmp_path):
    write(tmp_path, "x = 1\n" * 401)
    (tmp_path / "billing" / "migrations").mkdir()
    (tmp_path / "billing" / "migrations" / "0001_initial.py").write_text("x = 1\n" * 900)
    assert problems(tmp_path) == ["billing/long.py:1: module has 401 lines (> 400) and no '# size:' comment"]


def test_the_project_itself_keeps_the_rule():
    assert problems(Path(__file__).resolve().parent.parent) == []
