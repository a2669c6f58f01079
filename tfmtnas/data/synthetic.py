"""Two regression tasks with a controlled correlation: the MMoE paper's synthetic data.

Ma, Zhao, Yi, Chen, Hong, Chi. "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts." KDD 2018, Section 4 (synthetic data generation). It is the
classic controlled test for negative transfer: shared-bottom models degrade as the task
correlation ``p`` falls, gated models much less.

Generation (``d`` = ``dim``, ``c`` = ``scale``, ``m`` = ``num_sin``):

1. two orthogonal unit vectors ``u1, u2`` in R^d (Gram-Schmidt on two Gaussian vectors);
2. task weights ``w1 = c u1`` and ``w2 = c (p u1 + sqrt(1 - p^2) u2)``, so that
   ``cos(w1, w2) = p``;
3. inputs ``x ~ N(0, I_d)``;
4. labels ``y_k = w_k.x + sum_{i=1..m} sin(a_i w_k.x + b_i) + e_k`` with
   ``a_i, b_i ~ N(0, 1)`` shared by both tasks and ``e_k ~ N(0, noise_std^2)``.

Since ``x`` is isotropic, the Pearson correlation of ``w1.x`` and ``w2.x`` is ``p``; the
sine terms make the label correlation a monotone but non-linear function of it.

With ``disjoint_labels=True`` (not in the paper) every training example keeps the label of one
task only, the other is missing (NaN): even rows label ``y1``, odd rows ``y2``, as when two
objectives come from different logs. Both tasks then see the same inputs only through
sharing, so pooling them helps when ``p`` is high and cannot when ``p = 0``; with full labels
both tasks see every ``x``, and sharing adds nothing to the data either task already has.
Validation and test labels stay complete.

Example:
    >>> data = make_synthetic(num_train=1000, num_validation=100, num_test=100,
    ...                       correlation=0.5, seed=1)
    >>> len(data.train), [t.name for t in data.tasks], len(data.spec.numeric)
    (1000, ['y1', 'y2'], 100)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfmtnas.data.base import MultiTaskData, Split
from tfmtnas.errors import UserError
from tfmtnas.features import FeatureSpec, TaskSpec

TASKS = (TaskSpec("y1", "regression"), TaskSpec("y2", "regression"))


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
    """The hidden parameters of one synthetic problem.

    Args:
        w1: task-1 weight vector, shape ``[dim]``.
        w2: task-2 weight vector, shape ``[dim]``; ``cos(w1, w2)`` is the task correlation.
        alpha: sine frequencies ``a_i``, shape ``[num_sin]``.
        beta: sine phases ``b_i``, shape ``[num_sin]``.
    """

    w1: np.ndarray
    w2: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray

    def labels(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free labels ``(y1, y2)`` for inputs ``x`` of shape ``[n, dim]``."""
        out = []
        for w in (self.w1, self.w2):
            z = x @ w
            out.append(z + np.sin(np.multiply.outer(z, self.alpha) + self.beta).sum(axis=-1))
        return out[0], out[1]


def _check(correlation, dim, num_sin, noise_std, sizes):
    if not -1.0 <= correlation <= 1.0:
        raise UserError(f"correlation must be in [-1, 1], got {correlation}.")
    if int(dim) != dim or dim < 2:
        raise UserError(f"dim must be an integer >= 2 (two orthogonal vectors), got {dim}.")
    if int(num_sin) != num_sin or num_sin < 0:
        raise UserError(f"num_sin must be an integer >= 0, got {num_sin}.")
    if not noise_std >= 0:
        raise UserError(f"noise_std must be >= 0, got {noise_std}.")
    for what, n in sizes.items():
        if int(n) != n or n < 0:
            raise UserError(f"{what} must be an integer >= 0, got {n}.")
    if sizes.get("num_train", 1) < 1:
        raise UserError("num_train must be >= 1.")


def synthetic_params(
    dim: int = 100,
    correlation: float = 0.5,
    scale: float = 1.0,
    num_sin: int = 10,
    seed: int | np.random.Generator = 0,
) -> SyntheticParams:
    """Draw ``w1, w2, a, b`` as in the MMoE paper (see the module docstring).

    Args:
        dim: input dimension ``d``. Default 100.
        correlation: task correlation ``p`` in [-1, 1]. Default 0.5.
        scale: norm ``c`` of both weight vectors. Default 1.0.
        num_sin: number of sine terms ``m``. Default 10.
        seed: an integer seed or a NumPy Generator to draw from.
    """
    _check(correlation, dim, num_sin, 0.0, {})
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    g = rng.standard_normal((2, int(dim)))
    u1 = g[0] / np.linalg.norm(g[0])
    u2 = g[1] - (g[1] @ u1) * u1  # Gram-Schmidt
    u2 /= np.linalg.norm(u2)
    p = float(correlation)
    w1 = scale * u1
    w2 = scale * (p * u1 + np.sqrt(max(0.0, 1.0 - p * p)) * u2)
    alpha = rng.standard_normal(int(num_sin))
    beta = rng.standard_normal(int(num_sin))
    return SyntheticParams(w1, w2, alpha, beta)


def make_synthetic(
    num_train: int = 10000,
    num_validation: int = 1000,
    num_test: int = 1000,
    dim: int = 100,
    correlation: float = 0.5,
    scale: float = 1.0,
    num_sin: int = 10,
    noise_std: float = 0.01,
    seed: int = 0,
    disjoint_labels: bool = False,
) -> MultiTaskData:
    """Two regression tasks of correlation ``p`` (Ma et al., KDD 2018, MMoE synthetic data).

    Features are the numeric columns ``x0 .. x{dim-1}`` (float64); the tasks ``y1`` and
    ``y2`` are regressions with float32 labels. The feature spec is fitted on train. The
    same arguments give the same data; :func:`synthetic_params` with the same ``dim``,
    ``correlation``, ``scale``, ``num_sin`` and ``seed`` returns its hidden parameters.

    Args:
        num_train: training examples. Default 10000.
        num_validation: validation examples. Default 1000.
        num_test: test examples. Default 1000.
        dim: input dimension ``d``. Default 100.
        correlation: task correlation ``p`` in [-1, 1]. Default 0.5.
        scale: norm ``c`` of the weight vectors. Default 1.0.
        num_sin: number of sine terms ``m``. Default 10.
        noise_std: standard deviation of the label noise. Default 0.01.
        seed: random seed. Default 0.
        disjoint_labels: keep one task's label per training example (even rows ``y1``, odd
            rows ``y2``, the other NaN). Default False.

    Returns:
        A :class:`MultiTaskData` named ``"synthetic"``.
    """
    _check(correlation, dim, num_sin, noise_std,
           {"num_train": num_train, "num_validation": num_validation, "num_test": num_test})
    rng = np.random.default_rng(seed)
    params = synthetic_params(dim, correlation, scale, num_sin, rng)
    names = [f"x{i}" for i in range(int(dim))]
    splits = []
    for n in (num_train, num_validation, num_test):
        x = rng.standard_normal((int(n), int(dim)))
        y1, y2 = params.labels(x)
        noise = noise_std * rng.standard_normal((2, int(n)))
        labels = {"y1": (y1 + noise[0]).astype(np.float32),
                  "y2": (y2 + noise[1]).astype(np.float32)}
        if disjoint_labels and not splits:
            labels["y1"][1::2] = np.nan
            labels["y2"][0::2] = np.nan
        splits.append(Split(
            {name: np.ascontiguousarray(x[:, i]) for i, name in enumerate(names)}, labels))
    spec = FeatureSpec.fit(splits[0].features, numeric=names)
    return MultiTaskData("synthetic", *splits, spec, TASKS)
