# Two entry points on a fresh machine: `make demo` and `make test` (each installs first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench bench-census bench-movielens bench-synthetic bench-synthetic-disjoint bench-oracle bench-search bench-serving bench-vocab bench-click-log lint clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m tfmtnas.pipelines.demo

lint: install
	$(PY) -m ruff check tfmtnas tests benchmarks

test: install lint
	$(PY) -m pytest -q

# End-to-end and benchmark runs kept out of `make test`.
test-slow: install
	$(PY) -m pytest -q -m slow

# Benchmarks: each prints its command and what it measured (results in docs/results.md).
# `make bench` compares with DeepCTR 0.9.4, installed for benchmarks only (the bench extra).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

.PHONY: bench-deepctr bench-profile
bench-deepctr: $(BENCH_STAMP)

bench: bench-deepctr
	$(PY) benchmarks/throughput.py

# A TensorBoard profiler trace of wide training steps and where a step's time goes.
bench-profile: install
	$(PY) benchmarks/profile_step.py

bench-census: install
	$(PY) benchmarks/study.py --dataset=census --seeds=0,1,2

bench-movielens: install
	$(PY) benchmarks/study.py --dataset=movielens --seeds=0,1,2 --models=single_task,mmoe,ple \
		--methods=mtnas \
		--batch_size=256

bench-synthetic: install
	$(PY) benchmarks/negative_transfer.py

# Where sharing carries information: one task label per training row, narrow experts.
bench-synthetic-disjoint: install
	$(PY) benchmarks/negative_transfer.py --num_layers=1 --disjoint_labels --expert_units=4 \
		--seeds=0,1,2 --settings '{"mtnas": {"options": {"cost_weight": 0.1}}}'

.PHONY: bench-mtlnas
bench-mtlnas: install
	$(PY) benchmarks/mtlnas_entropy.py

# The Gumbel-matrix paper's MNIST task set (two repeats of upright and of rotated digits):
# no sharing, full sharing and the Gumbel child, and the allocation's overlap, 5 seeds.
.PHONY: bench-mnist
bench-mnist: install
	$(PY) benchmarks/mnist_task_sets.py --seeds 0 1 2 3 4

bench-oracle: install
	$(PY) benchmarks/route_oracle.py

bench-search: install
	$(PY) benchmarks/search_cost.py

bench-serving: install
	$(PY) benchmarks/serving.py --search=mtnas

# Embedding-update cost in vocabulary size: wide shapes at 10^3, 10^5, 10^6 ids per feature.
bench-vocab: install
	$(PY) benchmarks/throughput.py --vocab_scan=1000,100000,1000000

# Click-log scale: generate, prepare and train on a 2 M-row log (ROWS=20000000 for the big run).
ROWS ?= 2000000
bench-click-log: install
	$(PY) benchmarks/click_log.py --rows=$(ROWS)

# Clusters on 127.0.0.1: a 2*10^6-row table over two parameter servers (trained, exported,
# served without the servers), and examples/s of one process against two multi_worker workers.
.PHONY: bench-cluster
bench-cluster: install
	$(PY) benchmarks/cluster.py --mode=large_table
	$(PY) benchmarks/cluster.py --mode=throughput --rows=100000

# tfmtnas-tune on Census-Income: a 30-trial Bayesian-optimisation study, then PLE and MMoE
# references and 3 seeds of the best trial at or below MMoE's FLOPs (see the script).
.PHONY: bench-tune bench-tune-memory
bench-tune: install
	$(PY) benchmarks/tune_census.py --oracle=bayesian --max_trials=30

# RSS of one tfmtnas-tune process over 50 tiny trials (target: growth <= 200 MB).
bench-tune-memory: install
	$(PY) benchmarks/tune_memory.py --trials=50

# MTNAS at 4/8/16 experts x 8 tasks: architecture size (enumerated and factorised routes) and
# search epoch against an MMoE epoch at 16 experts.
.PHONY: bench-mtnas-scale
bench-mtnas-scale: install
	$(PY) benchmarks/mtnas_scale.py

clean:
	rm -rf $(VENV) build *.egg-info
