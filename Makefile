# PaidUp: `make run` (the whole thing on SQLite + localstripe) and `make test` (every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQS_HASH := $(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-10)
STAMP := $(VENV)/.installed-$(REQS_HASH)
PORT ?= 8000
LOCALSTRIPE_PORT ?= 8420
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

AXE := tests/a11y/node_modules/axe-core/axe.min.js

.PHONY: install run test lint chromium axe bench clean haproxy cluster

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Debian's Chromium for the browser test (Playwright cannot download its own here).
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# Debian's haproxy for `make cluster` (the proxy in front of the two web nodes).
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq haproxy >/dev/null; }

# axe-core for the accessibility audit (tests/test_a11y.py), pinned by tests/a11y/package-lock.json:
# `npm ci` installs exactly that from the npm registry (Debian's npm if node has none).
$(AXE): tests/a11y/package.json tests/a11y/package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm >/dev/null; }
	npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error
	@touch $@

axe: $(AXE)

run: install
	@mkdir -p var
	DEBUG=1 $(BIN)/python manage.py migrate --no-input -v0
	DEBUG=1 $(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  Checkout:     http://127.0.0.1:$(PORT)/checkout/   (card 4242 4242 4242 4242, any future date, any CVC)"
	@echo "  Admin:        http://127.0.0.1:$(PORT)/admin/      (the dev support login and its codes are printed above)"
	@echo "  Sent emails:  http://127.0.0.1:$(PORT)/dev/emails/ (and printed by the worker below)"
	@echo "  Fake Stripe:  http://127.0.0.1:$(LOCALSTRIPE_PORT)/ (localstripe; state in var/localstripe)"
	@echo "  Ctrl-C stops everything."
	@echo ""
	WEB_PORT=$(PORT) LOCALSTRIPE_PORT=$(LOCALSTRIPE_PORT) SITE_URL=http://127.0.0.1:$(PORT) \
		STRIPE_API_BASE=http://127.0.0.1:$(LOCALSTRIPE_PORT) $(BIN)/honcho -f Procfile.dev -e dev.env start

# The production topology on this machine (docs/deploy.md, "14. More than one node"): haproxy, two
# gunicorn web nodes, two q clusters on Redis, this machine's PostgreSQL (database paidup_cluster)
# and Redis (db 1), both started if down. Foreground until Ctrl-C; CLUSTER_PORT moves it (default 8600).
cluster: install haproxy
	$(BIN)/python tools/cluster.py run

test: install chromium axe
	$(BIN)/pytest

# ruff, the import contracts of the house (pyproject.toml [tool.importlinter]), the size rule, and bandit
# (security lint, pyproject.toml [tool.bandit]) on the production code.
lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports && $(BIN)/python tools/sizes.py \
		&& $(BIN)/bandit -q -c pyproject.toml -r accounts billing config outbox support

bench: install
	$(BIN)/python bench/webhook_backlog.py

clean:
	rm -rf $(VENV) var db.sqlite3* staticfiles tests/a11y/node_modules
