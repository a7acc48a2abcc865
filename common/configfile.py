"""Reading operator-written TOML files and turning validation errors into one clear line.

Every configuration error names the file, the key (as an operator would write it: ``site[2].share``,
1-based for arrays of tables) and the reason, as a :class:`common.errors.ConfigError`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from common.errors import ConfigError


def read_toml(path: Path, hint: str = "") -> dict[str, Any]:
    """The parsed file; a missing, unreadable or invalid file is a ConfigError naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(str(path), None, f"file not found{f' ({hint})' if hint else ''}") from err
    except OSError as err:
        raise ConfigError(str(path), None, f"cannot read: {err.strerror}") from err
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), None, "not UTF-8 text") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), None, f"invalid TOML: {err}") from err


def error_key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"  # 1-based, as an operator counts [[site]] tables
        else:
            out += f".{part}" if out else str(part)
    return out


def error_reason(err: ErrorDetails) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        msg = f"{msg} (got {err.get('input')!r})"
    return msg


def config_error(source: str, err: ValidationError) -> ConfigError:
    """The first problem of a validation error as a ConfigError (with a count of the others)."""
    first = err.errors()[0]
    extra = len(err.errors()) - 1
    reason = error_reason(first) + (f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else "")
    return ConfigError(source, error_key(first["loc"]) or None, reason)
