"""List public functions of billing/ and support/ services without a docstring, or that raise
without their docstring saying so.

Issue 9, item 6: a public function says what it takes and returns, what it raises and when.
"Public": not starting with "_", in a public class or at module level. "Services": every module
of billing/ and support/ except migrations, management commands, template tags, admin, forms,
views and URL modules (their behaviour is their URL or Django's hook). "Raises" is read from the
function's own `raise` statements only; what a callee raises is for a person to check.

Usage: ``python tools/docstrings.py [ROOT]`` (default: this folder). Prints the two lists and
exits 1 when either is non-empty, else 0.
"""

import ast
import re
import sys
from pathlib import Path

PACKAGES = ("billing", "support")
SKIP_DIRS = {"migrations", "management", "templatetags"}
SKIP_FILES = re.compile(
    r"(admin|apps|views?|urls|forms?|context_processors|errors|passkey_views|admin_site|admin_config|"
    r"plan_admin|invite_admin|order_admin|email_form|action_forms)\.py$"
)


def _functions(tree: ast.AST):
    """(qualified name, node) of every public function and method of public classes."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for name, inner in _functions(node):
                yield f"{node.name}.{name}", inner


def findings(root: Path) -> tuple[list[str], list[str]]:
    """("path:line name" without a docstring, "path:line name" raising without saying so)."""
    missing, silent = [], []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if SKIP_DIRS & set(path.parts) or SKIP_FILES.search(path.name):
                continue
            for name, node in _functions(ast.parse(path.read_text())):
                where = f"{path.relative_to(root)}:{node.lineno} {name}"
                doc = ast.get_docstring(node)
                raises = any(isinstance(n, ast.Raise) and n.exc is not None for n in ast.walk(node))
                if not doc:
                    missing.append(where)
                elif raises and "raise" not in doc.lower():
                    silent.append(where)
    return missing, silent


def main(argv: list[str]) -> int:
    missing, silent = findings(Path(argv[0]) if argv else Path("."))
    print(f"no docstring: {len(missing)}", *missing, sep="\n")
    print(f"raises, docstring silent: {len(silent)}", *silent, sep="\n")
    return 1 if missing or silent else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
