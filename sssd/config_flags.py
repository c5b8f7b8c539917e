"""Command-line flags derived from the configuration dataclasses (so defaults cannot drift)."""

from __future__ import annotations

import argparse
import dataclasses


def add_config_flags(parser: argparse.ArgumentParser, config_cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field, default and help taken from the class itself."""
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        kind = type(default) if default is not None else str
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=kind, default=default, help=f"(default: {default})")


def config_from_args(config_cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return config_cls(**{**values, **extra})
