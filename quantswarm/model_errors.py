"""One line per pydantic validation failure, naming the key path (``agents.coder.n_ctx: expected an integer``).

Config files are read into pydantic models; their errors reach users through :func:`first_error`, which
turns pydantic's first error into ``key.path: what is wrong`` and, for an unknown key, lists the keys
that are allowed there. A validator that checks a list or a mapping can raise :class:`At` to point below
the field it validates (``vram.gpus[1]``).
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


class At(ValueError):
    """A validator's error about a part of the value: ``sub`` is appended to the field's key path."""

    def __init__(self, sub: str, message: str):
        super().__init__(message)
        self.sub = sub


def key_path(loc: tuple) -> str:
    """``('agents', 'coder', 'n_ctx')`` -> ``agents.coder.n_ctx``; list indices as ``[i]``; dict-key markers dropped."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``X``, ``X | None``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, dict, list):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model whose fields sit at ``loc`` (walking fields, mapping keys and list indices)."""
    model: type[BaseModel] | None = root
    pending: list[type[BaseModel]] = []
    for part in loc:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            inner = _models_in(model.model_fields[part].annotation)
            origin = typing.get_origin(model.model_fields[part].annotation)
            if inner and origin in (dict, list):
                model, pending = None, inner
            else:
                model, pending = (inner[0] if inner else None), []
        elif pending:  # a mapping key or a list index: the value's model
            model, pending = pending[0], []
        else:
            return None
    return model


def _got(value: Any) -> str:
    return f", got {value!r}"


def _message(err: dict, root: type[BaseModel]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(root, err["loc"][:-1])
        keys = [f.alias or name for name, f in model.model_fields.items()] if model is not None else []
        allowed = f"; allowed: {', '.join(keys)}" if keys else ""
        return f"unknown key{allowed}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer{_got(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number{_got(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false{_got(value)}"
    if kind == "string_type":
        return f"expected a string{_got(value)}"
    if kind == "list_type":
        return f"expected a list{_got(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping{_got(value)}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{value!r} is not one of {choices}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}{_got(value)}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}{_got(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}{_got(value)}"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg']}{_got(value)}"


def first_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """``key.path: message`` for the first error of ``exc`` (validating ``root``)."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = key_path(loc)
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, At):
        path += error.sub if error.sub.startswith("[") or not path else f".{error.sub}"
    return f"{path or '(top level)'}: {_message(err, root)}"
