# leo-emu: every target installs what it needs (apt packages and pip) itself.
# Run as root: sudo make demo | sudo make test | sudo make test-kernel

PYTHON ?= python3
SCENARIO ?= topologies/default.yaml
APT_PACKAGES := iproute2 iputils-ping iperf3 tcpdump nftables ethtool procps bird2
# plots: GSHHS coastlines (read by path, never downloaded); the live map's test: headless chromium
APT_PACKAGES += python-cartopy-data chromium
OUT := out

.PHONY: install install-apt install-py install-mininet demo test test-unit test-integration test-kernel bench bench-phase1 clean

install: install-apt install-py install-mininet

install-apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing apt packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

install-py:
	@$(PYTHON) -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test,mininet,multihost]'

# Mininet's mnexec (for `leo-emu cli` / LeoNet) from Debian's package, without Open vSwitch (no switches
# are used); it also brings iperf (v2) and telnet, which Mininet's iperf() runs. The Python package is
# the `mininet` extra of install-py.
install-mininet:
	@if ! command -v mnexec >/dev/null 2>&1; then \
	  echo "installing Debian's mininet (mnexec), --no-install-recommends"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mininet >/dev/null; \
	fi

# the main job: validate, plan, verify, bring the constellation up, ping + iperf3 dev1 -> inet, tear down
demo: install
	@mkdir -p $(OUT)
	leo-emu doctor
	leo-emu validate $(SCENARIO)
	bash scripts/demo.sh $(SCENARIO) $(OUT)

# pytest exits 5 when it ran no test: that is a failure, never a pass.
test: install
	@$(PYTHON) -m pytest tests/unit tests/integration -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest ran no test (exit 5)" >&2; exit 1; fi; exit $$rc

test-unit: install-py
	$(PYTHON) -m pytest tests/unit -q

test-integration: install
	$(PYTHON) -m pytest tests/integration -q

test-kernel: install
	bash scripts/vm/run-tests.sh

# every benchmark's JSON goes to out/bench/<name>.json (a failing one is recorded, the others still run),
# then into out/bench.json, from which the README's results table is generated
BENCH := $(OUT)/bench
bench: install
	@mkdir -p $(BENCH)
	-$(PYTHON) scripts/bench_snapshots.py topologies/starlink-shell1.yaml > $(BENCH)/snapshots.json
	-$(PYTHON) scripts/bench_plan.py topologies/starlink-shell1.yaml > $(BENCH)/plan.json
	-$(PYTHON) scripts/bench_up.py topologies/starlink-shell1.yaml > $(BENCH)/up.json
	-$(PYTHON) scripts/bench_forwarding.py topologies/default.yaml > $(BENCH)/forwarding.json
	-$(PYTHON) scripts/bench_netlink.py --nodes 1600 > $(BENCH)/netlink.json
	-$(PYTHON) scripts/bench_bgp_scale.py --format json > $(BENCH)/bgp_scale.json
	-$(PYTHON) scripts/bench_vs_mininet.py topologies/default.yaml > $(BENCH)/vs_mininet.json
	$(PYTHON) scripts/bench_report.py $(BENCH)/*.json -o $(OUT)/bench.json --readme README.md

# Starlink Phase I (4,560 namespaces, ~5 min quiet): its JSON joins the table above
bench-phase1: install
	@mkdir -p $(BENCH)
	-$(PYTHON) scripts/bench_phase1.py --slices 10 --speed 1 > $(BENCH)/phase1.json
	$(PYTHON) scripts/bench_report.py $(BENCH)/*.json -o $(OUT)/bench.json --readme README.md

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
