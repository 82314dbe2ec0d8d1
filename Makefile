# skolsync: the two set-up commands (see README.md) and a few more.
#   make demo    install what is missing, build, run the demo sync (embedded broker)
#   make test    install what is missing, build, start Kafka + PostgreSQL, run every test
# Options: SANITIZE=1 (AddressSanitizer + UBSan build in build-asan/), BUILD=dir,
#          PREFIX=/usr/local DESTDIR= for install.
#   make install builds no tests and never overwrites /etc/skolsync/skolsync.yaml.
#   make deb     the Debian package in build-deb/ (scripts/deb.sh, cmake/deb.cmake)

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build-asan
CMAKE_FLAGS += -DSK_SANITIZE=ON
export ASAN_OPTIONS := detect_leaks=1:abort_on_error=0
export LSAN_OPTIONS := suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1
else
BUILD ?= build
endif
PREFIX ?= /usr/local
DEB_BUILD ?= build-deb

# Configures $(BUILD); the argument (ON/OFF) says whether the tests are built.
# Every target that builds says which it wants, so `make install` followed by
# `make test` in the same tree still builds and runs every test.
configure = cmake -S . -B $(BUILD) -G Ninja -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DSK_BUILD_TESTS=$(1) $(CMAKE_FLAGS)

.PHONY: all deps deps-test build demo test test-asan fuzz soak bench install deb clean check-connectors

all: build

deps:
	scripts/deps.sh build

deps-test:
	scripts/deps.sh all

build: deps
	$(call configure,ON)
	cmake --build $(BUILD)

# The demo: a fictional municipality from the generator, through the embedded
# broker, into SQLite ($(BUILD)/demo.db). No Kafka needed.
# etc/demo.yaml reads build/demo-data and writes build/demo.db (relative to here);
# the embedded broker keeps its state in build/demo-broker: both start empty, so
# every demo is a full sync (run the last line again to see a restart resume).
demo: build
	python3 tests/fixtures/ss12000_gen.py --seed 2026 --out build/demo-data
	rm -rf build/demo.db build/demo.db-wal build/demo.db-shm build/demo-broker
	$(BUILD)/skolsync run --once -c etc/demo.yaml

# Everything: unit tests, integration tests against a real Kafka broker and a
# real PostgreSQL (started here, stopped afterwards even when a test fails).
# A test removes its temp dirs (skolsync-<tag>-XXXXXX under $TMPDIR or /tmp)
# once it passed and keeps them for a failure's logs; those over two hours old
# go first (kept before, they filled one machine's disk: ~70 GB).
test: deps-test build
	-find "$${TMPDIR:-/tmp}" -maxdepth 1 \( -type d -name 'skolsync-*' -o -type f -name 'skt-dirs-*.list' \) -mmin +120 -exec rm -rf {} + 2>/dev/null
	SK_BUILD_DIR=$(BUILD) scripts/with-testenv.sh ctest --test-dir $(BUILD) -j2 --output-on-failure --no-tests=error --timeout 900

# The sanitizer pass CI runs after `make test`: the whole suite built with
# AddressSanitizer + UBSan (README "Tests"). Same as `make test SANITIZE=1`.
test-asan:
	$(MAKE) test SANITIZE=1

# Every connector folder can be deleted with its tests and the rest still
# builds (docs/architecture.md §2): one build per connector, ~1 min each.
check-connectors: deps-test
	scripts/check_connector_removal.sh

# libFuzzer (clang): every parser of outside input, FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: deps-test
	scripts/fuzz.sh $(FUZZ_SECONDS)

# kill -9 soak: 50 trials on the embedded broker (test_embedded_restart), then
# 20 trials x ~100 000 records on Kafka + PostgreSQL (test_crash), then the
# three-node failover test at SK_HA_RECORDS=100000 once more (test_ha_cluster,
# also in make test), ~57 min
soak: deps-test build
	SK_BUILD_DIR=$(BUILD) scripts/soak.sh $(BUILD)

# Benchmarks against baselines measured in the same run; not part of test
# (bench/README.md). BENCH_QUICK=1: under 5 minutes.
BENCH_QUICK ?= 0
bench: deps-test
	BENCH_QUICK=$(BENCH_QUICK) bench/run.sh

# The binary, the unit, the manual pages, docs and examples; no tests. An
# existing /etc/skolsync/skolsync.yaml is kept (the new one: skolsync.yaml.dist).
install: deps
	$(call configure,OFF)
	cmake --build $(BUILD)
	DESTDIR=$(DESTDIR) cmake --install $(BUILD)

# The Debian package: $(DEB_BUILD)/skolsync_<version>-1_<arch>.deb.
deb: deps
	scripts/deb.sh $(DEB_BUILD)

clean:
	rm -rf build build-asan $(DEB_BUILD)
