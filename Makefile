# Kickoff: one Makefile for a fresh Debian machine.
#
#   make run     install what is missing, build, start the desktop app (embedded mode)
#   make test    install what tests need, run every test, lint and format check
#   make drill   the headless drill: generate, warm, fire, measure
#   make bench   benchmarks (figures go to BENCHMARKS.md by hand)
#
# Every install step checks first and only installs what is missing.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Debian packages: Tauri's build and run-time libraries.
APT_BUILD := build-essential pkg-config libssl-dev libwebkit2gtk-4.1-dev libxdo-dev \
             libayatana-appindicator3-dev librsvg2-dev
NODE_MIN_MAJOR := 20
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo

# Installs the Debian packages listed in $(1) that are not installed yet.
define apt_install
@missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "==> apt-get install$$missing"; \
  $(SUDO) apt-get update -qq; \
  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef
# CI builds once from a fresh clone: incremental state and full debug info
# of the project's own crates are gigabytes of target/ it never reads again
# (CI machines' disks are small). Backtraces keep file and line.
ifdef CI
export CARGO_INCREMENTAL := 0
export CARGO_PROFILE_DEV_DEBUG := line-tables-only
endif

DEVICES ?= 4000000
PROVIDER ?= null

.PHONY: package test-package deps-moto help deps deps-apt deps-rust deps-node deps-ui ui build run test test-rust test-ui lint walk drill bench fuzz clean deps-e2e e2e screenshots

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: deps-apt deps-rust deps-node deps-ui ## Install every missing prerequisite.

deps-apt: ## Debian packages the build needs (installs only the missing ones).
	$(call apt_install,$(APT_BUILD))

deps-rust: ## Check the Rust toolchain (cargo, rustfmt, clippy).
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs (stable, 1.90 or newer)"; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

deps-node: ## Node.js 20.19+ and npm (Debian's nodejs if none is installed).
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "==> apt-get install nodejs npm"; $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; \
	fi
	@major=$$(node -p 'process.versions.node.split(".")[0]'); \
	if [ "$$major" -lt $(NODE_MIN_MAJOR) ]; then \
	  echo "Node.js $$(node --version) is too old: the UI build (Vite) needs $(NODE_MIN_MAJOR).19 or newer."; exit 1; \
	fi

deps-ui: ui/node_modules/.package-lock.json ## npm packages of the UI.

ui/node_modules/.package-lock.json: ui/package.json ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund
	@touch $@

ui: deps-ui ## Build the UI into ui/dist (embedded into the app at compile time).
	cd ui && npm run build

build: deps ui ## Build the desktop app and the CLI.
	$(CARGO) build -p kickoff -p kickoff-sender

run: build ## Start the desktop app in embedded mode.
	@if [ -z "$${DISPLAY:-}" ] && [ -z "$${WAYLAND_DISPLAY:-}" ]; then \
	  echo; \
	  echo "No display: DISPLAY and WAYLAND_DISPLAY are unset, so the desktop window cannot open here."; \
	  echo "The app is built (target/debug/kickoff). For the same drill without a window, run:"; \
	  echo "    make drill"; \
	  echo "or start the app under a virtual display:  xvfb-run -a target/debug/kickoff"; \
	  exit 1; \
	fi
	./target/debug/kickoff

test: deps ui lint test-rust test-ui e2e test-package ## Every test of the workspace and the UI, end to end, the packages, plus lint and format.

# nghttpd (Debian's nghttp2-server): the interop tests send to it.
APT_TEST := nghttp2-server

test-rust: deps-moto
	$(call apt_install,$(APT_TEST))
	KICKOFF_MOTO_SERVER=$(abspath $(MOTO_VENV))/bin/moto_server $(CARGO) test --workspace

# The AWS API emulator the AWS-mode tests start on 127.0.0.1 (moto server, PyPI).
MOTO_VENV := .tools/moto-venv
MOTO_VERSION := 5.2.5

deps-moto: ## The AWS API emulator (moto server from PyPI) in a venv under .tools/.
	@if [ ! -x $(MOTO_VENV)/bin/moto_server ]; then \
	  python3 -c 'import venv, ensurepip' 2>/dev/null || { \
	    $(SUDO) apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends python3 python3-venv; }; \
	  echo "==> moto[server]==$(MOTO_VERSION) into $(MOTO_VENV)"; \
	  python3 -m venv $(MOTO_VENV); \
	  $(MOTO_VENV)/bin/pip install -q "moto[server]==$(MOTO_VERSION)"; \
	fi

test-ui: deps-ui
	cd ui && npm test

lint: deps ui ## cargo fmt --check, clippy -D warnings, the UI's tsc + ESLint.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd ui && npm run lint

# End to end: the real app under Xvfb, driven by tauri-driver + WebKitWebDriver.
APT_E2E := xvfb xauth webkit2gtk-driver
# A bound on the whole e2e run (seconds): a wedged app or driver fails the run
# instead of holding CI until its own limit. Both files take ~2 min here.
E2E_TIMEOUT ?= 1200

deps-e2e: deps-apt ## Xvfb, WebKitWebDriver and tauri-driver (installs only the missing ones).
	$(call apt_install,$(APT_E2E))
	@command -v tauri-driver >/dev/null || $(CARGO) install tauri-driver --locked

e2e: deps-e2e deps-moto build ## The desktop app end to end under Xvfb (tauri-driver + WebKitWebDriver), embedded and against the AWS emulator.
	PATH="$$HOME/.cargo/bin:$$PATH" timeout --kill-after=30 $(E2E_TIMEOUT) xvfb-run -a --server-args="-screen 0 1600x1000x24" node --test --test-concurrency=1 ui/e2e/control-room.e2e.mjs ui/e2e/aws.e2e.mjs

package: deps ui ## Release packages into dist/: the app's .deb (with the CLI, completions, man pages) and the CLI's tarball.
	deploy/package.sh release

# The packages, tested: the debug build bundled the same way (no release
# build in the test run), unpacked and run, the app under Xvfb.
test-package: deps-e2e deps ui
	deploy/package.sh debug
	PATH="$$HOME/.cargo/bin:$$PATH" timeout --kill-after=30 600 xvfb-run -a --server-args="-screen 0 1600x1000x24" node --test --test-concurrency=1 ui/e2e/package.e2e.mjs

screenshots: deps-e2e build ## The README's screenshots of the app, taken under Xvfb (docs/screenshots/).
	PATH="$$HOME/.cargo/bin:$$PATH" xvfb-run -a --server-args="-screen 0 1500x950x24" node ui/e2e/screenshots.mjs

RUNBOOK ?= runbooks/launch-day.toml

walk: deps-rust ## Walk a runbook in the terminal, embedded mode (RUNBOOK=..., YES=1: no prompts), as a new event each time (the demo).
	$(CARGO) run --release -q -p kickoff-sender -- runbook walk $(RUNBOOK) --new-event $(if $(YES),--yes,)

drill: deps-rust ## Headless drill (DEVICES=4000000 PROVIDER=null|model).
	$(CARGO) run --release -q -p kickoff-sender -- drill --devices $(DEVICES) --provider $(PROVIDER)

# h2load and nghttpd: the reference HTTP/2 client and a fast C server the
# send path is measured against, side by side.
APT_BENCH := nghttp2-client nghttp2-server

bench: deps-rust ## Benchmarks of the fan-out engine (see BENCHMARKS.md).
	$(call apt_install,$(APT_BENCH))
	$(CARGO) bench -p kickoff-sender --bench fanout --bench http2 --bench recorder

FUZZ_SECS ?= 60
fuzz: deps-rust ## Every property-test harness over outside input, FUZZ_SECS seconds each (default 60), release build.
	KICKOFF_FUZZ_SECS=$(FUZZ_SECS) $(CARGO) test --release -p kickoff-sender --test integration props:: -- --test-threads=1 --nocapture

clean: ## Remove build outputs.
	$(CARGO) clean
	rm -rf ui/dist ui/node_modules bench-out
