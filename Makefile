# kdlab — the two main commands are `make study` and `make test`.
# Every target sets up (or reuses) the project virtual environment first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
## Test processes (pytest-xdist; each test file runs whole in one of them, files sharing a session
## fixture together: tests/conftest.py): one per core of the 2-core CI machine.
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.kdlab-installed
PROFILE ?= default
WORKERS ?= 2
## CORPUS: a folder written by `kdlab data` (e.g. your own data imported with --librispeech) that the
## study trains on instead of the profile's synthetic corpus; TOKENIZER: char or bpe[:N] (default: the profile's).
CORPUS ?=
TOKENIZER ?=

.PHONY: setup study check-report test lab corpus browser-deps synth-deps clean-outputs screenshots

# Re-installs only when requirements.txt or pyproject.toml changed since the last install.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e ".[lab,test,export]"
	$(PY) -m ipykernel install --sys-prefix --name kdlab --display-name "kdlab (Python)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

## The main job: build the corpus, run the study grid (outputs/study; at the default profile its
## table also goes into README.md), then the sequenced notebooks headless into outputs/.
## WORKERS: processes that train the grid's runs side by side (one torch thread each).
study: setup synth-deps
	$(if $(CORPUS),,$(PY) -m kdlab data --profile $(PROFILE))
	$(PY) -m kdlab study --profile $(PROFILE) --workers $(WORKERS) --out outputs/study $(if $(TOKENIZER),--tokenizer $(TOKENIZER)) \
	  $(if $(CORPUS),--corpus $(CORPUS),$(if $(filter default,$(PROFILE)),$(if $(TOKENIZER),,--readme README.md)))
	$(PY) -m kdlab notebooks --profile $(PROFILE) --out outputs

## After `make study`: open outputs/index.html and every notebook report in headless Chromium
## (no console errors, every figure drawn). Its screenshots go to a temporary folder.
check-report: setup browser-deps
	KDLAB_CHECK_OUTPUTS=outputs $(PY) -m pytest -q tests/test_notebooks.py -m browser

## Lint and format check (ruff, config in pyproject.toml), unit tests and headless notebook runs at tiny settings.
test: setup browser-deps synth-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m kdlab data --profile tiny >/dev/null  # the shared tiny corpus, built once before the workers start
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

## The README's images (docs/img/, the only target that writes them): the panels of notebooks 00,
## 03 and 04 in JupyterLab at profile tiny, and, after `make study`, outputs/index.html.
screenshots: setup browser-deps synth-deps
	KDLAB_SCREENSHOTS=docs/img $(PY) -m pytest -q tests/test_browser.py tests/test_notebooks_compression.py -k jupyterlab
	@if [ -f outputs/index.html ]; then \
	  KDLAB_SCREENSHOTS=docs/img KDLAB_CHECK_OUTPUTS=outputs $(PY) -m pytest -q tests/test_notebooks.py -m browser -k index; \
	else echo "note: no outputs/index.html (run make study first): docs/img/index.png left as it is"; fi

## JupyterLab on notebooks/ with the kdlab kernel; open the URL it prints (with its token). Opens no
## browser itself (containers and remote machines have none); as root (containers) it passes
## --allow-root. LAB_ARGS: more jupyter options, e.g. LAB_ARGS="--port=8899 --ip=0.0.0.0".
lab: setup synth-deps
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

corpus: setup synth-deps
	$(PY) -m kdlab data --profile $(PROFILE)

## $(call debian_package,PACKAGE,WITHOUT_IT): install a Debian package (its command has the same name)
## when missing and run as root with apt-get; otherwise say what is lost without it.
define debian_package
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null) \
	      || echo "warning: could not install $(1); $(2)"; \
	  else echo "note: install Debian's '$(1)' package; $(2)"; fi; }
endef

## Headless Chromium for the browser tests (Debian package; nothing downloads a browser build).
browser-deps:
	$(call debian_package,chromium,browser tests will be skipped outside CI)

## flite, the corpus' second synthesis engine (Debian package). Without it the corpus is built from
## espeak-ng voices only, with its own digest, and the builder says so.
synth-deps:
	$(call debian_package,flite,corpora will use espeak-ng voices only)

clean-outputs:
	rm -rf outputs
