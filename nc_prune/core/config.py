"""``WeightPruningConfig``: INC 2.x keys and defaults, validated strictly.

A config holds global settings and an optional list of per-pruner groups. Each dict in
``pruning_configs`` describes one pruner (its layers, pattern and schedule); any key it leaves out is
taken from the globals. Nothing the caller passes is mutated: dicts and lists are copied.

>>> cfg = WeightPruningConfig(
...     [{"op_names": ["fc1"], "pattern": "2:4", "target_sparsity": 0.5}],
...     pruning_type="magnitude", start_step=0, end_step=10)
>>> [g["pattern"] for g in cfg.groups]
['2:4']
>>> cfg.groups[0]["pruning_type"]
'magnitude'
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import numbers
import re
import unicodedata
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from . import parameters
from .errors import ConfigError, ConfigTypeError
from .registry import CRITERIA, PATTERNS, PRUNERS, REGULARIZERS, SPARSITY_DECAYS

#: INC 2.x keys with their defaults. Lists and dicts are copied for each config.
DEFAULTS: Dict[str, Any] = {
    "target_sparsity": 0.9,
    "pruning_type": "snip_momentum",
    "pattern": "4x1",
    "op_names": [],
    "excluded_op_names": [],
    "start_step": 0,
    "end_step": 0,
    "pruning_scope": "global",
    "pruning_frequency": 1,
    "min_sparsity_ratio_per_op": 0.0,
    "max_sparsity_ratio_per_op": 0.98,
    "sparsity_decay_type": "exp",
    "pruning_op_types": ["Conv", "Linear"],
    "criterion_reduce_type": "mean",
    "reg_type": None,
    "parameters": {"reg_coeff": 0.0},
    "low_memory_usage": False,
    "resume_from_pruned_checkpoint": False,
    "backend": None,
    "progressive_steps": 4,
    "progressive_type": "scores",
    "global_target": "weights",
}

PRUNING_SCOPES = ("global", "local")
REDUCE_TYPES = ("mean", "sum", "max")
PROGRESSIVE_TYPES = ("scores", "linear")
GLOBAL_TARGETS = ("weights", "units")
BACKENDS = (None, "pytorch", "torch", "keras", "tensorflow", "itex")

# One spelling rule for every pattern string, wherever it is read (configs, compute_masks, the drop-in):
# ASCII digits without leading zeros, a lowercase "x" or ":", nothing around it.
_NXM = re.compile(r"([1-9][0-9]*|channel)x([1-9][0-9]*|channel)", re.ASCII)
_NINM = re.compile(r"([1-9][0-9]*):([1-9][0-9]*)", re.ASCII)
_LOOSE = re.compile(r"\s*(\d+|channel)\s*([xX×:])\s*(\d+|channel)\s*")


def _canonical_spelling(text: str) -> Optional[str]:
    """The exact spelling a loosely written pattern stands for (``' 04X1 '`` → ``'4x1'``), else None."""
    m = _LOOSE.fullmatch(unicodedata.normalize("NFKC", text))
    if not m:
        return None
    a, sep, b = m.groups()
    a, b = (v if v == "channel" else str(int(v)) for v in (a, b))  # int() reads any Unicode digit
    return f"{a}{':' if sep == ':' else 'x'}{b}"


def parse_pattern(pattern: str) -> Tuple[str, Tuple[Any, Any]]:
    """Split a pattern string into its registry name and its two sizes.

    ``"4x1"`` → ``("NxM", (4, 1))``; ``"1xchannel"`` → ``("NxM", (1, "channel"))``;
    ``"2:4"`` → ``("N:M", (2, 4))``; a name registered with :func:`register_pattern` → ``(name, ())``.

    Patterns are written exactly: ASCII digits without leading zeros, a lowercase ``x`` or ``:``, no
    spaces. ``"04x1"``, ``" 4x1"`` or ``"４x1"`` are errors that name the spelling meant (``'4x1'``).
    """
    if not isinstance(pattern, str):
        raise ConfigTypeError(
            f"pattern must be a string such as '4x1', '1xchannel', 'channelx1' or '2:4', "
            f"got {type(pattern).__name__} {pattern!r}"
        )
    m = _NXM.fullmatch(pattern)
    if m:
        a, b = (int(v) if v != "channel" else v for v in m.groups())
        if a == "channel" and b == "channel":
            raise ConfigError("pattern 'channelxchannel' would prune whole layers; use '1xchannel' or 'channelx1'")
        return "NxM", (a, b)
    m = _NINM.fullmatch(pattern)
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not n < mm:
            raise ConfigError(
                f"pattern {pattern!r}: N:M needs 1 <= N < M (N weights pruned out of every M), got N={n}, M={mm}"
            )
        return "N:M", (n, mm)
    if pattern in PATTERNS and pattern not in ("NxM", "N:M"):
        return pattern, ()
    meant = _canonical_spelling(pattern)
    if meant is not None and re.fullmatch(r"0[x:].*|.*[x:]0", meant):
        raise ConfigError(f"pattern {pattern!r}: block sizes and N, M must be at least 1")
    if meant is not None and meant != pattern:
        raise ConfigError(
            f"pattern {pattern!r} is not written exactly; write {meant!r} (ASCII digits without leading zeros, "
            f"a lowercase 'x' or ':', no spaces)"
        )
    raise ConfigError(
        f"pattern {pattern!r} is not understood; use 'AxB' (A output rows x B input columns, e.g. '4x1', '1x1'), "
        f"'Nxchannel' (N whole output channels), 'channelxM' (M whole input channels), 'N:M' (e.g. '2:4'), "
        f"or a registered pattern "
        f"({', '.join(n for n in PATTERNS.names() if n not in ('NxM', 'N:M')) or 'none registered'})"
    )


# --------------------------------------------------------------------------------------------
# pruning types
# --------------------------------------------------------------------------------------------
PROGRESSIVE_SUFFIX = "_progressive"


def resolve_pruning_type(name: str) -> Tuple[str, Optional[str]]:
    """Map a ``pruning_type`` to ``(pruner registry name, criterion registry name or None)``.

    A criterion name (``"snip_momentum"``) selects the ``"basic"`` pruner with that criterion, the same
    name with ``"_progressive"`` selects the ``"progressive"`` pruner, and any other registered pruner
    (``"pattern_lock"`` or one of your own) is used as it is.
    """
    if not isinstance(name, str):
        raise ConfigTypeError(f"pruning_type must be a string, got {type(name).__name__} {name!r}")
    if name in CRITERIA:
        return "basic", name
    if name.endswith(PROGRESSIVE_SUFFIX) and name[: -len(PROGRESSIVE_SUFFIX)] in CRITERIA:
        return "progressive", name[: -len(PROGRESSIVE_SUFFIX)]
    if name in PRUNERS and name not in ("basic", "progressive"):
        return name, None
    raise ConfigError(
        f"pruning_type {name!r} is not available; choose one of {', '.join(valid_pruning_types())}"
        + _suggest(name, valid_pruning_types())
    )


def valid_pruning_types() -> List[str]:
    crit = CRITERIA.names()
    others = [p for p in PRUNERS.names() if p not in ("basic", "progressive")]
    return crit + [c + PROGRESSIVE_SUFFIX for c in crit] + others


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _suggest(value: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(group: Optional[int]) -> str:
    return "WeightPruningConfig" if group is None else f"pruning_configs[{group}]"


def _number(key: str, value: Any, group: Optional[int], lo: float, hi: float, *, lo_open=False, hi_open=False) -> float:
    # numbers.Real takes numpy scalars too (np.float32(0.5)); a bool is an int but never a number here
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigTypeError(f"{_where(group)}: {key} must be a number, got {type(value).__name__} {value!r}")
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok or math.isnan(value):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ConfigError(f"{_where(group)}: {key}={value!r} is outside its range {left}{lo}, {hi}{right}")
    return float(value)


def _integer(key: str, value: Any, group: Optional[int], lo: int, hi: Optional[int] = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ConfigTypeError(f"{_where(group)}: {key} must be an integer, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ConfigError(f"{_where(group)}: {key}={value} must be >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{_where(group)}: {key}={value} must be <= {hi}")
    return int(value)


def _choice(key: str, value: Any, group: Optional[int], choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"{_where(group)}: {key}={value!r} is not one of {', '.join(map(repr, choices))}" + _suggest(value, choices)
        )
    return value


def _string_list(key: str, value: Any, group: Optional[int], *, regex: bool) -> List[str]:
    if isinstance(value, str):
        raise ConfigTypeError(
            f"{_where(group)}: {key} must be a list of strings, got the string {value!r}; "
            f"write {key}=[{value!r}]"
        )
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigTypeError(f"{_where(group)}: {key} must be a list of strings, got {value!r}")
    if regex:
        for v in value:
            try:
                re.compile(v)
            except re.error as exc:
                raise ConfigError(f"{_where(group)}: {key} entry {v!r} is not a valid regular expression: {exc}") from None
    return list(value)


def _bool(key: str, value: Any, group: Optional[int]) -> bool:
    if not isinstance(value, bool):
        raise ConfigTypeError(f"{_where(group)}: {key} must be True or False, got {value!r}")
    return value


def _parameters(value: Any, group: Optional[int]) -> Dict[str, Any]:
    """The dict itself; its keys depend on the group's pruner, criterion and regularizer (see ``_resolve``)."""
    if not isinstance(value, Mapping):
        raise ConfigTypeError(f"{_where(group)}: parameters must be a dict such as {{'reg_coeff': 1e-4}}, got {value!r}")
    return dict(value)


def _located(parse: Callable[[Any], Any]) -> Callable[[str, Any, Optional[int]], Any]:
    """A check from a parser whose message lacks the config location: prefix it, keep the value."""

    def check(key: str, value: Any, group: Optional[int]) -> Any:
        try:
            parse(value)
        except (ConfigError, ConfigTypeError) as exc:
            raise type(exc)(f"{_where(group)}: {exc}") from None
        return value

    return check


_CHECKS: Dict[str, Callable[[str, Any, Optional[int]], Any]] = {
    "target_sparsity": lambda k, v, g: _number(k, v, g, 0.0, 1.0, hi_open=True),
    "pruning_type": _located(resolve_pruning_type),
    "pattern": _located(parse_pattern),
    "op_names": lambda k, v, g: _string_list(k, v, g, regex=True),
    "excluded_op_names": lambda k, v, g: _string_list(k, v, g, regex=True),
    "start_step": lambda k, v, g: _integer(k, v, g, 0),
    "end_step": lambda k, v, g: _integer(k, v, g, 0),
    "pruning_scope": lambda k, v, g: _choice(k, v, g, PRUNING_SCOPES),
    "pruning_frequency": lambda k, v, g: _integer(k, v, g, 1),
    "min_sparsity_ratio_per_op": lambda k, v, g: _number(k, v, g, 0.0, 1.0),
    "max_sparsity_ratio_per_op": lambda k, v, g: _number(k, v, g, 0.0, 1.0),
    "sparsity_decay_type": lambda k, v, g: _choice(k, v, g, SPARSITY_DECAYS.names()),
    "pruning_op_types": lambda k, v, g: _string_list(k, v, g, regex=False),
    "criterion_reduce_type": lambda k, v, g: _choice(k, v, g, REDUCE_TYPES),
    "reg_type": lambda k, v, g: _choice(k, v, g, [None] + REGULARIZERS.names()),
    "parameters": lambda k, v, g: _parameters(v, g),
    "low_memory_usage": lambda k, v, g: _bool(k, v, g),
    "resume_from_pruned_checkpoint": lambda k, v, g: _bool(k, v, g),
    "backend": lambda k, v, g: _choice(k, v, g, BACKENDS),
    "progressive_steps": lambda k, v, g: _integer(k, v, g, 1, hi=254),
    "progressive_type": lambda k, v, g: _choice(k, v, g, PROGRESSIVE_TYPES),
    "global_target": lambda k, v, g: _choice(k, v, g, GLOBAL_TARGETS),
}
if set(_CHECKS) != set(DEFAULTS):  # pragma: no cover - guards edits to this module
    raise RuntimeError("nc_prune.core.config: every default key needs a check")


#: INC's flat spelling of ``parameters={"reg_coeff": ...}``; accepted and moved into ``parameters``.
FLAT_PARAMETERS = ("reg_coeff",)


def _check_keys(d: Mapping[str, Any], group: Optional[int]) -> Dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ConfigTypeError(f"{_where(group)} must be a dict of config keys, got {type(d).__name__} {d!r}")
    out: Dict[str, Any] = {}
    for key, value in d.items():
        if key in FLAT_PARAMETERS:
            continue
        if key not in _CHECKS:
            raise ConfigError(
                f"{_where(group)}: unknown key {key!r}{_suggest(key, list(DEFAULTS) + list(FLAT_PARAMETERS))}; "
                f"valid keys: {', '.join(DEFAULTS)}"
            )
        out[key] = _CHECKS[key](key, copy.deepcopy(value), group)
    for key in FLAT_PARAMETERS:
        if key in d:
            params = out.setdefault("parameters", {})
            if key in params and params[key] != d[key]:
                raise ConfigError(
                    f"{_where(group)}: {key}={d[key]!r} and parameters[{key!r}]={params[key]!r} disagree; "
                    f"give it once, as parameters={{{key!r}: ...}}"
                )
            params[key] = copy.deepcopy(d[key])
    return out


def _merge(*layers: Mapping[str, Any]) -> Dict[str, Any]:
    """Later layers win key by key; ``parameters`` dicts are merged key by key too."""
    out: Dict[str, Any] = {}
    params: Dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "parameters":
                params.update(copy.deepcopy(value))
            else:
                out[key] = copy.deepcopy(value)
    out["parameters"] = params
    return out


def _classes(resolved: Mapping[str, Any]) -> Tuple[Any, Any, Any, Any]:
    """The pruner, criterion, regularizer and pattern classes a resolved group names (criterion/regularizer may
    be None)."""
    pruner, criterion = resolve_pruning_type(resolved["pruning_type"])
    reg = resolved["reg_type"]
    return (PRUNERS.get(pruner), CRITERIA.get(criterion) if criterion else None,
            REGULARIZERS.get(reg) if reg else None, PATTERNS.get(parse_pattern(resolved["pattern"])[0]))


def _resolve(group: Mapping[str, Any], globals_: Mapping[str, Any], index: Optional[int]) -> Dict[str, Any]:
    """A group with every key: its own value, else the explicit global, else the default; checked as a whole."""
    resolved = _merge(DEFAULTS, globals_, group)
    pruner, criterion, reg, pattern = _classes(resolved)
    name, crit = resolve_pruning_type(resolved["pruning_type"])
    owners = parameters.describe(pruner, criterion, reg, pattern,
                                 {"pruner": name, "criterion": crit, "regularizer": resolved["reg_type"],
                                  "pattern": resolved["pattern"]})
    resolved["parameters"] = parameters.resolve(resolved["parameters"],
                                                parameters.declared([pruner, criterion, reg, pattern], resolved),
                                                _where(index), owners)
    _check_group(resolved, index, uses_target=getattr(pruner, "uses_target", True))
    for cls in (pruner, criterion, reg, pattern):
        reason = getattr(cls, "config_error", lambda r: None)(resolved)
        if reason:
            raise ConfigError(f"{_where(index)}: {reason}")
    return resolved


def _check_group(resolved: Dict[str, Any], group: Optional[int], uses_target: bool = True) -> None:
    """Rules that tie several keys together (``uses_target=False``: the pruner ignores target_sparsity)."""
    where = _where(group)
    if resolved["end_step"] < resolved["start_step"]:
        raise ConfigError(
            f"{where}: end_step={resolved['end_step']} is before start_step={resolved['start_step']}; "
            f"set end_step >= start_step (equal means one-shot pruning at start_step)"
        )
    lo, hi = resolved["min_sparsity_ratio_per_op"], resolved["max_sparsity_ratio_per_op"]
    if lo > hi:
        raise ConfigError(f"{where}: min_sparsity_ratio_per_op={lo} is above max_sparsity_ratio_per_op={hi}")
    kind, sizes = parse_pattern(resolved["pattern"])
    if kind == "N:M":
        n, m = sizes
        if uses_target and resolved["target_sparsity"] > n / m + 1e-12:
            raise ConfigError(
                f"{where}: target_sparsity={resolved['target_sparsity']} is above what pattern "
                f"{resolved['pattern']!r} can reach ({n}/{m} = {n / m:g}); lower target_sparsity or use a "
                f"pattern with a larger N"
            )


class WeightPruningConfig:
    """Pruning settings in INC 2.x form.

    Args:
        pruning_configs: a list of dicts, one per pruner group; a key a group leaves out comes from the
            globals. ``None`` (the default) means one group made of the globals.
        **globals: any key of :data:`DEFAULTS`.

    Raises:
        ConfigError: unknown key, value outside its range, or keys that contradict each other.
        ConfigTypeError: a value of the wrong type, e.g. ``pruning_op_types="Linear"``.
    """

    def __init__(self, pruning_configs: Optional[List[Mapping[str, Any]]] = None, **globals: Any) -> None:
        self._globals = _check_keys(globals, None)
        if pruning_configs is None:
            pruning_configs = [{}]
        if isinstance(pruning_configs, Mapping) or not isinstance(pruning_configs, (list, tuple)):
            raise ConfigTypeError(
                f"pruning_configs must be a list of dicts (one per pruner group), got {type(pruning_configs).__name__}"
            )
        if len(pruning_configs) == 0:
            raise ConfigError("pruning_configs is an empty list; pass None for one group built from the globals")
        self._groups = [_check_keys(g, i) for i, g in enumerate(pruning_configs)]
        single = len(self._groups) == 1 and not self._groups[0]
        self._resolved = [_resolve(g, self._globals, None if single else i) for i, g in enumerate(self._groups)]

    # ---- INC attribute names -----------------------------------------------------------------
    @property
    def pruning_configs(self) -> List[Dict[str, Any]]:
        """The groups exactly as given (copies), without the globals merged in."""
        return copy.deepcopy(self._groups)

    @property
    def groups(self) -> List[Dict[str, Any]]:
        """Every group with all keys resolved: group value, else explicit global, else default.

        ``parameters`` is merged key by key the same way, and holds every key the group's pruner,
        criterion and regularizer declare, with its default where none was given.
        """
        return copy.deepcopy(self._resolved)

    def __getattr__(self, key: str) -> Any:
        # Global values are readable as attributes, as in INC (cfg.target_sparsity).
        if key.startswith("_"):
            raise AttributeError(key)
        if key in DEFAULTS:
            return copy.deepcopy(self._globals.get(key, DEFAULTS[key]))
        raise AttributeError(f"WeightPruningConfig has no attribute {key!r}")

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict; ``WeightPruningConfig.from_dict(cfg.to_dict()) == cfg``."""
        out: Dict[str, Any] = {"pruning_configs": copy.deepcopy(self._groups)}
        out.update(copy.deepcopy(self._globals))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WeightPruningConfig":
        if not isinstance(data, Mapping):
            raise ConfigTypeError(f"from_dict needs a dict, got {type(data).__name__}")
        data = dict(data)
        groups = data.pop("pruning_configs", None)
        return cls(groups, **data)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "WeightPruningConfig":
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WeightPruningConfig):
            return NotImplemented
        return self.groups == other.groups

    def __repr__(self) -> str:
        return f"WeightPruningConfig({self.to_dict()!r})"
