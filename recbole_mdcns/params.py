"""Plugin config keys, each declared once with its type, default, range and meaning, and
the error that reports bad values."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import yaml


class ConfigError(ValueError):
    """One or more plugin config values are invalid; the message lists every problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(
            "invalid recbole-mdcns configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


@dataclass(frozen=True)
class Param:
    """A config key: its type, default, meaning and allowed values. The one source of the
    key's validation, its default in the Config and its row in the README's key table.

    `kind` is int, float, bool, str, or dict (a dict, or the path of a yaml file holding
    one). Numbers may carry bounds (`minimum`/`maximum`,
    exclusive when `*_exclusive`), strings a tuple of `choices` (matched
    case-insensitively and returned in their canonical spelling).
    """

    key: str
    kind: type
    default: Any = field(compare=False)
    doc: str = field(compare=False)
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    minimum_exclusive: bool = False
    maximum_exclusive: bool = False
    choices: Optional[tuple] = None

    def table_row(self, scope: str) -> str:
        """This key's row of the README's key table: | scope | `key` | `default` | meaning |."""
        default = yaml.safe_dump(self.default, default_flow_style=True).strip().removesuffix("\n...")
        return f"| {scope} | `{self.key}` | `{default}` | {self.doc} |"

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        noun = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                dict: "a dict or the path of a yaml file"}[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append((">" if self.minimum_exclusive else ">=") + f" {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(("<" if self.maximum_exclusive else "<=") + f" {self.maximum:g}")
        return noun + (" " + " and ".join(bounds) if bounds else "")

    def coerce(self, value: Any) -> tuple[Any, Optional[str]]:
        """Return (value in its canonical type, None) or (value, problem message)."""
        bad = (value, f"{self.key} = {value!r}: must be {self.allowed()}")
        if self.kind is bool:
            return (value, None) if isinstance(value, bool) else bad
        if self.kind is dict:
            return ({} if value is None else value, None) if value is None or isinstance(value, (dict, str)) else bad
        if self.kind is str:
            if not isinstance(value, str):
                return bad
            for choice in self.choices or ():
                if value.lower() == str(choice).lower():
                    return choice, None
            return (value, None) if self.choices is None else bad
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return bad
        if self.kind is int:
            # hyperopt's quniform hands integer keys over as floats (22.0)
            if isinstance(value, float) and not value.is_integer():
                return bad
            value = int(value)
        else:
            value = float(value)
            if math.isnan(value):
                return bad
        if self.minimum is not None and (
            value < self.minimum or (self.minimum_exclusive and value == self.minimum)
        ):
            return bad
        if self.maximum is not None and (
            value > self.maximum or (self.maximum_exclusive and value == self.maximum)
        ):
            return bad
        return value, None


def validate_params(config: Any, params: Sequence[Param]) -> list[str]:
    """Type-check `params` in `config` in place (canonical types and spellings); return the problems."""
    problems = []
    for param in params:
        if param.key not in config:
            problems.append(f"{param.key} is missing: must be {param.allowed()}")
            continue
        value, problem = param.coerce(config[param.key])
        if problem:
            problems.append(problem)
        config[param.key] = value
    return problems
