"""Typed configuration: one dataclass per concern, YAML files and ``key=value`` overrides.

A config file is a YAML mapping whose top-level keys are the fields of :class:`Config`
(``seed``, ``data``, ``model``, ``train``, ...). Command-line overrides use dotted keys
(``train.lr=0.01``, ``data.alpha=0.1``) and YAML syntax for values (``true``, ``[a, b]``).
Every value is checked against the schema: an unknown key, a wrong type or an
out-of-range value raises :class:`~fedsign.errors.ConfigError` with a one-line message
that names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedsign.errors import ConfigError

SIGN_VARIANTS = ("hinge", "linear", "soft")
SCAFFOLD_VARIATES = ("gradient", "difference")
# Client objectives that need no server state, so any strategy can add them.
COMPOSABLE_OBJECTIVES = ("prox", "sign", "moon")
# FedPAN's position encoding when the strategy is fedpan and the model has none.
FEDPAN_DEFAULT_ENCODING = "multiplicative"


@dataclass
class DataConfig:
    """Dataset and its partitioning across clients."""

    dataset: str = "digits"
    root: str = "data"
    download: bool = False
    partitioner: str = "dirichlet"
    num_partitions: int = 10
    alpha: float = 0.5
    classes_per_partition: int = 2
    shards_per_partition: int = 2
    min_partition_size: int = 2
    local_test_fraction: float = 0.0

    def __post_init__(self) -> None:
        _require(self.alpha > 0, "data.alpha", self.alpha, "a number > 0")
        _require(self.num_partitions >= 1, "data.num_partitions", self.num_partitions, "an integer >= 1")
        _require(
            0.0 <= self.local_test_fraction < 1.0,
            "data.local_test_fraction",
            self.local_test_fraction,
            "a fraction in [0, 1)",
        )


@dataclass
class ModelConfig:
    """Model name from the registry and its initialisation options."""

    name: str = "cnn"
    bn_init: str = "ones"
    bn_init_std: float = 0.1
    position_encoding: str = "none"
    pe_amplitude: float = 0.1
    pe_period: float = 1.0

    def __post_init__(self) -> None:
        _require(self.bn_init in ("ones", "uniform", "gaussian"), "model.bn_init", self.bn_init,
                 "one of ones, uniform, gaussian")
        _require(self.bn_init_std > 0, "model.bn_init_std", self.bn_init_std, "a number > 0")
        _require(self.position_encoding in ("none", "multiplicative", "additive"),
                 "model.position_encoding", self.position_encoding,
                 "one of none, multiplicative, additive")


@dataclass
class TrainConfig:
    """Local SGD on each client; ``local_steps > 0`` replaces epochs by a step count."""

    local_epochs: int = 1
    local_steps: int = 0
    batch_size: int = 64
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-5
    clip_norm: float = 100.0
    warmup_rounds: int = 0

    def __post_init__(self) -> None:
        _require(self.lr > 0, "train.lr", self.lr, "a learning rate > 0")
        _require(self.local_epochs >= 1, "train.local_epochs", self.local_epochs, "an integer >= 1")
        _require(self.local_steps >= 0, "train.local_steps", self.local_steps, "an integer >= 0 (0 = use epochs)")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _require(0.0 <= self.momentum < 1.0, "train.momentum", self.momentum, "a number in [0, 1)")
        _require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.clip_norm >= 0, "train.clip_norm", self.clip_norm, "a number >= 0 (0 = no clipping)")
        _require(self.warmup_rounds >= 0, "train.warmup_rounds", self.warmup_rounds, "an integer >= 0")


@dataclass
class StrategyConfig:
    """Server strategy, client sampling and extra client objectives.

    ``name`` is a fedsign strategy (``fedavg``, ``fedsign``, ``fedprox``, ...), a Flower
    built-in by its lower-case name (``fedadam``, ``krum``, ...) or an import path
    ``module:Class`` of a user strategy; ``kwargs`` are keyword arguments for the built-in
    or user class. ``clients_per_round > 0`` samples that many clients per round and
    replaces ``fraction_train``. ``objectives`` adds client objectives to the strategy's
    own, e.g. ``[prox]`` with ``fedsign`` trains with FedProx's and FedSign's terms.
    """

    name: str = "fedavg"
    fraction_train: float = 1.0
    clients_per_round: int = 0
    weighted: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)
    objectives: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "strategy.name", self.name, "a strategy name or an import path module:Class")
        _require(0.0 < self.fraction_train <= 1.0, "strategy.fraction_train", self.fraction_train,
                 "a fraction in (0, 1]")
        _require(self.clients_per_round >= 0, "strategy.clients_per_round", self.clients_per_round,
                 "an integer >= 0 (0 = use fraction_train)")
        for objective in self.objectives:
            _require(objective in COMPOSABLE_OBJECTIVES, "strategy.objectives", self.objectives,
                     "a list of " + ", ".join(COMPOSABLE_OBJECTIVES)
                     + " (FedDyn and SCAFFOLD need their own server state: use strategy.name)")


@dataclass
class SignConfig:
    """FedSign's sign-alignment regulariser: CE + beta * R(theta; sign(theta_g))."""

    beta: float = 0.01
    variant: str = "hinge"
    kappa: float = 10.0
    groups: str = "all"
    skip_zero: bool = True
    # "sum" over coordinates [choice]: with "mean", beta is divided by the number of covered
    # coordinates D (tens of thousands here), which leaves useful betas far above 1.
    reduction: str = "sum"

    def __post_init__(self) -> None:
        _require(self.beta >= 0, "sign.beta", self.beta, "a number >= 0")
        _require(self.reduction in ("sum", "mean"), "sign.reduction", self.reduction, "one of sum, mean")
        _require(self.variant in SIGN_VARIANTS, "sign.variant", self.variant, "one of " + ", ".join(SIGN_VARIANTS))
        _require(self.kappa > 0, "sign.kappa", self.kappa, "a number > 0")


@dataclass
class ProxConfig:
    """FedProx's proximal term (mu/2)·||theta - theta_g||^2."""

    mu: float = 0.01

    def __post_init__(self) -> None:
        _require(self.mu >= 0, "prox.mu", self.mu, "a number >= 0")


@dataclass
class MoonConfig:
    """MOON's model-contrastive term mu·l_con with temperature tau."""

    mu: float = 1.0
    tau: float = 0.5

    def __post_init__(self) -> None:
        _require(self.mu >= 0, "moon.mu", self.mu, "a number >= 0")
        _require(self.tau > 0, "moon.tau", self.tau, "a temperature > 0")


@dataclass
class FedDynConfig:
    """FedDyn's dynamic regulariser coefficient alpha (the server divides by it)."""

    alpha: float = 0.01

    def __post_init__(self) -> None:
        _require(self.alpha > 0, "feddyn.alpha", self.alpha, "a number > 0")


@dataclass
class ScaffoldConfig:
    """SCAFFOLD's server step size and how clients refresh their control variate.

    ``variate`` is ``gradient`` (option I of the SCAFFOLD paper, Karimireddy et al. 2020: the mean local gradient at the
    global model, one extra pass over the client's data) or ``difference`` (option II:
    c_i - c + (theta_g - theta_i)/(K·lr), exact only for plain SGD without momentum).
    """

    server_lr: float = 1.0
    variate: str = "gradient"

    def __post_init__(self) -> None:
        _require(self.server_lr > 0, "scaffold.server_lr", self.server_lr, "a step size > 0")
        _require(self.variate in SCAFFOLD_VARIATES, "scaffold.variate", self.variate,
                 "one of " + ", ".join(SCAFFOLD_VARIATES))


@dataclass
class SignElectionConfig:
    """Sign-election aggregation: trim each client update, elect signs, merge agreeing updates."""

    keep_fraction: float = 1.0
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        _require(0.0 < self.keep_fraction <= 1.0, "sign_election.keep_fraction", self.keep_fraction,
                 "a fraction in (0, 1] (1 = no trimming)")
        _require(self.server_lr > 0, "sign_election.server_lr", self.server_lr, "a step size > 0")


@dataclass
class FederationConfig:
    """Rounds and evaluation schedule."""

    rounds: int = 20
    eval_every: int = 1
    client_eval: bool = False
    checkpoint_every: int = 0
    # Rounds whose returned client models are saved under client_models/ (off by default).
    keep_client_models: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(self.rounds >= 1, "federation.rounds", self.rounds, "an integer >= 1")
        _require(self.eval_every >= 1, "federation.eval_every", self.eval_every, "an integer >= 1")
        _require(self.checkpoint_every >= 0, "federation.checkpoint_every", self.checkpoint_every,
                 "an integer >= 0 (0 = final model only)")


@dataclass
class EngineConfig:
    """Flower simulation runtime on Ray.

    On CPU the runtime starts ``num_cpus`` Ray CPUs and one client actor per ``client_cpus``
    CPUs, each with ``torch_threads`` torch threads. With CUDA each client also reserves
    ``client_gpus`` of a GPU (0 = let the client use the GPU without reserving it).
    """

    num_cpus: int = 2
    client_cpus: float = 1.0
    client_gpus: float = 0.0
    torch_threads: int = 1
    timeout_s: float = 3600.0
    round_timeout_s: float = 600.0
    device: str = "auto"
    # Fault injection for testing failure handling: these partition ids raise in training.
    fail_partitions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(self.num_cpus >= 1, "engine.num_cpus", self.num_cpus, "an integer >= 1")
        _require(self.client_cpus > 0, "engine.client_cpus", self.client_cpus, "a number > 0")
        _require(self.client_gpus >= 0, "engine.client_gpus", self.client_gpus, "a number >= 0")
        _require(self.torch_threads >= 1, "engine.torch_threads", self.torch_threads, "an integer >= 1")
        _require(self.timeout_s > 0, "engine.timeout_s", self.timeout_s, "seconds > 0")
        _require(self.round_timeout_s > 0, "engine.round_timeout_s", self.round_timeout_s, "seconds > 0")
        _require(self.device in ("auto", "cpu", "cuda"), "engine.device", self.device, "one of auto, cpu, cuda")


@dataclass
class CentralConfig:
    """Central (non-federated) training, used to make models for the analysis studies."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_norm: float = 0.0
    lr_schedule: str = "constant"
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "central.epochs", self.epochs, "an integer >= 1")
        _require(self.batch_size >= 1, "central.batch_size", self.batch_size, "an integer >= 1")
        _require(self.lr > 0, "central.lr", self.lr, "a learning rate > 0")
        _require(0.0 <= self.momentum < 1.0, "central.momentum", self.momentum, "a number in [0, 1)")
        _require(self.weight_decay >= 0, "central.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.clip_norm >= 0, "central.clip_norm", self.clip_norm, "a number >= 0 (0 = no clipping)")
        _require(self.lr_schedule in ("constant", "cosine"), "central.lr_schedule", self.lr_schedule,
                 "one of constant, cosine")
        _require(self.checkpoint_every >= 0, "central.checkpoint_every", self.checkpoint_every,
                 "an integer >= 0 (0 = first and last model only)")


@dataclass
class Config:
    """The whole configuration of a run: federated (``fedsign run``) or central (``fedsign train``)."""

    seed: int = 0
    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    sign: SignConfig = field(default_factory=SignConfig)
    prox: ProxConfig = field(default_factory=ProxConfig)
    moon: MoonConfig = field(default_factory=MoonConfig)
    feddyn: FedDynConfig = field(default_factory=FedDynConfig)
    scaffold: ScaffoldConfig = field(default_factory=ScaffoldConfig)
    sign_election: SignElectionConfig = field(default_factory=SignElectionConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    central: CentralConfig = field(default_factory=CentralConfig)

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        # FedPAN is FedAvg on models with position encodings, so choosing the strategy
        # turns them on; the resolved config saved with the run shows the encoding used.
        if self.strategy.name == "fedpan" and self.model.position_encoding == "none":
            self.model.position_encoding = FEDPAN_DEFAULT_ENCODING

    def to_dict(self) -> dict[str, Any]:
        """Return the config as nested plain dictionaries."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """Return the config as a YAML document that :func:`load_config` reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def short_hash(self) -> str:
        """Return 8 hex digits of a SHA-256 over the canonical JSON of the config."""
        canonical = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:8]

    def run_name(self, kind: str = "federated") -> str:
        """Return a run directory name: a readable prefix plus the config hash.

        ``kind`` is ``federated`` (prefix names strategy and partition) or ``central``.
        """
        if self.name:
            prefix = self.name
        elif kind == "central":
            prefix = "-".join([self.data.dataset, self.model.name, "central", f"s{self.seed}"])
        else:
            prefix = "-".join([
                self.data.dataset, self.model.name, strategy_label(self.strategy.name),
                _partition_label(self.data), f"s{self.seed}",
            ])
        return f"{prefix}-{self.short_hash()}"


def strategy_label(name: str) -> str:
    """Return ``strategy.name`` fit for a folder name: ``pkg.mod:MyStrategy`` gives ``MyStrategy``."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name.rpartition(":")[2] or name)


def _partition_label(data: DataConfig) -> str:
    if data.partitioner == "dirichlet":
        return f"dir{data.alpha:g}"
    if data.partitioner == "pathological":
        return f"path{data.classes_per_partition}"
    return data.partitioner


def _require(condition: bool, key: str, value: object, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"invalid value {key}={value!r}: expected {allowed}")


# ---------------------------------------------------------------------------------------
# Building dataclasses from plain mappings, with type checks
# ---------------------------------------------------------------------------------------


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and value types.

    ``prefix`` is the dotted path of ``values`` inside the whole config, used in messages.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"invalid value {prefix.rstrip('.') or 'config'}={values!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            allowed = ", ".join(fields)
            raise ConfigError(f"unknown key '{prefix}{key}': allowed keys here are {allowed}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(annotation: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value if value is not None else {}, key + ".")
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"invalid value {key}={value!r}: expected {annotation}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"invalid value {key}={value!r}: expected a list")
        return [_coerce(item_type, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"invalid value {key}={value!r}: expected a mapping")
        return dict(value)
    return _coerce_scalar(annotation, value, key)


def _coerce_scalar(annotation: Any, value: Any, key: str) -> Any:
    if annotation is Any:
        return value
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"invalid value {key}={value!r}: expected null")
    # bool is a subclass of int, so it is checked first and never accepted as a number.
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"invalid value {key}={value!r}: expected true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"invalid value {key}={value!r}: expected an integer")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"invalid value {key}={value!r}: expected a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        # A YAML scalar such as 1e-3 or 16 given for a string field is kept as its text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"invalid value {key}={value!r}: expected a string")
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


# ---------------------------------------------------------------------------------------
# Files and overrides
# ---------------------------------------------------------------------------------------


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=0.1", "seed=3"]`` into a nested mapping with YAML-typed values."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"invalid override {item!r}: expected KEY=VALUE, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"invalid override {item!r}: the value is not valid YAML ({error.problem})") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"invalid override {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``update`` (neither is modified)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (see the files in configs/)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must contain a mapping of keys, found {type(values).__name__}")
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (or the defaults), apply overrides and validate.

    Parameters
    ----------
    path : str or Path, optional
        YAML file; without it the schema defaults are used.
    overrides : list of str, optional
        Dotted ``key=value`` items applied after the file.

    Returns
    -------
    Config
        The validated configuration.
    """
    values = read_yaml(path) if path is not None else {}
    values = merge(values, parse_overrides(overrides or []))
    return from_dict(Config, values)


def config_from_yaml_text(text: str) -> Config:
    """Rebuild a config from the YAML text written by :meth:`Config.to_yaml`."""
    return from_dict(Config, yaml.safe_load(text) or {})
