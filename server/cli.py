"""``axon serve``'s command line: one flag per ``ServerSettings`` field, generated from it."""

from __future__ import annotations

import argparse
import os
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from axon.errors import UsageError
from axon.server.config import ENV_PREFIX, ServerSettings, load_settings


class SettingsError(UsageError):
    """Settings that do not validate; the message lists every problem."""


def configure(command: str, serve: argparse.ArgumentParser) -> None:
    """``axon serve``'s arguments and handler (see axon/cli.py)."""
    serve.description = (
        "Serve every model in a model repository over gRPC (Open Inference Protocol + axon.v1 "
        f"classification). Every flag can also be set as an {ENV_PREFIX}<FLAG> environment "
        "variable or in the --config file.")
    serve.add_argument("--config", type=Path, help="settings file (TOML or JSON) with the "
                       "same names as the flags, e.g. max_queue_delay_ms = 1.5")
    for name, field in ServerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} (default: {_show(field.default)})"
        annotation = _required(field.annotation)
        if annotation is bool:
            serve.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif typing.get_origin(annotation) is tuple:
            # Split by the settings' own validator, as for environment variables.
            serve.add_argument(flag, dest=name, metavar="A,B",
                               help=help_text)
        elif typing.get_origin(annotation) is typing.Literal:
            serve.add_argument(flag, dest=name, choices=typing.get_args(annotation),
                               help=help_text)
        elif annotation is SecretStr:
            serve.add_argument(flag, dest=name, metavar="SECRET", help=help_text)
        else:
            serve.add_argument(flag, dest=name, type=annotation, help=help_text)
    serve.set_defaults(handler=_serve)


def settings_from(args: argparse.Namespace) -> ServerSettings:
    flags = {name: getattr(args, name) for name in ServerSettings.model_fields}
    return checked_settings(args.config, **flags)


def checked_settings(config_file: Path | None = None, **flags: Any) -> ServerSettings:
    """``load_settings``, with settings that do not validate raised as one ``SettingsError``."""
    try:
        return load_settings(config_file, **flags)
    except ValidationError as exc:
        raise SettingsError(f"invalid server settings: {problems(exc)}") from exc


def problems(error: ValidationError) -> str:
    """Every problem of ``error`` on one line: ``field: message; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                     for e in error.errors())


def _serve(args: argparse.Namespace) -> int:
    # Before numpy loads (here and in every worker process, which inherit the environment):
    # the server's one BLAS call, the finiteness check's dot product, runs per request on the
    # event loop, and numpy's OpenBLAS would hand a 64-image one to threads on other cores,
    # which then spin for a while: the cores the gRPC path needs. onnxruntime has its own
    # threads and does not use it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from axon.server.main import serve

    return serve(settings_from(args))


def _required(annotation: Any) -> Any:
    """``X`` of an optional ``X | None`` setting (its flag takes an X); ``str`` for a choice of
    types (``N | "auto"``: the settings validate the text); others as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        present = [a for a in typing.get_args(annotation) if a is not type(None)]
        return present[0] if len(present) == 1 else str
    return annotation


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "all"
    return str(value)
