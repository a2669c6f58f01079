"""Training throughput: tfmtnas MMoE vs a straightforward tf.keras MMoE, side by side.

The baseline is written here the way most tutorials write MMoE: Functional API, one
``Embedding`` per categorical feature, one ``Dense`` stack per expert, one softmax ``Dense``
gate per task, no XLA. Ours is :class:`tfmtnas.models.MultiTaskModel` with the ``mmoe``
sharing layer (one concatenated embedding table, batched einsum experts, XLA). Both train on
the same in-memory batches with the same shapes, in one process; each reports the median of
several timed epochs after a warm-up epoch.

A third run trains ours under the ``mixed_bfloat16`` Keras policy (bfloat16 compute, float32
weights, losses and metrics), without XLA: on this CPU (AVX512-BF16) oneDNN's bfloat16
matmul ran 252 GFLOP/s against 147 in float32 on the expert shape, while XLA's CPU backend
ran bfloat16 slower than float32 (102). The baseline stays float32, as written in tutorials.

For the wide configuration it also prints achieved training FLOP/s divided by the FLOP/s of
an expert-shaped batched matmul of the same precision measured in the same process.

``--vocab_scan=1000,100000,1000000`` instead trains our float32 MMoE on the wide shapes with
that many ids per feature, once with each weight optimizer (``lazy_adam``, the default, and
tf-keras ``adam``), all in one process, and prints each one's examples/s relative to its own
run at the smallest vocabulary: the cost of an embedding update in vocabulary size.

Run: ``python benchmarks/throughput.py`` (``make bench``); ``--config=census`` or ``wide``;
``make bench-vocab`` for the vocabulary scan.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import keras2_first  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow, for DeepCTR)
import numpy as np
import tensorflow as tf
from timing import epoch_times, interleaved_epochs  # benchmarks/ is on sys.path

from tfmtnas import keras
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.models import MultiTaskModel, make_optimizer

CONFIGS = {
    # The demo's sizes on Census-Income's shapes (35 categorical features, 7 numeric).
    "census": dict(vocab=None, num_cat=35, num_num=7, dim=8, experts=4, units=(64,),
                   tower=(32,), batch=1024, examples=199_523),
    "wide": dict(vocab=1000, num_cat=26, num_num=13, dim=8, experts=4, units=(256, 128),
                 tower=(64,), batch=512, examples=131_072),
}


TASKS = ("t0", "t1")


def make_spec(cfg: dict, census_vocab_sizes: list[int]) -> FeatureSpec:
    sizes = census_vocab_sizes if cfg["vocab"] is None else [cfg["vocab"]] * cfg["num_cat"]
    cats = [CategoricalFeature(f"c{i}", hash_bins=s) for i, s in enumerate(sizes)]
    nums = [NumericFeature(f"n{i}") for i in range(cfg["num_num"])]
    return FeatureSpec(cats, nums)


def make_data(spec: FeatureSpec, n: int, batch: int, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, f.size, n) + off
                    for f, off in zip(spec.categorical, spec.offsets)], 1).astype("int32")
    num = rng.normal(size=(n, len(spec.numeric))).astype("float32")
    labels = {t: (rng.random(n) < 0.3).astype("float32") for t in TASKS}
    ds = tf.data.Dataset.from_tensor_slices(({"categorical": ids, "numeric": num}, labels))
    return ds.batch(batch, drop_remainder=True).cache().prefetch(tf.data.AUTOTUNE)


def keras_mmoe(spec: FeatureSpec, cfg: dict) -> keras.Model:
    """The straightforward Functional MMoE baseline."""
    ids = keras.Input((len(spec.categorical),), dtype="int32", name="categorical")
    num = keras.Input((len(spec.numeric),), name="numeric")
    embs = []
    for i, (f, off) in enumerate(zip(spec.categorical, spec.offsets)):
        col = keras.layers.Lambda(lambda t, i=i, off=off: t[:, i] - off)(ids)
        embs.append(keras.layers.Embedding(f.size, cfg["dim"])(col))
    x = keras.layers.Concatenate()(embs + [num])
    experts = []
    for _ in range(cfg["experts"]):
        h = x
        for u in cfg["units"]:
            h = keras.layers.Dense(u, activation="relu")(h)
        experts.append(h)
    stacked = keras.layers.Lambda(lambda hs: tf.stack(hs, axis=1))(experts)
    outputs = {}
    for t in TASKS:
        gate = keras.layers.Dense(cfg["experts"], activation="softmax")(x)
        mixed = keras.layers.Lambda(lambda a: tf.einsum("be,beh->bh", a[0], a[1]))(
            [gate, stacked])
        h = mixed
        for u in cfg["tower"]:
            h = keras.layers.Dense(u, activation="relu")(h)
        outputs[t] = keras.layers.Dense(1, name=t)(h)
    model = keras.Model({"categorical": ids, "numeric": num}, outputs)
    model.compile(keras.optimizers.Adam(1e-3),
                  loss={t: keras.losses.BinaryCrossentropy(from_logits=True) for t in outputs},
                  jit_compile=False)
    return model


def deepctr_model(kind: str, spec: FeatureSpec, cfg: dict) -> keras.Model:
    """DeepCTR 0.9.4's ``MMOE`` or ``PLE`` at the configuration's sizes, float32, tf-keras Adam.

    DeepCTR's defaults otherwise (its embedding L2 of 1e-5 included: with any value, 0 too,
    its Embedding layers carry an L2 regularizer, so the table's gradient is dense). PLE
    has, like ours, 1 expert per task and 2 shared experts per level, 2 levels. Compiled as
    DeepCTR's examples do, with a binary cross-entropy per task and no metric beyond the
    losses, without XLA (tf-keras' CPU default).
    """
    try:
        from deepctr.feature_column import DenseFeat, SparseFeat
        from deepctr.models import MMOE, PLE
    except ImportError as err:  # an extra for benchmarks only
        raise SystemExit(f"DeepCTR is not installed ({err}); run `make bench-deepctr`.") from err
    columns = ([SparseFeat(f"c{i}", vocabulary_size=f.size, embedding_dim=cfg["dim"])
                for i, f in enumerate(spec.categorical)]
               + [DenseFeat(f"n{i}", 1) for i in range(len(spec.numeric))])
    common = dict(tower_dnn_hidden_units=tuple(cfg["tower"]), task_types=("binary", "binary"),
                  task_names=TASKS, seed=0)
    if kind == "mmoe":
        model = MMOE(columns, num_experts=cfg["experts"],
                     expert_dnn_hidden_units=tuple(cfg["units"]), **common)
    else:
        model = PLE(columns, shared_expert_num=2, specific_expert_num=1, num_levels=2,
                    expert_dnn_hidden_units=tuple(cfg["units"]), **common)
    model.compile(keras.optimizers.Adam(1e-3),
                  loss={t: "binary_crossentropy" for t in TASKS})
    return model


def deepctr_data(spec: FeatureSpec, ds: tf.data.Dataset) -> tf.data.Dataset:
    """The same cached batches in DeepCTR's layout: one ``[B, 1]`` input per feature."""
    offsets = tf.constant(spec.offsets, tf.int32)

    def split(features, labels):
        ids = features["categorical"] - offsets
        out = {f"c{i}": ids[:, i:i + 1] for i in range(len(spec.categorical))}
        out.update({f"n{i}": features["numeric"][:, i:i + 1]
                    for i in range(len(spec.numeric))})
        return out, labels

    return ds.map(split).cache().prefetch(tf.data.AUTOTUNE)


def ours(spec: FeatureSpec, cfg: dict, kind: str = "mmoe", bfloat16: bool = False,
         optimizer: str | keras.optimizers.Optimizer = "lazy_adam",
         **compile_kwargs) -> MultiTaskModel:
    """Our MMoE or PLE with ``MultiTaskModel``'s defaults, in float32 or ``mixed_bfloat16``;
    ``compile_kwargs`` override the defaults of ``compile``."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if bfloat16 else "float32")
    try:
        sharing = ({"kind": "mmoe", "num_experts": cfg["experts"]} if kind == "mmoe"
                   else {"kind": "ple", "num_task_experts": 1, "num_shared_experts": 2,
                         "num_levels": 2})
        model = MultiTaskModel(spec, [TaskSpec(t) for t in TASKS],
                               sharing={**sharing, "expert_units": list(cfg["units"])},
                               embedding_dim=cfg["dim"], tower_units=cfg["tower"])
        if isinstance(optimizer, str):
            optimizer = make_optimizer(optimizer, 1e-3)
        model.compile(optimizer, **compile_kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def train_flops_per_example(model: keras.Model) -> float:
    """Matmul FLOPs of one training example: 2 per kernel weight forward, twice that backward.

    Every kernel (rank >= 2, embedding tables excluded) multiplies each example once; the
    backward pass computes the input and the weight gradient of each, hence 3 x forward.
    """
    kernels = [v for v in model.trainable_variables
               if v.shape.rank >= 2 and "emb" not in v.name]
    return 3.0 * 2.0 * sum(v.shape.num_elements() for v in kernels)


def expert_matmul_flops(spec: FeatureSpec, cfg: dict, dtype: tf.DType = tf.float32,
                        repeats: int = 50) -> float:
    """FLOP/s of the first expert layer's batched einsum alone: float32 XLA-compiled,
    bfloat16 through TensorFlow's own (oneDNN) kernel, the fastest of each here."""
    d = len(spec.categorical) * cfg["dim"] + len(spec.numeric)
    e, h, b = cfg["experts"], cfg["units"][0], cfg["batch"]
    x = tf.cast(tf.random.normal([b, d]), dtype)
    w = tf.cast(tf.random.normal([e, d, h]), dtype)
    f = tf.function(lambda x, w: tf.einsum("bd,edh->beh", x, w),
                    jit_compile=dtype == tf.float32)
    f(x, w).numpy()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeats):
            y = f(x, w)
        y.numpy()
        times.append((time.perf_counter() - t) / repeats)
    return 2.0 * b * d * e * h / statistics.median(times)


def census_vocab_sizes() -> list[int]:
    try:
        from tfmtnas.data import load_census

        return [f.size for f in load_census().spec.categorical]
    except Exception as err:  # the benchmark still runs offline with typical sizes
        print(f"(census spec unavailable: {err}; using vocabulary 50 per feature)")
        return [50] * 35


LABELS = {
    "keras_mmoe": "tf.keras Functional MMoE (float32)",
    "deepctr_mmoe": "DeepCTR 0.9.4 MMOE (float32)",
    "deepctr_ple": "DeepCTR 0.9.4 PLE (float32)",
    "ours_mmoe": "tfmtnas MMoE (float32, defaults)",
    "ours_ple": "tfmtnas PLE (float32, defaults)",
    "ours_mmoe_bf16": "tfmtnas MMoE (mixed_bfloat16)",
    "ours_ple_bf16": "tfmtnas PLE (mixed_bfloat16)",
}
"""Every model the benchmark can time, by ``--models`` name."""

REFERENCE = {"keras_mmoe": "keras_mmoe", "deepctr_mmoe": "deepctr_mmoe",
             "deepctr_ple": "deepctr_ple", "ours_mmoe": "deepctr_mmoe",
             "ours_ple": "deepctr_ple", "ours_mmoe_bf16": "deepctr_mmoe",
             "ours_ple_bf16": "deepctr_ple"}
"""What each model's ratio is taken against (ours: DeepCTR's model of the same kind)."""


def build(name: str, spec: FeatureSpec, cfg: dict) -> keras.Model:
    keras.utils.set_random_seed(0)
    if name == "keras_mmoe":
        return keras_mmoe(spec, cfg)
    if name.startswith("deepctr_"):
        return deepctr_model(name.split("_")[1], spec, cfg)
    return ours(spec, cfg, name.split("_")[1], bfloat16=name.endswith("_bf16"))


def run(config: str, epochs: int, names: list[str]) -> dict:
    cfg = CONFIGS[config]
    spec = make_spec(cfg, census_vocab_sizes() if cfg["vocab"] is None else [])
    ds = make_data(spec, cfg["examples"], cfg["batch"])
    n = (cfg["examples"] // cfg["batch"]) * cfg["batch"]
    models = {name: build(name, spec, cfg) for name in names}
    data = {name: deepctr_data(spec, ds) if name.startswith("deepctr_") else ds
            for name in names}
    load = os.getloadavg()
    times = interleaved_epochs(models, data, epochs)
    load_after = os.getloadavg()
    res: dict = {"config": config}
    print(f"[{config}] batch {cfg['batch']}, {n} examples/epoch, median of {epochs} interleaved "
          f"epochs after a warm-up; load average {load[0]:.2f} before, {load_after[0]:.2f} "
          f"after")
    peaks = {}
    for name in names:
        t = statistics.median(times[name])
        res[f"{name}_ex_s"] = n / t
        line = f"  {LABELS[name]:<38} {n / t:>10,.0f} examples/s"
        ref = REFERENCE[name]
        if ref != name and ref in times:
            # Paired per round: this model's epoch against the reference's epoch of that round.
            ratio = statistics.median(r / m for m, r in zip(times[name], times[ref]))
            res[f"{name}_vs_{ref}"] = ratio
            line += f"  {ratio:.2f}x {ref}"
        dtype = tf.bfloat16 if name.endswith("_bf16") else tf.float32
        if dtype not in peaks:
            peaks[dtype] = expert_matmul_flops(spec, cfg, dtype)
        achieved = train_flops_per_example(models[name]) * n / t
        res[f"{name}_flops_ratio"] = achieved / peaks[dtype]
        line += (f"  {achieved / 1e9:.1f} GFLOP/s = {achieved / peaks[dtype]:.2f} of the "
                 f"{dtype.name} expert matmul")
        print(line, flush=True)
    print("  expert-shaped batched matmul: " + ", ".join(
        f"{d.name} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items()), flush=True)
    return res


ABLATION = {
    "defaults": {},
    "1 step per call": {"compile": {"steps_per_execution": 1}},
    "LazyAdam rows form, unfused": {"optimizer": {"masked_rows_per_id": 0,
                                                  "fuse_dense": False}},
    "both (the earlier defaults)": {
        "optimizer": {"masked_rows_per_id": 0, "fuse_dense": False},
        "compile": {"steps_per_execution": 1}},
    "no XLA core": {"compile": {"jit_compile": False}},
    "mixed_bfloat16, XLA core": {"bfloat16": True, "compile": {"jit_compile": True}},
    "mixed_bfloat16, no XLA core": {"bfloat16": True, "compile": {"jit_compile": False}},
}
"""Variants of our float32 MMoE timed against its defaults by ``--ablation``."""


def ablation(config: str, epochs: int, kind: str = "mmoe") -> dict:
    """Each :data:`ABLATION` variant of our model, interleaved; ratios to the defaults."""
    from tfmtnas.models import LazyAdam

    cfg = CONFIGS[config]
    spec = make_spec(cfg, census_vocab_sizes() if cfg["vocab"] is None else [])
    ds = make_data(spec, cfg["examples"], cfg["batch"])
    n = (cfg["examples"] // cfg["batch"]) * cfg["batch"]
    models = {}
    for name, v in ABLATION.items():
        keras.utils.set_random_seed(0)
        models[name] = ours(spec, cfg, kind, bfloat16=v.get("bfloat16", False),
                            optimizer=LazyAdam(1e-3, **v.get("optimizer", {})),
                            **v.get("compile", {}))
    load = os.getloadavg()[0]
    times = interleaved_epochs(models, {name: ds for name in models}, epochs)
    print(f"[{config}, {kind} ablation] batch {cfg['batch']}, {n} examples/epoch, median of "
          f"{epochs} interleaved epochs; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    res = {}
    for name in models:
        ratio = statistics.median(d / m for m, d in zip(times[name], times["defaults"]))
        res[name] = (n / statistics.median(times[name]), ratio)
        print(f"  {name:<40} {res[name][0]:>10,.0f} examples/s  {ratio:.2f}x defaults",
              flush=True)
    return res


def vocab_scan(vocabs: list[int], epochs: int, optimizers: list[str]) -> dict:
    """Wide shapes at each vocabulary size, per optimizer; examples/s and ratios to the first."""
    cfg = dict(CONFIGS["wide"])
    res: dict = {}
    print(f"[wide, vocabulary scan] batch {cfg['batch']}, {cfg['examples']} examples/epoch, "
          f"median of {epochs} epochs, float32")
    for opt in optimizers:
        for vocab in vocabs:
            spec = make_spec({**cfg, "vocab": vocab}, [])
            ds = make_data(spec, cfg["examples"], cfg["batch"])
            keras.utils.set_random_seed(0)
            model = ours(spec, cfg, optimizer=opt)
            t = statistics.median(epoch_times(model, ds, epochs))
            n = (cfg["examples"] // cfg["batch"]) * cfg["batch"]
            res[(opt, vocab)] = n / t
            base = res[(opt, vocabs[0])]
            print(f"  {opt:10s} {vocab:>9,} ids/feature: {n / t:9,.0f} examples/s  "
                  f"({n / t / base:.2f}x of {vocabs[0]:,} ids)", flush=True)
            del model, ds
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--epochs", type=int, default=5,
                        help="timed epochs of each model (interleaved, after a warm-up)")
    parser.add_argument("--models", default=",".join(LABELS),
                        help=f"comma-separated, of: {', '.join(LABELS)}")
    parser.add_argument("--vocab_scan", default=None,
                        help="comma-separated ids per feature: run the vocabulary scan instead")
    parser.add_argument("--optimizers", default="lazy_adam,adam",
                        help="weight optimizers of the vocabulary scan")
    parser.add_argument("--ablation", default=None, choices=["mmoe", "ple"],
                        help="time the ABLATION variants of our model instead")
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    if args.ablation:
        for name in CONFIGS if args.config == "all" else [args.config]:
            ablation(name, args.epochs, args.ablation)
        return
    if args.vocab_scan:
        vocab_scan([int(v) for v in args.vocab_scan.split(",")], args.epochs,
                   args.optimizers.split(","))
        return
    for name in CONFIGS if args.config == "all" else [args.config]:
        run(name, args.epochs, [m for m in args.models.split(",") if m])


if __name__ == "__main__":
    main()
