# concurrency-demos — run `make help` for the list of targets.
CARGO ?= cargo
# The demo crates, as crates/demos.txt lists them (its lines that are a crate's name).
DEMOS := $(shell sed -n 's/^\([a-z][a-z0-9-]*\)$$/\1/p' crates/demos.txt)

.PHONY: help build test lint bench demos clean demo-ticket $(addprefix demo-,$(DEMOS))

help:
	@echo "make demo-ticket    the ticket-booking race over db.json, then the fix (start here)"
	@echo "make test           every test: unit tests of common and the demos' integration tests"
	@echo "make demos          list every demo target"
	@echo "make bench          Rust beside the Python originals and the Rust crates a user would pick (peers), as ratios"
	@echo "make tour           the demos in the notes' order (ARGS='--predict', ARGS='--from threads')"
	@echo "make pictures       draw the guides' pictures again (crates/<demo>/pictures/*.svg)"
	@echo "make picture-check  render two --svg pictures in headless Chromium; check they are not blank"
	@echo "make build | lint | clean"
	@echo "flags of every demo: --trace FILE (Perfetto), --svg FILE (a picture), --json, --hold SECS, --predict"
	@echo "be the scheduler: --step, --schedule 0,1,... (mutex-ticket run, threads race, deadlock classic), mutex-ticket census"

build:
	$(CARGO) build --workspace

test:
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) run --release -q -p bench --features peers

demos:
	@echo "Demo targets (each runs in a few seconds; add ARGS='--hold 10' to pause for ps):"
	@for d in $(DEMOS); do echo "  make demo-$$d"; done
	@echo "  make demo-ticket     (= demo-mutex-ticket: the race, then the fix; start here)"

# Run any demo with extra flags: make demo-fork-vs-spawn ARGS='--start-method spawn --json'

# The main job: the race over db.json, then the fix by a lock, join, and a buyer killed mid-write.
demo-ticket: demo-mutex-ticket

# Every demo runs as `cargo run -p <demo>`, one target each (tests/tour.rs checks that they
# are exactly crates/demos.txt). gil and multiprogramming time CPU work, so they run an
# optimised build: the GIL demo's CPU-bound loops, and multiprogramming's ticks (measured CPU
# time, where the debug build's overheads would show between them).
RUN_DEMO = @$(CARGO) run -q -p $(@:demo-%=%) -- $(ARGS)
RUN_DEMO_OPTIMISED = @$(CARGO) run --release -q -p $(@:demo-%=%) -- $(ARGS)

demo-coroutine: ; $(RUN_DEMO)
demo-daemon: ; $(RUN_DEMO)
demo-deadlock: ; $(RUN_DEMO)
demo-event: ; $(RUN_DEMO)
demo-fork-vs-spawn: ; $(RUN_DEMO)
demo-io-models: ; $(RUN_DEMO)
demo-ipc: ; $(RUN_DEMO)
demo-joinable-queue: ; $(RUN_DEMO)
demo-mutex-ticket: ; $(RUN_DEMO)
demo-pool: ; $(RUN_DEMO)
demo-process-basics: ; $(RUN_DEMO)
demo-semaphore: ; $(RUN_DEMO)
demo-thread-queue: ; $(RUN_DEMO)
demo-threads: ; $(RUN_DEMO)
demo-zombie-orphan: ; $(RUN_DEMO)
demo-gil: ; $(RUN_DEMO_OPTIMISED)
demo-multiprogramming: ; $(RUN_DEMO_OPTIMISED)

# The course in the notes' order, one part at a time (the binary is crates/tour): builds every
# demo first; one that does not build now is skipped, with a line saying so.
.PHONY: tour demo-tour
# `make demo-tour` is the same, for those who look for every program under demo-<name>.
demo-tour: tour

tour:
	@skip=""; for d in $(DEMOS); do \
	  $(CARGO) build -q -p $$d 2>/dev/null || { echo "tour: $$d does not build now: skipped"; skip="$$skip --skip $$d"; }; \
	done; $(CARGO) run -q -p tour -- $$skip $(ARGS)

# The guides' pictures: real runs drawn with --svg (tests/pictures.rs lists them and, without
# PICTURES_WRITE, checks that the committed ones still match the code).
.PHONY: pictures picture-check
pictures:
	PICTURES_WRITE=1 $(CARGO) test -q --test pictures -- --nocapture

# A real browser draws two pictures; not part of `make test` (a fresh machine has no browser).
picture-check:
	.ci/picture-check

clean:
	$(CARGO) clean
