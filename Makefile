# The two commands a user needs: `make demo` and `make test`. Everything the project
# needs is installed from here (a virtualenv in .venv), never by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test chaos bench profile lint typecheck unit integration integration-real real-services-deps \
	clean services-down cdnow compile pure seam-latest

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The scoring modules an event and the sweep pass through, compiled in place by mypyc
# (a wheel carries them compiled by setup.py; the editable install does not). Rebuilt
# whenever scoring/ or schemas/ changes; scoring/__init__.py refuses to import a compiled
# module older than its sources. `make pure` removes them: everything runs as plain Python
# again (as it does, with a warning, where there is no C compiler or no Python headers).
COMPILED := scoring/compiled.json

$(COMPILED): $(STAMP) scripts/compile_scoring.py $(wildcard scoring/*.py schemas/*.py)
	$(BIN)/python scripts/compile_scoring.py

compile: $(COMPILED)

pure:
	rm -f $(COMPILED) scoring/*.so

demo: $(STAMP) $(COMPILED)
	$(BIN)/engagement demo

lint: $(STAMP)
	$(BIN)/ruff check streams scoring schemas benchmarks tests scripts setup.py
	$(BIN)/ruff format --check streams scoring schemas benchmarks tests scripts setup.py

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy scripts/compile_scoring.py scripts/configuration_doc.py setup.py

# The CDNOW 1/10 sample of the BG/NBD paper (tests/unit/scoring/test_fit.py reproduces the
# paper's estimates from it). It ships in the lifetimes wheel; only that file is taken, the
# package is never installed. Checked against its digest, written atomically.
CDNOW := .engagement/data/CDNOW_sample.txt
CDNOW_SHA256 := 6fae10155c0b0ba363c2c386e30f77990d22328220efd862a5edd1443420d94a

cdnow: $(CDNOW)

$(CDNOW): | $(STAMP)
	rm -rf $(@D)/lifetimes-wheel
	mkdir -p $(@D)/lifetimes-wheel
	$(BIN)/python -m pip download --quiet --no-deps lifetimes==0.11.3 -d $(@D)/lifetimes-wheel
	$(BIN)/python -c 'import glob, hashlib, os, sys, zipfile; \
	  data = zipfile.ZipFile(glob.glob("$(@D)/lifetimes-wheel/*.whl")[0]).read( \
	    "lifetimes/datasets/CDNOW_sample.txt"); \
	  digest = hashlib.sha256(data).hexdigest(); \
	  digest == "$(CDNOW_SHA256)" or sys.exit(f"CDNOW_sample.txt: unexpected sha256 {digest}"); \
	  open("$@.tmp", "wb").write(data); os.replace("$@.tmp", "$@")'
	rm -rf $(@D)/lifetimes-wheel

unit: $(STAMP) $(CDNOW) $(COMPILED)
	$(BIN)/pytest tests/unit

integration: $(STAMP) $(COMPILED)
	$(BIN)/pytest tests/integration

# The whole suite on the embedded pair (Tansu + Valkey), then the integration suite on real
# Apache Kafka + Redis 7. Both always run; the target fails if either does.
test: lint typecheck $(CDNOW) $(COMPILED)
	@status=0; \
	$(BIN)/pytest tests || status=$$?; \
	$(MAKE) --no-print-directory integration-real || status=$$?; \
	exit $$status

# The integration suite on Apache Kafka 4 (KRaft, jars from Maven Central) and Debian's
# redis-server; skipped with a message when Java 17+ / Maven / redis-server are missing.
integration-real: $(STAMP) $(COMPILED) real-services-deps
	scripts/test-real-services.sh tests/integration

# Debian's redis-server (Redis 7), installed when missing if we are root and Java is here
# (no Java: the real-services run is skipped anyway). Installing does not start the service.
real-services-deps:
	@if command -v java >/dev/null 2>&1 && ! command -v redis-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server"; \
	    apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	      redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing and cannot be installed here (not root or no apt-get)"; \
	  fi; \
	fi

# The fault-injection suite (issue 5) at full size, on Apache Kafka + redis-server (AOF
# everysec): >= 50k events of 2,000 customers plus 5,000 malformed messages per scenario;
# kill -9 (6 times), rebalances, Redis stopped 30 s, Redis rolled back to an older AOF,
# the broker restarted, poison, and all combined. Reports in .engagement/chaos/. A reduced
# version (2 kills, a rebalance, poison; embedded pair) runs in `make test` (tests/chaos).
chaos: $(STAMP) $(COMPILED) real-services-deps
	CHAOS_SCALE=full $(BIN)/pytest tests/chaos -m chaos

# The benchmark (issue 4): every figure side by side in one run on the embedded pair,
# JSON under benchmarks/results/ and a markdown table. Not part of `make test`, which runs
# only its smoke version (tests/bench).
bench: $(STAMP) $(COMPILED)
	$(BIN)/python -m benchmarks.run --out benchmarks/results/latest.json

# Where the time goes (py-spy profiles of the benchmark's processes, and of the latency
# worker on Apache Kafka at 1,000 alerting events/s): benchmarks/results/profile-latest*/.
profile: $(STAMP) $(COMPILED) real-services-deps
	$(BIN)/python -m pip install --quiet -e '.[profile]'
	$(BIN)/python -m benchmarks.profile --out benchmarks/results/profile-latest
	$(BIN)/python -m benchmarks.run --only latency --repeats 1 --services apache \
		--latency-variants default --latency-rates 1000:40 \
		--latency-profile benchmarks/results/profile-latest-latency \
		--out benchmarks/results/profile-latest-latency/latency.json

# Informational, not part of `make test`: the seam's checks (streams/kafka/seam.py, by
# tests/unit/streams/kafka/test_seam.py) against the newest released faust-streaming,
# mode-streaming and aiokafka, in a throwaway virtualenv. A failure lists the methods a
# new release changed: what to port before moving the pins.
SEAM_LATEST := .engagement/seam-latest
seam-latest:
	rm -rf $(SEAM_LATEST)
	$(PYTHON) -m venv $(SEAM_LATEST)
	$(SEAM_LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(SEAM_LATEST)/bin/python -m pip install --quiet -e '.[dev]'
	$(SEAM_LATEST)/bin/python -m pip install --quiet --upgrade faust-streaming mode-streaming aiokafka
	$(SEAM_LATEST)/bin/pytest -q -p no:cacheprovider tests/unit/streams/kafka/test_seam.py

services-down: $(STAMP)
	$(BIN)/engagement services down

clean: pure
	rm -rf $(VENV) .engagement .mypy_cache .pytest_cache .ruff_cache build *.egg-info
