"""`.env.example` works as a `.env` as it is, and it names exactly the variables settings read."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"
SETTINGS = ROOT / "config" / "settings.py"

# Prints every setting (repr) of config.settings, loaded with the environment it is given.
DUMP = "import json, config.settings as s; print(json.dumps({k: repr(getattr(s, k)) for k in dir(s) if k.isupper()}))"


def load_settings(tmp_path: Path, variables: dict[str, str]) -> dict[str, str]:
    """config.settings in a fresh process whose environment holds only `variables`.

    A `.env` is read from the project folder; the variables here are what `read_env` would put
    in the environment from a copy of `.env.example` (python-dotenv parses both the same way),
    and variables already set win over `.env`, so a developer's own `.env` cannot change this.
    """
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **variables}
    done = subprocess.run(
        [sys.executable, "-c", DUMP], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def example_values() -> dict[str, str]:
    return {name: value or "" for name, value in dotenv_values(EXAMPLE).items()}


def test_the_example_file_gives_exactly_the_defaults(tmp_path):
    # Before: `DATABASE_URL=` and `SHOW_DEV_EMAILS=` raised EnvValidationError at start-up.
    from_example = load_settings(tmp_path, example_values())
    from_nothing = load_settings(tmp_path, {})
    assert from_example == from_nothing


def test_an_empty_variable_means_its_default(tmp_path):
    empty = load_settings(tmp_path, {"CONN_MAX_AGE": "", "SHOW_DEV_EMAILS": "", "DEBUG": "", "DATABASE_URL": ""})
    assert empty == load_settings(tmp_path, {})


def test_a_set_variable_still_wins(tmp_path):
    loaded = load_settings(tmp_path, {**example_values(), "RECONCILE_INTERVAL_MINUTES": "5", "DEBUG": "1"})
    assert loaded["RECONCILE_INTERVAL_MINUTES"] == "5" and loaded["DEBUG"] == "True"


def test_a_malformed_value_is_still_refused(tmp_path):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "RECONCILE_INTERVAL_MINUTES": "often"}
    done = subprocess.run(
        [sys.executable, "-c", DUMP], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "RECONCILE_INTERVAL_MINUTES" in done.stderr and "Not a valid integer" in done.stderr


def variables_settings_read() -> set[str]:
    """Every NAME in an `env.<parser>("NAME", ...)` call in config/settings.py (and NAME_FILE for env.secret)."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "env"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
            if node.func.attr == "secret":  # env.secret("NAME") also reads NAME_FILE
                names.add(f"{node.args[0].value}_FILE")
    return names


def test_the_example_file_and_the_settings_name_the_same_variables():
    read = variables_settings_read()
    listed = set(example_values())
    assert "SECRET_KEY" in read and "ALLOW_CONSOLE_EMAIL" in read  # the parse finds what it should
    assert sorted(read - listed) == [], "read by config/settings.py but missing from .env.example"
    assert sorted(listed - read) == [], "listed in .env.example but read nowhere"


def test_each_variable_is_listed_once():
    names = [line.split("=", 1)[0] for line in EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    assert len(names) == len(set(names))


def test_kept_database_connections_are_checked_before_reuse(tmp_path):
    """With CONN_MAX_AGE, Django reuses a connection across requests; after a PostgreSQL restart
    the first request of each worker would meet a dead one and answer 500 (the chaos run saw it).
    CONN_HEALTH_CHECKS makes Django test it first and reconnect."""
    loaded = load_settings(tmp_path, {"CONN_MAX_AGE": "60", "DATABASE_URL": "postgres://u@127.0.0.1:5432/x"})
    database = ast.literal_eval(loaded["DATABASES"])["default"]
    assert database["CONN_MAX_AGE"] == 60 and database["CONN_HEALTH_CHECKS"] is True
