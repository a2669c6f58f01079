"""The search space of ``tfmtnas-tune``: one table of dimensions, narrowed by JSON or flags.

Every trial picks an **architecture** (a hand-designed model of the zoo or one of the three
search methods) and the sizes and rates that architecture reads. Each dimension says which
architectures it applies to; keras-tuner sees it as a conditional hyperparameter
(``parent_name="architecture"``), so a trial of MMoE has no ``num_levels`` and the oracles
(random search, Bayesian optimisation, Hyperband) only vary what matters for it.

| dimension | default domain | read by |
|---|---|---|
| ``architecture`` | the zoo and the search methods | every trial |
| ``expert_units`` | 16, 32, 64, 128 (width of each expert's hidden layer) | every trial |
| ``num_experts`` | 2 to 8, step 2 | ``mmoe``, ``mtnas``, ``gumbel``, ``gumbel_experts`` |
| ``num_task_experts`` | 1 to 2 | ``cgc``, ``ple`` |
| ``num_shared_experts`` | 1 to 4 | ``cgc``, ``ple`` |
| ``num_levels`` | 2 to 3 | ``ple`` |
| ``num_layers`` | 1 to 3 (expert layers of the searched supernet) | the search methods |
| ``tower_units`` | 16, 32, 64 | every trial |
| ``embedding_dim`` | 4, 8, 16 | every trial |
| ``learning_rate`` | 5e-4 to 1e-2, log scale | every trial |
| ``entropy_weight`` | 1 to 100, log scale (MTL-NAS, Gao et al., CVPR 2020) | ``mtlnas`` |
| ``budget`` | 0.25 to 1.0 (Maziarz et al., arXiv 1910.04915) | ``gumbel``, ``gumbel_experts`` |
| ``cost_weight`` | 0 to 0.3 (Chen et al., arXiv 2009.00387) | ``mtnas``, both Gumbel methods |

Narrowing (:meth:`SearchSpace.narrow`), per dimension: a single value fixes it, a list makes
it a choice among those values, ``{"min": a, "max": b}`` (optionally ``"step"``,
``"sampling": "log"``) narrows a numeric range. A JSON file holds one object of such
entries; the flag form is ``name=value`` with ``value`` JSON or a bare word, and ``a|b``
for a list (:func:`parse_assignments`).

Example:
    >>> space = SearchSpace.default().narrow({"architecture": ["mmoe", "ple"],
    ...                                       "embedding_dim": 8})
    >>> space["architecture"].values, space["embedding_dim"].kind
    (('mmoe', 'ple'), 'fixed')
    >>> "budget" in space.names   # gumbel is out of the space, so is its budget
    False
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tfmtnas.errors import DataError, UserError
from tfmtnas.models import SHARING_KINDS
from tfmtnas.search.methods import METHODS

ARCHITECTURES: tuple[str, ...] = tuple(SHARING_KINDS) + tuple(METHODS)
KINDS = ("fixed", "choice", "int", "float")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One hyperparameter of the space.

    Args:
        name: the hyperparameter's name (as keras-tuner and the trial records show it).
        kind: ``fixed`` (one value), ``choice`` (one of ``values``), ``int`` or ``float``
            (a range ``low`` to ``high``, with ``step`` and ``log`` sampling).
        values: the choices (``choice``) or the one value (``fixed``).
        low, high: the range (``int``, ``float``).
        step: grid step of the range, or None.
        log: sample the range on a log scale.
        default: the value a trial uses where the dimension does not apply, and keras-tuner's
            default.
        applies_to: architectures that read it (None: every one).
        minimum, maximum: the bounds any narrowing must stay within (None: unbounded).
        integer: values are whole numbers.
        help: one line for ``--helpshort`` and the docs.

    Example:
        >>> Dimension("embedding_dim", "choice", values=(4, 8), default=8, integer=True,
        ...           minimum=1).values
        (4, 8)
    """

    name: str
    kind: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    default: Any = None
    applies_to: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    help: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Dimension {self.name!r}: kind must be one of {KINDS}, got "
                             f"{self.kind!r}.")
        object.__setattr__(self, "values", tuple(self.values))
        if self.applies_to is not None:
            object.__setattr__(self, "applies_to", tuple(self.applies_to))

    def applies(self, architecture: str) -> bool:
        """Whether a trial of ``architecture`` reads this dimension."""
        return self.applies_to is None or architecture in self.applies_to

    def to_dict(self) -> dict:
        """The domain as JSON (kind, values or range, default, architectures)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("fixed", "choice"):
            out["values"] = list(self.values)
        else:
            out.update(min=self.low, max=self.high, step=self.step,
                       sampling="log" if self.log else "linear")
        out["default"] = self.default
        if self.applies_to is not None:
            out["applies_to"] = list(self.applies_to)
        return out

    def declare(self, hp, parent_values: Sequence[str] | None) -> None:
        """Add this dimension to keras-tuner's ``HyperParameters`` ``hp``.

        Args:
            hp: a ``keras_tuner.HyperParameters``.
            parent_values: the architectures it is active for, or None for every trial.
        """
        cond = ({} if parent_values is None
                else {"parent_name": "architecture", "parent_values": list(parent_values)})
        if self.kind == "fixed":
            hp.Fixed(self.name, self.values[0], **cond)
        elif self.kind == "choice":
            hp.Choice(self.name, list(self.values), default=self.default, **cond)
        elif self.kind == "int":
            hp.Int(self.name, int(self.low), int(self.high),
                   step=None if self.step is None else int(self.step),
                   sampling="log" if self.log else "linear", default=self.default, **cond)
        else:
            hp.Float(self.name, float(self.low), float(self.high), step=self.step,
                     sampling="log" if self.log else "linear", default=self.default, **cond)

    # -- narrowing ----------------------------------------------------------------------
    def narrowed(self, value: Any) -> Dimension:
        """This dimension fixed, made a choice, or its range narrowed (see module docs).

        Raises:
            UserError: a value of the wrong type or outside ``minimum``/``maximum``, an
                unknown architecture, or a range for a non-numeric dimension.
        """
        if isinstance(value, Mapping):
            return self._range(value)
        if isinstance(value, (list, tuple)):
            if not value:
                raise UserError(f"Search space: {self.name} got an empty list of values.")
            values = tuple(self._check(v) for v in value)
            if len(set(values)) != len(values):
                raise UserError(f"Search space: {self.name} lists a value twice: "
                                f"{list(value)}.")
            if len(values) == 1:
                return dataclasses.replace(self, kind="fixed", values=values, low=None,
                                           high=None, step=None, log=False,
                                           default=values[0])
            default = self.default if self.default in values else values[0]
            return dataclasses.replace(self, kind="choice", values=values, low=None,
                                       high=None, step=None, log=False, default=default)
        return self.narrowed([value])

    def _check(self, value: Any) -> Any:
        """``value`` as this dimension's type, checked against its bounds."""
        where = f"Search space: {self.name}"
        if self.name == "architecture":
            if value not in ARCHITECTURES:
                raise UserError(f"{where}: unknown architecture {value!r}; choose from "
                                f"{', '.join(ARCHITECTURES)}.")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} takes numbers, got {value!r}.")
        if not math.isfinite(value):
            raise UserError(f"{where} takes finite numbers, got {value!r}.")
        if self.integer:
            if value != int(value):
                raise UserError(f"{where} takes whole numbers, got {value!r}.")
            value = int(value)
        else:
            value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise UserError(f"{where} must be >= {self.minimum}, got {value!r}.")
        if self.maximum is not None and value > self.maximum:
            raise UserError(f"{where} must be <= {self.maximum}, got {value!r}.")
        return value

    def _range(self, spec: Mapping) -> Dimension:
        where = f"Search space: {self.name}"
        if self.name == "architecture":
            raise UserError(f"{where} is a choice: give one name or a list, not a range.")
        unknown = sorted(set(spec) - {"min", "max", "step", "sampling"})
        if unknown or "min" not in spec or "max" not in spec:
            raise UserError(f"{where}: a range is {{\"min\": a, \"max\": b}} with optional "
                            f"\"step\" and \"sampling\" (linear or log); got {dict(spec)}.")
        low, high = self._check(spec["min"]), self._check(spec["max"])
        if low > high:
            raise UserError(f"{where}: min {low} is above max {high}.")
        sampling = spec.get("sampling", "log" if self.log else "linear")
        if sampling not in ("linear", "log"):
            raise UserError(f"{where}: sampling must be linear or log, got {sampling!r}.")
        if sampling == "log" and low <= 0:
            raise UserError(f"{where}: log sampling needs min > 0, got {low}.")
        step = spec.get("step")
        if step is not None:
            step = self._check(step)
            if step <= 0:
                raise UserError(f"{where}: step must be > 0, got {step}.")
        if low == high:
            return self.narrowed([low])
        default = self.default
        if not isinstance(default, (int, float)) or not low <= default <= high:
            default = low
        return dataclasses.replace(self, kind="int" if self.integer else "float", values=(),
                                   low=low, high=high, step=step, log=sampling == "log",
                                   default=default)


def _dimensions() -> tuple[Dimension, ...]:
    zoo_gated = ("cgc", "ple")
    searched = tuple(METHODS)
    return (
        Dimension("architecture", "choice", ARCHITECTURES, default="mmoe",
                  help="a zoo model (tfmtnas.models.SHARING_KINDS) or a search method"),
        Dimension("expert_units", "choice", (16, 32, 64, 128), default=32, integer=True,
                  minimum=1, help="width of each expert's hidden layer"),
        Dimension("num_experts", "int", low=2, high=8, step=2, default=4, integer=True,
                  minimum=1, applies_to=("mmoe", "mtnas", "gumbel", "gumbel_experts"),
                  help="experts per layer (MMoE; the MTNAS and Gumbel supernets)"),
        Dimension("num_task_experts", "int", low=1, high=2, default=1, integer=True,
                  minimum=1, applies_to=zoo_gated, help="experts owned by each task"),
        Dimension("num_shared_experts", "int", low=1, high=4, default=2, integer=True,
                  minimum=1, applies_to=zoo_gated, help="shared experts"),
        Dimension("num_levels", "int", low=2, high=3, default=2, integer=True, minimum=1,
                  applies_to=("ple",), help="extraction levels of PLE"),
        Dimension("num_layers", "int", low=1, high=3, default=2, integer=True, minimum=1,
                  applies_to=searched, help="expert layers of the searched supernet"),
        Dimension("tower_units", "choice", (16, 32, 64), default=32, integer=True,
                  minimum=1, help="width of each task tower's hidden layer"),
        Dimension("embedding_dim", "choice", (4, 8, 16), default=8, integer=True,
                  minimum=1, help="width of the categorical embeddings"),
        Dimension("learning_rate", "float", low=5e-4, high=1e-2, log=True, default=2e-3,
                  minimum=0.0, help="weight learning rate"),
        Dimension("entropy_weight", "float", low=1.0, high=100.0, log=True, default=10.0,
                  minimum=0.0, applies_to=("mtlnas",),
                  help="MTL-NAS minimum-entropy regulariser weight"),
        Dimension("budget", "float", low=0.25, high=1.0, default=1.0, minimum=0.0,
                  maximum=1.0, applies_to=("gumbel", "gumbel_experts"),
                  help="Gumbel matrix: target fraction of active connections"),
        Dimension("cost_weight", "float", low=0.0, high=0.3, default=0.0, minimum=0.0,
                  applies_to=("mtnas", "gumbel", "gumbel_experts"),
                  help="price of the fraction of experts the child computes"),
    )


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The dimensions of a study, in declaration order (``architecture`` first).

    Example:
        >>> space = SearchSpace.default()
        >>> space.names[:3]
        ('architecture', 'expert_units', 'num_experts')
        >>> hp = space.hyperparameters()       # keras_tuner.HyperParameters
        >>> space.settings({"architecture": "ple", "num_levels": 3})["num_levels"]
        3
    """

    dimensions: tuple[Dimension, ...]

    @classmethod
    def default(cls) -> SearchSpace:
        """Every architecture with the default domains of the module table."""
        return cls(_dimensions())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def __getitem__(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def architectures(self) -> tuple[str, ...]:
        """The architectures trials may pick."""
        return self["architecture"].values

    def narrow(self, overrides: Mapping[str, Any]) -> SearchSpace:
        """A copy with each named dimension narrowed; dimensions that no remaining
        architecture reads are dropped.

        Raises:
            UserError: an unknown dimension name (the message lists them) or a bad value.
        """
        unknown = sorted(set(overrides) - set(self.names))
        if unknown:
            raise UserError(f"Search space: unknown dimension(s) {unknown}; the dimensions "
                            f"are {', '.join(self.names)}.")
        dims = [d.narrowed(overrides[d.name]) if d.name in overrides else d
                for d in self.dimensions]
        architectures = dims[0].values
        kept = [d for d in dims if d.applies_to is None
                or any(a in d.applies_to for a in architectures)]
        return SearchSpace(tuple(kept))

    def hyperparameters(self):
        """keras-tuner's ``HyperParameters`` for this space (conditional on architecture)."""
        import keras_tuner

        hp = keras_tuner.HyperParameters()
        architectures = self.architectures
        for d in self.dimensions:
            parents = None
            if d.applies_to is not None and d.name != "architecture":
                parents = [a for a in architectures if a in d.applies_to]
                if len(parents) == len(architectures):
                    parents = None  # every trial reads it
            d.declare(hp, parents)
        return hp

    def settings(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every dimension's value for one trial: the trial's own for those its
        architecture reads, the default for the others (keras-tuner's ``tuner/...``
        bookkeeping values are left out)."""
        architecture = values.get("architecture", self["architecture"].default)
        out: dict[str, Any] = {}
        for d in _dimensions():  # dropped dimensions still need their defaults
            try:
                d = self[d.name]
            except KeyError:
                pass
            if d.name in values and d.applies(architecture):
                out[d.name] = values[d.name]
            elif d.kind == "fixed":
                out[d.name] = d.values[0]
            else:
                out[d.name] = d.default
        out["architecture"] = architecture
        return out

    def to_dict(self) -> dict[str, dict]:
        """``{name: domain}`` as JSON (what ``config.json`` records)."""
        return {d.name: d.to_dict() for d in self.dimensions}

    def describe(self) -> str:
        """One line per dimension, for the study's first progress lines."""
        lines = []
        for d in self.dimensions:
            if d.kind in ("fixed", "choice"):
                domain = "|".join(str(v) for v in d.values)
            else:
                domain = f"{d.low:g}..{d.high:g}" + (" (log)" if d.log else "")
            readers = [a for a in self.architectures if d.applies(a)]
            scope = ("" if len(readers) == len(self.architectures)
                     else f"  [{', '.join(readers)}]")
            lines.append(f"  {d.name:<19}{domain}{scope}")
        return "\n".join(lines)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["name=value", ...]`` (the ``--hp`` flag) -> ``{name: value}`` for
    :meth:`SearchSpace.narrow`.

    ``value`` is JSON (``8``, ``[32, 64]``, ``{"min": 0.001, "max": 0.01}``) or a bare word
    (``mmoe``); ``a|b|c`` is a list whose items are JSON or bare words.

    Example:
        >>> parse_assignments(["architecture=mmoe|ple", "expert_units=[32,64]",
        ...                    "learning_rate={\\"min\\":0.001,\\"max\\":0.01}"])["learning_rate"]
        {'min': 0.001, 'max': 0.01}
        >>> parse_assignments(["architecture=mmoe|ple", "embedding_dim=8"])
        {'architecture': ['mmoe', 'ple'], 'embedding_dim': 8}

    Raises:
        UserError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise UserError(f"--hp wants name=value (value JSON, a word, or a|b for a "
                            f"choice), got {item!r}.")
        if "|" in text and not text.startswith(("[", "{", '"')):
            out[name] = [_parse_value(part.strip()) for part in text.split("|")]
        else:
            out[name] = _parse_value(text)
    return out


def load_space_file(path: str | os.PathLike) -> dict[str, Any]:
    """The narrowing entries of a JSON space file (one object, ``{name: value}``).

    Raises:
        DataError: the file is missing, is not JSON, or is not one object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Space file {path} does not exist.")
    try:
        entries = json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"Space file {path} is not valid JSON: {err}.") from None
    if not isinstance(entries, dict):
        raise DataError(f"Space file {path} must hold one JSON object {{name: value}}, got "
                        f"{type(entries).__name__}.")
    return entries


def build_space(space_file: str | os.PathLike | None = None,
                assignments: Iterable[str] = ()) -> SearchSpace:
    """The default space narrowed by a JSON file, then by ``name=value`` assignments.

    Example:
        >>> build_space(None, ["architecture=mmoe"]).architectures
        ('mmoe',)
    """
    overrides = load_space_file(space_file) if space_file else {}
    overrides.update(parse_assignments(assignments))
    return SearchSpace.default().narrow(overrides)


__all__ = ["ARCHITECTURES", "Dimension", "SearchSpace", "build_space", "load_space_file",
           "parse_assignments"]
