# sexstream — the two set-up commands are `make run` and `make test` (see README.md).
# Both install whatever is missing on a fresh Debian machine first.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := source-extractor psfex chromium
STAMP   := $(VENV)/.installed

export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(VPY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(VPY))

.PHONY: install system venv jvm run test bench clean

install: system venv jvm

# Debian packages: SExtractor, PSFEx (--psf auto), headless chromium for the dashboard tests, Java >= 17 for Spark.
system:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	java_ok=$$(java -version 2>&1 | awk -F'"' '/version/ {split($$2, v, "."); print (v[1] >= 17) ? "yes" : "no"}'); \
	[ "$$java_ok" = yes ] || missing="$$missing openjdk-17-jre-headless"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@java -version 2>&1 | head -1
	@source-extractor --version
	@psfex --version

venv: $(STAMP)

$(STAMP): pyproject.toml
	[ -x $(VPY) ] || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The driver JVM's class archive (streaming/jvmarchive.py): Spark starts ~2x faster with
# it. Recorded once (~25 s), found in ~/.cache/sexstream/jvm afterwards.
jvm: venv
	$(VENV)/bin/sexstream jvm-archive

# The main job on its embedded default: local Spark, folders under ./var, dashboard on localhost.
run: install
	$(VENV)/bin/sexstream run --dashboard

test: install
	$(VPY) -m pytest -ra

bench: install
	$(VPY) scripts/bench_extract.py

clean:
	rm -rf var .pytest_cache
