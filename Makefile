# clinibox — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BOX_STAMP := $(VENV)/.installed-box
TORCHVISION := $(VENV)/opt/torchvision
TORCHVISION_VERSION := 0.28.0
TIMM_VERSION := 1.0.31
TORCHVISION_STAMP := $(TORCHVISION)/.installed-$(TORCHVISION_VERSION)-timm-$(TIMM_VERSION)
# what `make run` installs: the box's own runtimes (ONNX Runtime is a core dependency), no
# torch, no converter toolchain, no test tools
RUN_EXTRAS ?= openvino,tflite,live,ocr,records
EXTRAS ?= dev,convert,openvino,tflite,live,ocr,records,central,federated,docs

.PHONY: install install-box run test test-fast test-smoke test-image test-image-arm64 image lint docs docs-screenshots bench demo-model fuzz clean translations

# Idempotent bootstrap: re-installs only when pyproject.toml changes; builds the native DICOM
# receiver where g++ and dcmtk's headers are installed (scripts/build-receiver.sh).
# install-box: the box alone (what `make run` needs); install: everything (tests, the converter
# toolchain with the CPU build of torch, the hospital's PostgreSQL driver, the docs).
RECEIVER := $(BIN)/clinibox-receiver
install: $(STAMP) $(RECEIVER) $(TORCHVISION_STAMP)
install-box: $(BOX_STAMP) $(RECEIVER)

$(RECEIVER): native/receiver/clinibox_receiver.cc scripts/build-receiver.sh | $(BOX_STAMP)
	scripts/build-receiver.sh $@

$(BOX_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[$(RUN_EXTRAS)]"
	touch $(BOX_STAMP)

$(STAMP): pyproject.toml $(BOX_STAMP)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

# torchvision and timm for the suite's bring-your-own-model tests and the cookbook: the indexes
# serve only torchvision's CUDA build, so without their dependencies (they would pull CUDA
# torch; timm's others are already installed) and outside site-packages, where only
# tests/torchvision_cpu.py finds them (it stands in for torchvision's compiled operators)
$(TORCHVISION_STAMP): | $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(TORCHVISION) \
		torchvision==$(TORCHVISION_VERSION) timm==$(TIMM_VERSION)
	touch $@

# Start the appliance on its embedded defaults (state under ./var, DICOM on
# 11112, USB/folder import under ./var/import) with the bundled demo model. It installs the box's
# own dependencies only (install-box); a venv made by `make install` already has them.
run: install-box
	$(BIN)/clinibox serve $(if $(CONFIG),--config $(CONFIG),)

# The whole suite in TEST_WORKERS processes (pytest-xdist), each taking a test file at a time:
# most tests wait on services and child processes, so three workers keep 2 cores busier than
# two (2 cores of an AMD EPYC with AVX-512, 2026-11-29: 22 min 34 s in three, 22 min 46 s in
# four, 25 min 3 s in two; a 2-core AVX2 EPYC earlier: 16 min in two against 26.5 in one
# process). TEST_WORKERS=0: in this process.
# It ends with the 30 slowest tests (--durations), so every CI log lists them. The appliance
# image's tier (marker image) is `make test-image`: building the image takes minutes.
TEST_WORKERS ?= 3
test: install
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports
	$(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30 -m "not image" \
		$(PYTEST_ARGS)

# the unit tier without slow tests, in TEST_WORKERS processes: ruff, the layer contracts, then
# under 3 minutes of tests on 2 cores (README.md says the last measured figure)
test-fast: install
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests/unit -m "not slow" --durations=10 \
		$(PYTEST_ARGS)

# the smoke tier (tests marked smoke): each application once, in under a minute: the box
# (`clinibox infer` on a DICOM file), the viewer (a page), the hospital (the receiver on
# SQLite, a console page), the converter (a config preflight) and `python -m clinibox --help`.
# One process: the tests take seconds; collecting the unit tier takes most of the time.
test-smoke: install
	$(BIN)/python -m pytest -q tests/unit -m smoke $(PYTEST_ARGS)

# the appliance image (image/README.md, docs/technician/flash.md), as root, with the packages of
# scripts/debian-packages.sh image: build/image/clinibox-<version>-<arch>.img (+ .zst, .bmap)
ARCH ?= amd64
image: install-box
	image/build.sh --arch $(ARCH)

# the image's tier: build the amd64 image, boot it under QEMU (KVM where /dev/kvm works) with
# a USB stick carrying an enrolment bundle, and check what the box does (tests/image/).
# IMAGE_TESTS: which of its files; CI runs test_appliance_boot.py (.ci/run)
IMAGE_TESTS ?= tests/image
test-image: install image
	$(BIN)/python -m pytest -q -p no:cacheprovider $(IMAGE_TESTS) -m image --durations=20 \
		$(PYTEST_ARGS)

# the arm64 image's tier: built with its programs emulated (binfmt_misc), booted by UEFI
# firmware on QEMU's emulated ARM board; the boot-and-enrol tests of test-image (tests/image/)
test-image-arm64: install
	$(MAKE) image ARCH=arm64
	CLINIBOX_IMAGE_ARCH=arm64 $(BIN)/python -m pytest -q -p no:cacheprovider \
	    tests/image/test_appliance_boot.py -m image $(PYTEST_ARGS)

lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports
	$(BIN)/mkdocs build --strict

# the documentation site (mkdocs.yml) into site/, strict: a broken link, a page left out of the
# navigation or a warning fails it; scripts/docs_reference.py writes the reference pages
docs: install
	$(BIN)/mkdocs build --strict

# the documentation's screenshots (docs/images/screens/), made again from the pages themselves:
# headless Chromium at 1024x768 in English and Chinese over the browser tests' fixtures
# (phantom studies analysed by the demo model, the console's test day); commit the PNGs.
# The diagrams need no target: `make docs` renders them (graphviz's dot, scripts/docs_diagrams.py)
docs-screenshots: install
	$(BIN)/python scripts/docs_screenshots.py

bench: install
	$(BIN)/python -m bench.run_all

# fuzz every target (decoder, stream headers, landing) for FUZZ_SECONDS each; new inputs
# go into tests/fuzz/corpus/<target>/, crashes into tests/fuzz/ (make them regressions)
FUZZ_SECONDS ?= 600
fuzz: install
	for target in decode codestream landing envelope receiver; do \
		$(BIN)/python -m tests.fuzz.fuzz $$target -max_total_time=$(FUZZ_SECONDS) \
			-rss_limit_mb=3072 -timeout=20 -max_len=65536 -artifact_prefix=tests/fuzz/ \
			tests/fuzz/corpus/$$target || exit 1; \
	done

# rebuild the phantom demo package with the converter pipeline (~75 min on 2 cores)
demo-model: install
	$(BIN)/python -m demo.train

# the message catalogs (Simplified Chinese): extract every marked sentence (babel.cfg) into
# messages.pot, merge it into each messages.po (new sentences empty, changed ones fuzzy: both
# fail tests/unit/clinibox_common/test_i18n_catalog.py until translated), compile the .mo the box reads
CATALOGS := clinibox_common/i18n/translations
translations: install
	$(BIN)/pybabel -q extract -F babel.cfg -k N_ -c TRANSLATORS: --sort-by-file --no-wrap \
		--project=clinibox --version=$(BOX_VERSION) -o $(CATALOGS)/messages.pot .
	$(BIN)/pybabel -q update -i $(CATALOGS)/messages.pot -d $(CATALOGS) --ignore-obsolete \
		--no-wrap
	$(BIN)/pybabel compile --statistics -d $(CATALOGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

# -- boxes: the offline bundle and the system install (systemd/README.md) --------------------
BOX_VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
WHEELHOUSE   ?= dist/clinibox-$(BOX_VERSION)-offline
# extras for a box only when given on the command line (EXTRAS above is the dev venv's list)
BOX_EXTRAS    = $(if $(filter command line,$(origin EXTRAS)),$(EXTRAS))
WHEEL_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

.PHONY: wheelhouse install-system

# On a connected workstation: dist/clinibox-<version>-offline/ (+ .tar.gz) for boxes.
#   make wheelhouse [EXTRAS=openvino] [PLATFORM=manylinux_2_35_aarch64 PYVER=3.11]
# (PLATFORM: binary wheels for another box; see scripts/build-wheelhouse.sh)
wheelhouse:
	scripts/build-wheelhouse.sh --python $(WHEEL_PYTHON) --out $(WHEELHOUSE) \
		$(if $(BOX_EXTRAS),--extras $(BOX_EXTRAS)) \
		$(if $(PLATFORM),--platform $(PLATFORM) --python-version $(or $(PYVER),3.11))

# As root on the box, from the bundle (built first if missing, which needs network).
#   make install-system [WHEELHOUSE=DIR] [ROOT=DIR] [EXTRAS=openvino] [DEVICE=auto] [NO_ENABLE=1]
install-system:
	test -d $(WHEELHOUSE) || $(MAKE) wheelhouse
	scripts/install.sh --wheelhouse $(WHEELHOUSE) $(if $(ROOT),--root $(ROOT)) \
		$(if $(BOX_EXTRAS),--extras $(BOX_EXTRAS)) $(if $(DEVICE),--device $(DEVICE)) \
		$(if $(NO_ENABLE),--no-enable)
