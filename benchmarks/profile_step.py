"""Where a training step's time goes: a TensorBoard profiler trace and its breakdown.

Trains one model of :mod:`throughput` (default: our MMoE on the wide shapes) for a warm-up
epoch, then records ``--steps`` training steps with ``tf.profiler`` into ``--logdir`` (open
it with ``tensorboard --logdir=...``, Profile tab, trace viewer), and reads the same trace
back to print a breakdown:

- per category, the CPU time of the events that do the work (the self time of each event,
  its nested events subtracted; waits such as ``BlockUntilReady`` left out), per step and as
  a share of all busy CPU time. Operations are put into categories by their names: the
  matmuls (TensorFlow ``MatMul``/``Einsum`` kernels and XLA ``dot`` thunks), the other XLA
  thunks of the compiled core (bias adds, activations and their backward, transposes,
  reductions, fused), the embedding gather and its gradient, the optimizer's updates, the
  metric updates (AUC, loss trackers), the loss, input (``tf.data``), and TensorFlow's
  executor itself;
- the wall time of a step (``train_function``) and the Keras/Python time between two steps.

Run: ``python benchmarks/profile_step.py`` (``make bench-profile``); ``--model`` takes the
names of ``throughput.py --models`` and ``--compile`` extra ``compile`` arguments as JSON,
e.g. ``--compile='{"steps_per_execution": 8}'``.

Example:
    >>> categorize("LazyAdam/Gather:ResourceGather")
    'optimizer updates'
    >>> categorize("while/body/_1/while/LazyAdam/cond/UnsortedSegmentSum:UnsortedSegmentSum")
    'optimizer updates'
    >>> categorize("dot.4@a_forward_core_logits_897__.3")
    'matmuls'
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile

import keras2_first  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow, for DeepCTR)
import tensorflow as tf
import throughput

WAITS = ("BlockUntilReady", "SlinkyThreadPool::Await", "ThreadpoolListener", "PrefetchConsume")
"""Event names that stand for waiting, not work."""

MATMUL_TYPES = ("MatMul", "_FusedMatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
                "Einsum", "_MklMatMul", "_MklFusedMatMul", "_MklBatchMatMul", "_MklEinsum")
BIAS_ACTIVATION_TYPES = ("BiasAdd", "BiasAddGrad", "Relu", "ReluGrad", "Softmax", "AddV2")


def categorize(name: str, optimizer: str = "LazyAdam") -> str:
    """The category of one trace event, from its name (``scope/op:Type`` for TensorFlow
    kernels, the HLO instruction name for XLA thunks)."""
    lower = name.lower()
    if name.startswith(("Iterator", "Prefetch", "MemoryCache", "tf_data", "IteratorGetNext")) \
            or ":IteratorGetNext" in name or "Iterator::" in name:
        return "input (tf.data)"
    if name.startswith("ParallelFor"):  # intra-op shards of a kernel on another thread
        return "other TensorFlow ops"
    if name.startswith(("ThunkExecutor", "CpuExecutable", "ExecutorState::ProcessAsync")):
        return "XLA core launch, thunk executor and completion (not in a thunk)"
    if "::" in name or name.startswith(("Executor", "EagerExecute", "EagerKernel",
                                        "KernelAndDevice", "TFE_")):
        return "TensorFlow executor"
    if ":" not in name:  # an XLA thunk: "<hlo op>@<hlo module>"
        op, _, module = name.partition("@")
        if any(k in module for k in ("update_step", "dense_step", "masked_apply",
                                     "masked_adam", "dense_adam")):
            return "optimizer updates"
        if op.lower().startswith(("dot", "matmul", "einsum", "convolution", "custom-call",
                                  "ynn_dot")):
            return "matmuls"
        return "XLA elementwise: bias, activation, softmax, their backward, transposes"
    scope, op_type = name.rsplit(":", 1)
    # Inside the loop of several steps per call, scopes start with "while/body/...".
    if {optimizer, "Adam", "LazyAdam", "SGD", "Adagrad"} & set(scope.split("/")) \
            or op_type in ("Unique", "ResourceApplyAdam"):
        return "optimizer updates"
    if "embedding" in lower:
        return "embedding gather and its gradient"
    if "auc" in lower or "/mean" in lower or "assignaddvariableop" in lower \
            or "div_no_nan" in lower or "cumsum" in lower or "unsortedsegmentsum" in lower:
        return "metric updates (AUC, loss trackers)"
    if op_type in MATMUL_TYPES or "MatMul" in op_type:  # oneDNN's fused forms included
        return "matmuls"
    if op_type in BIAS_ACTIVATION_TYPES or op_type.endswith("Grad"):
        return "bias, activation and their backward (TensorFlow)"
    if "loss" in lower or "crossentropy" in lower or "_task/" in lower:
        return "losses"
    if op_type in ("XlaLaunch", "_XlaRun", "StatefulPartitionedCall", "PartitionedCall") \
            or "__inference" in name:
        return "TensorFlow executor"
    return "other TensorFlow ops"


TRANSPARENT = ("ParallelFor",)
"""Events that are part of their enclosing kernel's work (its intra-op shards)."""


def self_times(events: list[tuple[int, int, str]]) -> dict[str, int]:
    """Self time (ps) per event name on one thread: each event's duration minus its children's.

    A :data:`TRANSPARENT` event counts as its parent's own work.

    Example:
        >>> dict(self_times([(0, 10, "op"), (2, 3, "child"), (6, 2, "ParallelFor")]))
        {'op': 7, 'child': 3}
    """
    out: dict[str, int] = collections.Counter()
    stack: list[list] = []  # [end, name, child_time]
    for start, dur, name in sorted(events, key=lambda e: (e[0], -e[1])):
        while stack and stack[-1][0] <= start:
            end, n, child = stack.pop()
            out[n] -= child
        if name.startswith(TRANSPARENT) and stack:
            continue
        if stack:
            stack[-1][2] += dur
        out[name] += dur
        stack.append([start + dur, name, 0])
    while stack:
        _, n, child = stack.pop()
        out[n] -= child
    return out


def read_trace(logdir: str) -> dict:
    """Self times per event name over the worker threads, and ``train_function`` spans."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    module_stat = next((k for k, v in plane.stat_metadata.items() if v.name == "hlo_module"),
                       None)

    def module_of(stats) -> str | None:
        for st in stats:
            if st.metadata_id == module_stat:
                return st.str_value or plane.stat_metadata[st.ref_value].name
        return None

    # XLA thunks are named "<hlo op>@<hlo module>", so the optimizer's compiled updates
    # can be told from the model core's.
    names = {k: v.name for k, v in plane.event_metadata.items()}

    def name_of(event) -> str:
        module = module_of(event.stats)
        return f"{names[event.metadata_id]}@{module}" if module else names[event.metadata_id]

    busy: dict[str, int] = collections.Counter()
    steps: list[tuple[int, int]] = []
    for line in plane.lines:
        events = [(line.timestamp_ns * 1000 + e.offset_ps, e.duration_ps, name_of(e))
                  for e in line.events]
        if line.name == "python":
            steps = sorted((s, d) for s, d, n in events if n == "train_function")
            continue
        for name, t in self_times(events).items():
            if not name.startswith(WAITS):
                busy[name] += t
    return {"busy": busy, "steps": steps, "path": paths[-1]}


def breakdown(trace: dict, steps: int, optimizer: str) -> list[tuple[str, float]]:
    """(category, ms of CPU time per step), largest first."""
    per_cat: dict[str, float] = collections.Counter()
    for name, t in trace["busy"].items():
        per_cat[categorize(name, optimizer)] += t / 1e9 / steps
    return sorted(per_cat.items(), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=list(throughput.CONFIGS), default="wide")
    parser.add_argument("--model", choices=list(throughput.LABELS), default="ours_mmoe")
    parser.add_argument("--steps", type=int, default=50, help="traced training steps")
    parser.add_argument("--compile", default="{}",
                        help="JSON of extra compile arguments for our models")
    parser.add_argument("--lazy_adam", default="{}",
                        help="JSON of LazyAdam arguments for our models, e.g. "
                             "'{\"masked_rows_per_id\": 0, \"fuse_dense\": false}'")
    parser.add_argument("--logdir", default=None,
                        help="where the trace goes (default: a new temporary folder)")
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    cfg = dict(throughput.CONFIGS[args.config])
    cfg["examples"] = cfg["batch"] * max(args.steps, 100)
    census = throughput.census_vocab_sizes() if cfg["vocab"] is None else []
    spec = throughput.make_spec(cfg, census)
    ds = throughput.make_data(spec, cfg["examples"], cfg["batch"])
    if args.model.startswith("deepctr_"):
        ds = throughput.deepctr_data(spec, ds)
    model = throughput.build(args.model, spec, cfg)
    extra, lazy = json.loads(args.compile), json.loads(args.lazy_adam)
    if extra or lazy:
        from tfmtnas.models import LazyAdam

        model.compile(LazyAdam(1e-3, **lazy) if lazy else model.optimizer, **extra)
    model.fit(ds, epochs=1, verbose=0)  # warm-up: tracing, XLA compilation
    logdir = args.logdir or tempfile.mkdtemp(prefix="tfmtnas-profile-")
    traced = ds.take(args.steps)
    tf.profiler.experimental.start(logdir)
    model.fit(traced, epochs=1, verbose=0)
    tf.profiler.experimental.stop()
    trace = read_trace(logdir)
    spans = trace["steps"]
    spe = getattr(model, "_steps_per_execution", None)
    per_exec = 1 if spe is None else int(spe.numpy())  # steps per train_function call
    wall = statistics.median(d for _, d in spans) / 1e9 / per_exec
    gaps = [(b[0] - (a[0] + a[1])) / 1e9 / per_exec for a, b in zip(spans, spans[1:])]
    gap = statistics.median(gaps) if gaps else float("nan")
    rows = breakdown(trace, args.steps, type(model.optimizer).__name__)
    total = sum(t for _, t in rows)
    print(f"[{args.config}] {throughput.LABELS[args.model]}, batch {cfg['batch']}, "
          f"{args.steps} traced steps; load average {os.getloadavg()[0]:.2f}")
    print(f"trace: {trace['path']}")
    print(f"step wall time (median train_function): {wall:.2f} ms; Keras/Python between "
          f"steps: {gap:.2f} ms; -> {cfg['batch'] / (wall + gap) * 1e3:,.0f} examples/s")
    print(f"busy CPU time per step, both cores: {total:.2f} ms")
    for cat, t in rows:
        print(f"  {cat:<72} {t:7.2f} ms  {t / total:6.1%}")
    if os.environ.get("PROFILE_TOP"):
        top = sorted(trace["busy"].items(), key=lambda kv: -kv[1])[:int(os.environ["PROFILE_TOP"])]
        for name, t in top:
            print(f"    {t / 1e9 / args.steps:7.3f} ms  {name}")


if __name__ == "__main__":
    main()
