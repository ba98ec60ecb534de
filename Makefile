# Two commands on a fresh Debian machine: `make demo` and `make test`. Both install what is
# missing first (Debian packages only when absent, the venv only when pyproject.toml changed),
# so a second run starts at once.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgefleet-installed
OUT    ?= demo-out
# Debian packages: command that must exist -> package providing it.
DEB_DEPS := java:default-jre-headless mosquitto:mosquitto mosquitto_sub:mosquitto-clients pg_ctlcluster:postgresql \
            node:nodejs npm:npm chromium:chromium
# npm packages (@tensorflow/tfjs for TF.js parity; onnxruntime-web + playwright-core for the browser runtime and its tests;
# kotlin-compiler for the Kotlin SDK): `npm ci` when missing or the lockfile changed.
NODE_STAMP := node_modules/.edgefleet-installed

.PHONY: install system-deps demo lint kotlin test test-all bench clean

install: system-deps $(STAMP) $(NODE_STAMP)

system-deps:
	@missing=""; \
	for dep in $(DEB_DEPS); do \
	  cmd=$${dep%%:*}; pkg=$${dep#*:}; \
	  { command -v $$cmd || test -x /usr/sbin/$$cmd; } >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip setuptools wheel
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all,dev]'
	@touch $(STAMP)

$(NODE_STAMP): package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NODE_STAMP)

demo: install
	$(BIN)/edgefleet quickstart --once --dir $(OUT)/quickstart
	$(BIN)/python examples/train_churn.py --model rf --out $(OUT)
	@test -f $(OUT)/keys/private.pem || $(BIN)/edgefleet keys generate --out $(OUT)/keys
	$(BIN)/edgefleet compile $(OUT)/churn_rf.joblib --sample $(OUT)/holdout.csv --label Churn \
	  --name churn --version 1 --targets onnx,pmml --key $(OUT)/keys/private.pem --out $(OUT)/churn-v1
	$(BIN)/edgefleet inspect $(OUT)/churn-v1.tar
	$(BIN)/edgefleet verify $(OUT)/churn-v1.tar --pubkey $(OUT)/keys/public.pem
	$(BIN)/python examples/fleet_demo.py --out $(OUT)
	# nightly batch scoring of the demo customers on Spark (local[*]) into the operational table, then one call-centre lookup
	$(BIN)/edgefleet batch-score $(OUT)/churn-v1.tar --pubkey $(OUT)/keys/public.pem --input $(OUT)/quickstart/customers.csv \
	  --entity-column customerID --output 'sqlite:///$(OUT)/ops.db?table=churn_scores' --run-id nightly-demo
	$(BIN)/python examples/callcentre_lookup.py --scores-db 'sqlite:///$(OUT)/ops.db?table=churn_scores' --out $(OUT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy edgefleet runtimes/python runtimes/nifi runtimes/spark compiler fleet_server edgefleet_cli

# The Kotlin SDK (runtimes/kotlin): kotlinc from npm kotlin-compiler on the installed JDK compiles the library
# and its tests once per source hash into build/kotlin/<hash>/ (a compile error fails here); tests/kotlin runs them.
kotlin: install
	$(BIN)/python -m tests.kotlin.build

# Lint (ruff + mypy, strict on the contract and the device runtime) runs before the tests.
test: install lint kotlin
	$(BIN)/python -m pytest -q --durations=25

test-all: install lint kotlin
	$(BIN)/python -m pytest -q -m ""

# Every bench in bench/, one after the other; each prints its ratios against a baseline measured in the same
# run, with PASS/FAIL. A bench that exits non-zero does not stop the rest; make bench then exits 1 and names it.
# Spark batch scoring runs 1,000,000 rows here (about 5 min); its 4,000,000-row figure is `bench/batch_score.py` alone (~25 min).
BENCHES = rollout.py "rollout.py --devices 10000 --first-only --no-staged --timeout 300" ingest.py predict.py \
	capacity.py compile.py matrix.py device_latency.py device_footprint.py browser.py stream.py "batch_score.py --rows 1000000" chaos.py

bench: install
	@failed=""; for b in $(BENCHES); do \
	  echo "== bench/$$b  ($$(date -u +%H:%M:%S), load $$(cut -d' ' -f1 /proc/loadavg))"; \
	  $(BIN)/python bench/$$b || failed="$$failed [bench/$$b]"; \
	done; \
	if [ -n "$$failed" ]; then echo "make bench: exited non-zero:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info .pytest_cache
