"""List production modules over 400 lines and functions over 60 lines that do not say why.

The house rule (docs/design.md): split a module before it passes about 400 lines, and a function
before it passes about 60, or write a comment saying why it is long. The comment is a line
starting with ``# size:`` and a reason: for a module, anywhere in its first 40 lines; for a
function, on the line above its ``def`` (or above its decorators) or among its first 5 lines.

Usage: ``python tools/sizes.py`` (from the project root; ``make lint`` runs it).
Prints one line per unexplained module or function and exits 1 if there is any, else 0.
"""

import ast
import sys
from pathlib import Path

PACKAGES = ("config", "accounts", "billing", "support", "outbox")
MODULE_LINES = 400
FUNCTION_LINES = 60
MARK = "# size:"


def _production_files(root: Path) -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" not in path.parts:
                files.append(path)
    return files


def _has_mark(lines: list[str], start: int, end: int) -> bool:
    """Whether any of lines[start:end] (0-based, clipped) is a ``# size:`` comment."""
    return any(line.strip().startswith(MARK) for line in lines[max(start, 0) : max(end, 0)])


def problems(root: Path) -> list[str]:
    """Return one "path:line: what" string per unexplained long module or function under `root`."""
    found = []
    for path in _production_files(root):
        text = path.read_text()
        lines = text.splitlines()
        name = path.relative_to(root)
        if len(lines) > MODULE_LINES and not _has_mark(lines, 0, 40):
            found.append(f"{name}:1: module has {len(lines)} lines (> {MODULE_LINES}) and no '{MARK}' comment")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            # lines[] is 0-based: the line above the def/decorators is index first - 2.
            if length > FUNCTION_LINES and not (
                _has_mark(lines, first - 2, first - 1) or _has_mark(lines, node.lineno, node.lineno + 5)
            ):
                found.append(
                    f"{name}:{node.lineno}: {node.name}() has {length} lines (> {FUNCTION_LINES}) "
                    f"and no '{MARK}' comment"
                )
    return found


if __name__ == "__main__":
    report = problems(Path(__file__).resolve().parent.parent)
    print("\n".join(report) or "sizes: every long module and function says why")
    sys.exit(1 if report else 0)
