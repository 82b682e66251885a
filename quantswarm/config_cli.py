"""One mechanism from a config dataclass to CLI options and back, shared by every job's CLI.

A config dataclass documents each field once: ``field(default=..., metadata={"help": ..., "choices": ...})``.
:func:`config_options` turns a command ``func(cfg: Config, **own)`` into a typer command with one option per
field (``n_ctx`` -> ``--n-ctx``, help and default from the field, ``choices`` offered case-insensitively, booleans as
``--x/--no-x``) beside the command's own parameters; :func:`config_from_options` turns the parsed values back
into the dataclass (lists are comma-separated, ``--tasks a,b``; mappings are repeated ``KEY=VALUE``), so the
dataclass's ``__post_init__`` validates them as for any other caller.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, fields
from typing import Any, Literal, TypeVar

import typer

from quantswarm.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
SCALARS = {int: "integers", float: "numbers", str: "strings"}


def flag_name(name: str, flags: Mapping[str, str] | None = None) -> str:
    """The option of a field: ``flags[name]`` or ``--`` + the name with dashes."""
    return (flags or {}).get(name) or "--" + name.replace("_", "-")


def _shape(tp: Any) -> tuple[str, Any]:
    """(kind, item type) of a field type: scalar | optional | bool | list | dict."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "bool", bool
    if origin is list:
        return "list", args[0] if args else str
    if origin is dict:
        return "dict", args[1] if len(args) == 2 else str
    if origin in (typing.Union, types.UnionType):
        return "optional", tp
    return "scalar", tp


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return ...


def _parameter(f: Field, tp: Any, *, flag: str, argument: bool, required: bool) -> inspect.Parameter:
    """A typer parameter for one dataclass field."""
    kind, item = _shape(tp)
    default = ... if required else _default(f)
    help = f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    if choices and kind == "scalar":
        tp = Literal[tuple(choices)]  # typer offers these, case-insensitively
    if kind == "optional" and type(None) not in typing.get_args(tp):
        tp = str  # a union of scalars (``int | str``: "4" or "auto"): the dataclass parses the text
    if argument:
        annotation = list[item] if kind == "list" else tp
        info = typer.Argument(default if default not in ([], None, "") else ..., help=help, show_default=False)
    else:
        annotation, decls = tp, [flag]
        if kind == "bool":
            decls = [f"{flag}/--no-{flag[2:]}"]
        elif kind == "list":
            annotation = str
            default = default if default is ... else ",".join(map(str, default))
            help = f"{help} (comma-separated)"
        elif kind == "dict":
            annotation = list[str]
            default = default if default is ... else [f"{k}={v}" for k, v in default.items()]
            help = f"{help} (KEY=VALUE, repeatable)"
        info = typer.Option(default, *decls, help=help, case_sensitive=False, show_default=default is not ...)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def _convert(text: str, item: Any, what: str) -> Any:
    try:
        return item(text.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected {SCALARS.get(item, item.__name__)}, got {text!r}") from None


def config_from_options(cls: type, values: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> Any:
    """Build ``cls`` from parsed option values: comma-separated lists and ``KEY=VALUE`` mappings are split here."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kind, item = _shape(hints[name])
        flag = flag_name(name, flags)
        if kind == "list" and isinstance(value, str):
            parts = [x for x in value.split(",") if x.strip()]
            value = [_convert(x, item, f"{flag} {value!r}: comma-separated list") for x in parts]
        elif kind == "dict" and isinstance(value, list | tuple):
            pairs = {}
            for entry in value:
                key, sep, raw = str(entry).partition("=")
                if not sep or not key:
                    raise ConfigError(f"{flag} {entry!r}: use KEY=VALUE, e.g. {flag} name=3")
                pairs[key.strip()] = _convert(raw, item, f"{flag} {entry!r}: value")
            value = pairs
        kwargs[name] = value
    return cls(**kwargs)


def _own_parameters(func: Callable, skip: str) -> list[inspect.Parameter]:
    """The command's own parameters with their annotations evaluated (the module may defer annotations)."""
    out = []
    for p in inspect.signature(func).parameters.values():
        if p.name == skip:
            continue
        ann = p.annotation
        if isinstance(ann, str):
            ann = eval(ann, func.__globals__)  # the module's own annotation text
        out.append(p.replace(annotation=ann, kind=inspect.Parameter.KEYWORD_ONLY))
    return out


def config_options(cls: type, *, param: str = "cfg", include: Iterable[str] | None = None,
                   exclude: Iterable[str] = (), arguments: Iterable[str] = (), required: Iterable[str] = (),
                   flags: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Give a typer command one option per field of the dataclass ``cls``; the command receives ``cls(...)``.

    ``include``/``exclude`` pick fields (the command's own parameters always win over a field of the same
    name); ``arguments`` become positional arguments; ``required`` fields lose their default; ``flags``
    renames options (``{"task_limits": "--task-limit"}``). The built config is passed as ``param``.
    """
    hints = typing.get_type_hints(cls)
    keep = set(include) if include is not None else None
    positional, needed = list(arguments), set(required)

    def decorate(func: F) -> F:
        own = _own_parameters(func, param)
        taken = {p.name for p in own} | set(exclude)
        chosen = [f for f in fields(cls) if f.init and f.name not in taken and (keep is None or f.name in keep)]
        names = [f.name for f in chosen]
        built = {f.name: _parameter(f, hints[f.name], flag=flag_name(f.name, flags), argument=f.name in positional,
                                    required=f.name in needed) for f in chosen}
        params = [built[n] for n in positional if n in built] + own + [built[n] for n in names if n not in positional]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return func(**kwargs, **{param: config_from_options(cls, values, flags)})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the signature above, not the wrapped function's
        return typing.cast(F, command)

    return decorate
