"""Command-line arguments generated from a config dataclass (see :mod:`esam.config`).

A run's subcommand declares no field twice: :func:`add_config_arguments` adds

* ``--config NAME_OR_YAML``: a YAML file, or a name registered for the run kind;
* one ``--flag`` per chosen field (all by default; nested fields as ``--optim.lr``), whose help
  is the field's docstring and default; booleans get ``--flag`` / ``--no-flag``, Literals
  ``choices``; lists and tuples take comma-separated values (``--betas 0.9,0.95``) or a YAML
  list (``--betas "[0.9, 0.95]"``);
* positional ``key=value`` overrides for any field, nested ones by dotted key.

:func:`config_from_args` then resolves the config with the precedence
``defaults < --config YAML < explicit --flags < key=value``: a flag counts only when given
(argparse defaults are suppressed, so an unset flag never hides a YAML value), and all values
are checked by :func:`esam.config.load_config`, which reports every problem at once.

Example::

    p = sub.add_parser("pretrain")
    add_config_arguments(p, SamiConfig, fields=("output_dir", "epochs", "optim.lr"))
    ...
    cfg = config_from_args(SamiConfig, args)

    esam pretrain --config vitt --epochs 10 optim.weight_decay=0.1
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from esam.config import (
    FieldInfo,
    iter_fields,
    load_config,
    type_name,
)

_SPEC_ATTR = "_esam_config_flags"
OVERRIDES_DEST = "overrides"
CONFIG_DEST = "config"


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _dest(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def _strip_optional(tp: Any) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    if type(None) in get_args(tp) and len(args) == 1:
        return args[0]
    return tp


def _help(info: FieldInfo) -> str:
    doc = " ".join(info.doc.split()).replace("``", "") if info.doc else ""
    doc = doc.replace("%", "%%")
    if info.required:
        tail = f"({type_name(info.type)}, required)"
    else:
        default = info.default
        if isinstance(default, tuple | list):
            default = ",".join(str(v) for v in default)
        tail = f"({type_name(info.type)}, default: {str(default).replace('%', '%%')})"
    return f"{doc} {tail}" if doc else tail


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    fields: Sequence[str] | None = None,
    config_option: bool = True,
    overrides: bool = True,
) -> None:
    """Add ``--config``, one flag per chosen field and the positional ``key=value`` overrides.

    Args:
        parser: the (sub)command's parser.
        cls: the run's config dataclass.
        fields: dotted keys to expose as flags (a group's key exposes all its fields); None
            exposes every field. Fields without a flag stay reachable by ``key=value``.
        config_option: add ``--config NAME_OR_YAML``.
        overrides: add the positional ``key=value`` arguments.

    Raises:
        ValueError: a name in ``fields`` is not a field of ``cls``.
    """
    infos = list(iter_fields(cls))
    if fields is not None:
        keys = {i.key for i in infos}
        wanted = list(fields)
        unknown = [
            k for k in wanted if k not in keys and not any(x.startswith(k + ".") for x in keys)
        ]
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
        infos = [i for i in infos if any(i.key == k or i.key.startswith(k + ".") for k in wanted)]
    kind = getattr(cls, "CONFIG_KIND", None)
    if config_option:
        registered = f" or a name registered under esam/configs/{kind}/" if kind else ""
        parser.add_argument(
            "--config",
            dest=CONFIG_DEST,
            metavar="NAME_OR_YAML",
            default=None,
            help=f"YAML config file{registered}; explicit flags and key=value override it",
        )
    spec: dict[str, str] = dict(getattr(parser, _SPEC_ATTR, {}))
    for info in infos:
        spec[_dest(info.key)] = info.key
        _add_field(parser, info)
    setattr(parser, _SPEC_ATTR, spec)
    parser.set_defaults(**{_SPEC_ATTR: spec})
    if overrides:
        parser.add_argument(
            OVERRIDES_DEST,
            nargs="*",
            metavar="KEY=VALUE",
            default=[],
            help="override any field, nested ones by dotted key (optim.lr=1e-3); values read as "
            "YAML; applied last, in order",
        )


def _add_field(parser: argparse.ArgumentParser, info: FieldInfo) -> None:
    tp = _strip_optional(info.type)
    kwargs: dict[str, Any] = {
        "dest": _dest(info.key),
        "default": argparse.SUPPRESS,
        "help": _help(info),
    }
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["metavar"] = info.key.rsplit(".", 1)[-1].upper()
        if get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp)):
            kwargs["choices"] = list(get_args(tp))
            kwargs.pop("metavar")
        elif get_origin(tp) in (tuple, list) or tp in (tuple, list):
            kwargs["type"] = _list_text
    parser.add_argument(_flag(info.key), **kwargs)


def _list_text(text: str) -> str:
    """A comma-separated list as YAML flow text (``0.9,0.95`` -> ``[0.9,0.95]``)."""
    stripped = text.strip()
    if stripped.startswith("["):
        return stripped
    return f"[{stripped}]" if stripped else "[]"


def explicit_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted key -> value of the generated flags given on the command line (text or bool)."""
    spec: dict[str, str] = getattr(args, _SPEC_ATTR, {})
    return {key: getattr(args, dest) for dest, key in spec.items() if hasattr(args, dest)}


def config_from_args(
    cls: type,
    args: argparse.Namespace,
    *,
    aliases: Mapping[str, str] | None = None,
    extra_flags: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """The config of ``cls`` resolved from parsed arguments (see the module's precedence).

    Args:
        cls: the config dataclass.
        args: parsed arguments of a parser with :func:`add_config_arguments`.
        aliases: hand-written flag dest -> dotted key (``{"data": "data.path"}``), applied
            when the flag was given, as if the generated flag had been.
        extra_flags: further dotted key -> value set at flag precedence (e.g.
            ``{"train.resume": "auto"}`` for ``--resume``).
        kwargs: go to :func:`esam.config.load_config` (e.g. ``kind``, ``root``).

    Raises:
        esam.config.ConfigError: every problem of the resolved values.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    flags = explicit_flags(args)
    for dest, key in (aliases or {}).items():
        value = getattr(args, dest, None)
        if value is not None:
            flags[key] = value
    flags.update(extra_flags or {})
    return load_config(
        cls,
        getattr(args, CONFIG_DEST, None),
        list(getattr(args, OVERRIDES_DEST, []) or []),
        flags=flags,
        **kwargs,
    )
