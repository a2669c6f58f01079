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
import statistics
import sys
import time

import numpy as np
import tensorflow as tf
from timing import epoch_times  # benchmarks/ is on sys.path when a script runs

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
    labels = {t: (rng.random(n) < 0.3).astype("float32") for t in ("t0", "t1")}
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
    for t in ("t0", "t1"):
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


def ours(spec: FeatureSpec, cfg: dict, bfloat16: bool = False,
         optimizer: str = "lazy_adam") -> MultiTaskModel:
    """Our MMoE: float32 with the XLA core, or mixed_bfloat16 without XLA."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if bfloat16 else "float32")
    try:
        model = MultiTaskModel(spec, [TaskSpec("t0"), TaskSpec("t1")],
                               sharing={"kind": "mmoe", "num_experts": cfg["experts"],
                                        "expert_units": list(cfg["units"])},
                               embedding_dim=cfg["dim"], tower_units=cfg["tower"])
        model.compile(make_optimizer(optimizer, 1e-3), jit_compile=not bfloat16)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def train_flops_per_example(spec: FeatureSpec, cfg: dict) -> float:
    """Matmul FLOPs of one training example: forward 2*m*n per dense, backward twice that."""
    d = len(spec.categorical) * cfg["dim"] + len(spec.numeric)
    fwd, prev = 0, d
    for u in cfg["units"]:
        fwd += cfg["experts"] * 2 * prev * u
        prev = u
    fwd += 2 * 2 * d * cfg["experts"]  # two gates
    t_prev = prev
    for u in cfg["tower"]:
        fwd += 2 * 2 * t_prev * u
        t_prev = u
    fwd += 2 * 2 * t_prev
    return 3.0 * fwd


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


def run(config: str, epochs: int) -> dict:
    cfg = CONFIGS[config]
    spec = make_spec(cfg, census_vocab_sizes() if cfg["vocab"] is None else [])
    ds = make_data(spec, cfg["examples"], cfg["batch"])
    n = (cfg["examples"] // cfg["batch"]) * cfg["batch"]
    keras.utils.set_random_seed(0)
    base_t = statistics.median(epoch_times(keras_mmoe(spec, cfg), ds, epochs))
    keras.utils.set_random_seed(0)
    our_t = statistics.median(epoch_times(ours(spec, cfg), ds, epochs))
    keras.utils.set_random_seed(0)
    bf16_t = statistics.median(epoch_times(ours(spec, cfg, bfloat16=True), ds, epochs))
    res = {"config": config, "baseline_ex_s": n / base_t, "ours_ex_s": n / our_t,
           "speedup": base_t / our_t, "ours_bf16_ex_s": n / bf16_t,
           "speedup_bf16": base_t / bf16_t}
    print(f"[{config}] batch {cfg['batch']}, {n} examples/epoch, median of {epochs} epochs")
    print(f"  tf.keras Functional MMoE (float32, no XLA):  {res['baseline_ex_s']:,.0f} examples/s")
    print(f"  tfmtnas MMoE (float32, batched, XLA core):   {res['ours_ex_s']:,.0f} examples/s"
          f"  speedup {res['speedup']:.2f}x")
    print(f"  tfmtnas MMoE (mixed_bfloat16, batched):      {res['ours_bf16_ex_s']:,.0f} "
          f"examples/s  speedup {res['speedup_bf16']:.2f}x")
    if config == "wide":
        flops = train_flops_per_example(spec, cfg)
        for key, dtype in (("ours_ex_s", tf.float32), ("ours_bf16_ex_s", tf.bfloat16)):
            achieved = flops * res[key]
            peak = expert_matmul_flops(spec, cfg, dtype)
            res[f"flops_ratio_{dtype.name}"] = achieved / peak
            print(f"  {dtype.name}: achieved {achieved / 1e9:.1f} GFLOP/s; expert-shaped "
                  f"batched matmul {peak / 1e9:.1f} GFLOP/s; ratio {achieved / peak:.2f}")
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
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after warm-up)")
    parser.add_argument("--vocab_scan", default=None,
                        help="comma-separated ids per feature: run the vocabulary scan instead")
    parser.add_argument("--optimizers", default="lazy_adam,adam",
                        help="weight optimizers of the vocabulary scan")
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]))
    if args.vocab_scan:
        vocab_scan([int(v) for v in args.vocab_scan.split(",")], args.epochs,
                   args.optimizers.split(","))
        return
    for name in CONFIGS if args.config == "all" else [args.config]:
        run(name, args.epochs)


if __name__ == "__main__":
    main()
