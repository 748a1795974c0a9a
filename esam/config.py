"""One configuration convention for every run: a dataclass, YAML files, ``key=value`` overrides.

Each run kind (pretraining, fine-tuning, classification, ...) declares one dataclass: fields
with defaults, nested dataclasses for groups of settings, one docstring per field (the string
literal right below it, or ``field(metadata={"help": ...})``), checks in ``__post_init__``.
A run's configuration is resolved in layers, later ones winning::

    dataclass defaults  <  YAML file  <  explicit command-line flags  <  key=value overrides

* **YAML**: a file path, or a name registered for the kind: ``esam/configs/<kind>/<name>.yaml``
  shipped in the package (:func:`config_names` lists them; the kind is the dataclass's
  ``CONFIG_KIND`` class attribute or the ``kind`` argument). Nested dataclasses are merged
  field by field (a YAML that sets ``optim.lr`` keeps the other ``optim`` defaults); any other
  value, dicts included, is replaced as a whole.
* **Overrides**: ``key=value`` with dotted keys for nested fields (``optim.lr=1e-3``), or into a
  ``dict`` field (``extra.note=x``, merged into the dict). The value is read with YAML scalar
  rules (``true``, ``3``, ``0.5``, ``1e-3``, ``null`` or ``~`` or nothing for None, ``[1, 2]``),
  except that a field typed ``str`` (or a Literal of strings) takes the text as it is.
* **Checking**: every value is checked against its field's type: ``int``, ``float`` (ints
  accepted), ``bool``, ``str``, ``X | None``, ``Literal[...]``, ``tuple[X, ...]``,
  ``tuple[X, Y]``, ``list[X]``, ``dict[str, X]``, nested dataclasses, ``Any``. Unknown keys (with
  a did-you-mean suggestion), wrong types (naming key, expected type and value) and missing
  required keys are collected and raised together as one :class:`ConfigError`; then the
  dataclasses are constructed, so ``__post_init__`` checks see the final values (their
  ``ValueError`` becomes a :class:`ConfigError` naming the field group).

The resolved configuration is written beside the run's outputs as ``config.yaml``
(:func:`save_config`, atomic) and reads back to an equal object:
``load_config(type(cfg), path) == cfg``. Tuples are written as YAML lists.

PyYAML is imported only where YAML is read or written, so importing this module stays light.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import functools
import inspect
import os
import re
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from esam.errors import UserError
from esam.utils.io import write_text_atomic

T = TypeVar("T")

#: File name of the resolved configuration written beside a run's outputs.
CONFIG_FILENAME = "config.yaml"

#: Folder of the registered YAML files: ``<CONFIG_ROOT>/<kind>/<name>.yaml``.
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"

_NULLS = ("", "~", "null", "Null", "NULL")


class ConfigError(UserError, ValueError):
    """A configuration cannot be resolved; the message lists every problem found.

    Attributes:
        problems: one line per problem (unknown key, wrong type, missing key, failed check).
    """

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems = list(problems)
        head = "invalid configuration" + (f" ({source})" if source else "")
        if len(self.problems) == 1:
            text = f"{head}: {self.problems[0]}"
        else:
            items = "\n  - ".join(self.problems)
            text = f"{head}, {len(self.problems)} problems:\n  - {items}"
        super().__init__(text)


# ---------------------------------------------------------------------------------------------
# field introspection


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's description: its attribute docstring or ``metadata["help"]`` (which wins).

    Attribute docstrings are read from the source of ``cls`` and its dataclass bases; a class
    whose source is unavailable contributes only its metadata.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        node = ast.parse(source).body[0]
        if not isinstance(node, ast.ClassDef):
            continue
        for a, b in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = inspect.cleandoc(b.value.value)
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = str(f.metadata["help"])
    return docs


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    if f.default is not dataclasses.MISSING:
        return f.default
    return dataclasses.MISSING


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _strip_optional(tp: Any) -> Any:
    """``X`` for ``X | None``; the type itself otherwise."""
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _allows_none(tp: Any) -> bool:
    return tp is Any or (_is_union(tp) and type(None) in get_args(tp))


def _dataclass_type(tp: Any) -> type | None:
    inner = _strip_optional(tp)
    return inner if isinstance(inner, type) and dataclasses.is_dataclass(inner) else None


def _is_dict_type(tp: Any) -> bool:
    inner = _strip_optional(tp)
    return inner is dict or get_origin(inner) in (dict, Mapping)


def type_name(tp: Any) -> str:
    """A short readable name of a field type (``int``, ``float | None``, ``tuple[int, ...]``)."""
    if tp is type(None):
        return "None"
    if tp is Any:
        return "any"
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    if _is_union(tp):
        return " | ".join(type_name(a) for a in get_args(tp))
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    origin = get_origin(tp)
    name = getattr(origin, "__name__", str(origin))
    args = ", ".join("..." if a is Ellipsis else type_name(a) for a in get_args(tp))
    return f"{name}[{args}]"


@dataclass(frozen=True)
class FieldInfo:
    """One (possibly nested) field of a config dataclass, as the command line shows it.

    Attributes:
        key: dotted key (``optim.lr``).
        type: the annotated type.
        default: the default value (``dataclasses.MISSING`` for a required field).
        doc: the field's description (may be empty).
    """

    key: str
    type: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def iter_fields(cls: type, *, nested: bool = True) -> Iterator[FieldInfo]:
    """Every field of ``cls``; nested dataclass fields are expanded into their dotted leaves.

    A nested field's default is read from the parent's default instance, so a parent that
    overrides its child's defaults shows the values that apply.
    """
    yield from _iter_fields(cls, "", None, nested)


def _iter_fields(cls: type, prefix: str, base: Any, nested: bool) -> Iterator[FieldInfo]:
    hints = _hints(cls)
    docs = field_docs(cls)
    for name, f in _init_fields(cls).items():
        default = getattr(base, name) if base is not None else _default(f)
        sub = _dataclass_type(hints[name])
        if nested and sub is not None and not _allows_none(hints[name]):
            yield from _iter_fields(
                sub,
                f"{prefix}{name}.",
                default if default is not dataclasses.MISSING else None,
                nested,
            )
        else:
            yield FieldInfo(f"{prefix}{name}", hints[name], default, docs.get(name, ""))


def field_type_at(cls: type, key: str) -> Any | None:
    """The type of the field at dotted ``key`` (``None`` when no such field exists).

    A key below a ``dict`` field gives ``Any``.
    """
    tp: Any = cls
    for part in key.split("."):
        dc = _dataclass_type(tp)
        if dc is not None:
            fields = _init_fields(dc)
            if part not in fields:
                return None
            tp = _hints(dc)[part]
        elif _is_dict_type(tp):
            args = get_args(_strip_optional(tp))
            tp = args[1] if len(args) == 2 else Any
        elif tp is Any:
            return Any
        else:
            return None
    return tp


# ---------------------------------------------------------------------------------------------
# YAML


@functools.cache
def _yaml_classes() -> tuple[type, type]:
    """A safe Loader and Dumper that also read ``1e-3`` (no dot) as a float, as YAML 1.2 does."""
    import yaml

    exp_float = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    first = list("-+0123456789")

    class Loader(yaml.SafeLoader):
        pass

    class Dumper(yaml.SafeDumper):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exp_float, first)
    Dumper.add_implicit_resolver("tag:yaml.org,2002:float", exp_float, first)
    return Loader, Dumper


def parse_yaml_value(text: str) -> Any:
    """``text`` read as one YAML value (``3``, ``0.5``, ``1e-3``, ``true``, ``null``, ``[1, 2]``).

    Text that is not valid YAML is returned as it is (a string).
    """
    import yaml

    loader, _ = _yaml_classes()
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file gives ``{}``).

    Raises:
        ConfigError: the file is missing, is not valid YAML, or its top level is not a mapping.
    """
    import yaml

    loader, _ = _yaml_classes()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"cannot read config file {p}: {e.strerror or e}"]) from e
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError([f"{p} is not valid YAML: {e}"]) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{p}: the top level must be a mapping of keys, got {type(data).__name__}"]
        )
    return data


def config_to_dict(cfg: Any) -> Any:
    """A config dataclass as plain dicts, lists and scalars (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {
            f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init
        }
    if isinstance(cfg, Mapping):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [config_to_dict(v) for v in cfg]
    return cfg


def dump_config(cfg: Any) -> str:
    """The YAML text of a config dataclass (fields in declaration order)."""
    import yaml

    _, dumper = _yaml_classes()
    return yaml.dump(
        config_to_dict(cfg),
        Dumper=dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically; a folder gets ``<folder>/config.yaml``.

    Returns:
        The file written.
    """
    p = Path(path)
    if p.is_dir() or p.suffix == "":
        p = p / CONFIG_FILENAME
    return write_text_atomic(p, dump_config(cfg))


# ---------------------------------------------------------------------------------------------
# registered names


def config_names(kind: str, root: str | os.PathLike[str] | None = None) -> list[str]:
    """The registered config names of a run kind: ``<root>/<kind>/*.yaml`` stems, sorted."""
    folder = Path(root if root is not None else CONFIG_ROOT) / kind
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file())


def resolve_config_path(
    source: str | os.PathLike[str],
    kind: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """The YAML file of ``source``: an existing path, or a name registered for ``kind``.

    Anything with a ``.yaml`` / ``.yml`` suffix or a path separator is taken as a path (write
    ``./name`` for a file without either); anything else is a registered name.

    Raises:
        ConfigError: no such file, or an unknown name (with the registered names and a
            did-you-mean suggestion).
    """
    text = os.fspath(source)
    p = Path(text)
    if p.suffix in (".yaml", ".yml") or os.sep in text or "/" in text:
        if not p.is_file():
            raise ConfigError([f"config file {text} not found"])
        return p
    if kind is None:
        raise ConfigError(
            [f"config {text!r} is not a file, and this run kind has no registered names"]
        )
    names = config_names(kind, root)
    if text in names:
        return Path(root if root is not None else CONFIG_ROOT) / kind / f"{text}.yaml"
    listed = ", ".join(names) if names else "none"
    raise ConfigError(
        [f"unknown {kind} config {text!r}{_did_you_mean(text, names)}; registered: {listed}"]
    )


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# resolving


def split_override(text: str) -> tuple[str, str]:
    """``"optim.lr=1e-3"`` -> ``("optim.lr", "1e-3")``.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([f"override {text!r} is not of the form key=value{_path_hint(text)}"])
    return key, value


def _path_hint(text: str) -> str:
    """A hint for a stray argument that is a path: most often one of the files an unquoted
    glob expanded to, the rest of which the shell passed as further arguments."""
    if not (os.sep in text or os.path.exists(text)):
        return ""
    return (
        "; it looks like a path: if the shell expanded a glob into several arguments, "
        "quote it ('shards/sa_*.tar') or join the paths with commas, for an option that "
        "takes several (--data of esam finetune)"
    )


def parse_override_value(raw: str, tp: Any | None) -> Any:
    """The value of an override's text for a field of type ``tp`` (None: unknown field).

    ``str`` fields (and Literals of strings) take the text as it is, except a YAML null for a
    field that allows None; everything else is read as YAML (:func:`parse_yaml_value`).
    """
    if tp is not None and _is_text_type(_strip_optional(tp)):
        if raw.strip() in _NULLS and _allows_none(tp):
            return None
        return raw
    return parse_yaml_value(raw)


def _is_text_type(tp: Any) -> bool:
    if tp is str:
        return True
    return get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp))


def load_config(
    cls: type[T],
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    *,
    flags: Mapping[str, Any] | None = None,
    kind: str | None = None,
    root: str | os.PathLike[str] | None = None,
) -> T:
    """Resolve a config: defaults < ``source`` < ``flags`` < ``overrides``; check; construct.

    Args:
        cls: the run's config dataclass.
        source: a YAML path, a registered name (see :func:`resolve_config_path`), an already
            loaded mapping, or None for the defaults.
        overrides: ``key=value`` strings (dotted keys), applied in order.
        flags: dotted key -> value of explicit command-line options; string values are read as
            override text, others are used as they are.
        kind: where registered names are looked up (default ``cls.CONFIG_KIND``, if any).
        root: folder of registered configs (default :data:`CONFIG_ROOT`).

    Raises:
        ConfigError: every unknown key, wrong type, missing required key, or failed check.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    kind = kind if kind is not None else getattr(cls, "CONFIG_KIND", None)
    tree: dict[str, Any] = {}
    problems: list[str] = []
    label: str | None = None
    if isinstance(source, Mapping):
        _merge(cls, tree, source)
    elif source is not None:
        path = resolve_config_path(source, kind, root)
        label = str(path)
        _merge(cls, tree, read_yaml(path))
    for key, value in (flags or {}).items():
        if isinstance(value, str):
            value = parse_override_value(value, field_type_at(cls, key))
        _assign(cls, tree, key, value, problems)
    for text in overrides:
        try:
            key, raw = split_override(text)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        _assign(cls, tree, key, parse_override_value(raw, field_type_at(cls, key)), problems)
    result = _build(cls, tree, "", problems, None)
    if problems:
        raise ConfigError([_point_to_moved_key(cls, p) for p in problems], label)
    return typing.cast(T, result)


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """A config dataclass from a (nested) mapping, checked like :func:`load_config`."""
    return load_config(cls, data)


def _merge(cls: type | None, tree: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Lay ``data`` over ``tree``: nested dataclass fields merge key by key, others replace."""
    fields = _init_fields(cls) if cls is not None else {}
    hints = _hints(cls) if cls is not None else {}
    for key, value in data.items():
        sub = _dataclass_type(hints[key]) if key in fields else None
        if sub is not None and isinstance(value, Mapping):
            node = tree.get(key)
            if not isinstance(node, dict):
                node = tree[key] = {}
            _merge(sub, node, value)
        else:
            tree[key] = copy.deepcopy(value)


def _assign(cls: type, tree: dict[str, Any], key: str, value: Any, problems: list[str]) -> None:
    """Set dotted ``key`` in ``tree``; a key into a dict field starts from that dict's value."""
    parts = key.split(".")
    node = tree
    tp: Any = cls
    default: Any = None  # the value in effect at the current level, for dict fields
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        dc = _dataclass_type(tp)
        if dc is not None:
            fields = _init_fields(dc)
            if part not in fields:
                problems.append(_unknown(here, part, fields))
                return
            tp = _hints(dc)[part]
            f = fields[part]
            default = getattr(default, part) if default is not None else _default(f)
            if default is dataclasses.MISSING:
                default = None
            if _dataclass_type(tp) is not None:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
            elif _is_dict_type(tp) or tp is Any:
                if not isinstance(node.get(part), dict):
                    node[part] = (
                        dict(copy.deepcopy(default)) if isinstance(default, Mapping) else {}
                    )
            else:
                problems.append(
                    f"cannot set {key!r}: {here!r} is a {type_name(tp)} field, not a group of keys"
                )
                return
        else:  # inside a dict field
            if not isinstance(node.get(part), dict):
                node[part] = {}
            tp = Any
        node = node[part]
    node[parts[-1]] = value


def _unknown(key: str, name: str, fields: Mapping[str, Any]) -> str:
    return f"unknown key {key!r}{_did_you_mean(name, list(fields))}"


_BARE_UNKNOWN = re.compile(r"unknown key '([^']+)'")


def _point_to_moved_key(cls: type, problem: str) -> str:
    """An unknown key with no close name in its own group, whose last part is a key of
    another group (``train.optim.warmup_steps``): name that key."""
    match = _BARE_UNKNOWN.fullmatch(problem)
    if match is None:
        return problem
    leaf = match.group(1).rpartition(".")[2]
    elsewhere = [f.key for f in iter_fields(cls) if f.key.rpartition(".")[2] == leaf]
    if not elsewhere:
        return problem
    return f"{problem} (did you mean {' or '.join(map(repr, elsewhere))}?)"


_INVALID = object()


def _build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[str], base: Any) -> Any:
    """Construct ``cls`` from ``data`` over ``base`` (an instance giving unset fields), or
    record the problems and return ``_INVALID``."""
    fields = _init_fields(cls)
    hints = _hints(cls)
    start = len(problems)
    for name in data:
        if name not in fields:
            problems.append(_unknown(f"{prefix}{name}", str(name), fields))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name in data:
            sub = _dataclass_type(hints[name])
            value = data[name]
            if sub is not None and isinstance(value, Mapping):
                inner_base = getattr(base, name) if base is not None else _default(f)
                if not isinstance(inner_base, sub):
                    inner_base = None
                kwargs[name] = _build(sub, value, f"{key}.", problems, inner_base)
            else:
                kwargs[name] = _convert(value, hints[name], key, problems)
        elif base is not None:
            kwargs[name] = getattr(base, name)
        elif not _has_default(f):
            problems.append(f"missing required key {key!r} ({type_name(hints[name])})")
    if len(problems) > start:
        return _INVALID
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, UserError) as e:
        where = prefix.rstrip(".") or cls.__name__
        problems.append(f"{where}: {e}")
        return _INVALID


def _wrong(key: str, tp: Any, value: Any) -> str:
    return f"{key}: expected {type_name(tp)}, got {type(value).__name__} {value!r}"


def _convert(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """``value`` checked (and normalised: int -> float, list -> tuple) against ``tp``."""
    if tp is Any or tp is object:
        return value
    dc = tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None
    if dc is not None:
        if isinstance(value, dc):
            return value
        if isinstance(value, Mapping):
            return _build(dc, value, f"{key}.", problems, None)
        problems.append(_wrong(key, tp, value))
        return _INVALID
    origin, args = get_origin(tp), get_args(tp)
    if _is_union(tp):
        if value is None:
            if type(None) in args:
                return None
            problems.append(_wrong(key, tp, value))
            return _INVALID
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            trial_one: list[str] = []
            converted = _convert(value, options[0], key, trial_one)
            if not trial_one:
                return converted
            scalar = options[0] in (bool, int, float, str) or get_origin(options[0]) is Literal
            problems.extend([_wrong(key, tp, value)] if scalar else trial_one)
            return _INVALID
        for option in options:
            trial: list[str] = []
            converted = _convert(value, option, key, trial)
            if not trial:
                return converted
        problems.append(_wrong(key, tp, value))
        return _INVALID
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        choices = ", ".join(repr(a) for a in args)
        problems.append(f"{key}: expected one of {choices}, got {value!r}")
        return _INVALID
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, list | tuple):
            return _convert_sequence(value, tp, key, problems)
    elif origin in (dict, Mapping) or tp is dict:
        if isinstance(value, Mapping):
            vt = args[1] if len(args) == 2 else Any
            kt = args[0] if len(args) == 2 else Any
            mapping: dict[Any, Any] = {}
            n = len(problems)
            for k, v in value.items():
                _convert(k, kt, f"{key} key", problems)
                mapping[k] = _convert(v, vt, f"{key}.{k}", problems)
            return mapping if len(problems) == n else _INVALID
    else:
        problems.append(f"{key}: unsupported field type {type_name(tp)}")
        return _INVALID
    problems.append(_wrong(key, tp, value))
    return _INVALID


def _convert_sequence(value: Sequence[Any], tp: Any, key: str, problems: list[str]) -> Any:
    origin = get_origin(tp) or tp
    args = get_args(tp)
    n = len(problems)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            problems.append(
                f"{key}: expected {len(args)} values ({type_name(tp)}), got {list(value)!r}"
            )
            return _INVALID
        items = [
            _convert(v, a, f"{key}[{i}]", problems)
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        ]
    else:
        et = args[0] if args else Any
        items = [_convert(v, et, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if len(problems) > n:
        return _INVALID
    return tuple(items) if origin is tuple else list(items)
