"""How an option is declared and checked: :class:`Option`, :class:`Range`, :class:`ConfigError`.

The options themselves are declared once, in :mod:`experiments.config` (the pipeline's)
and in the model modules (each model's own, e.g. LeNet-5's ``dropout`` and
``fold_idle``). From each :class:`Option` come its dataclass field, the value check of a
config file (:func:`check_value`: types included, an ``int`` refuses ``2.5`` and
``"128"``, a ``bool`` refuses ``"no"``), the command-line conversion
(:func:`parse_text`), the ``--help`` line and the README table row (:func:`help_line`).
This module imports nothing of the project, so the model modules can use it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "ConfigError",
    "Option",
    "Range",
    "check_value",
    "field",
    "flag",
    "help_line",
    "parse_bool",
    "parse_text",
]

TYPE_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


class ConfigError(ValueError):
    """A value an option does not accept; the message names the option, value and rule."""


class Range(NamedTuple):
    """The closed or half-open interval a number must lie in (finite numbers only)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        v = float(value)  # type: ignore[arg-type]
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    @property
    def text(self) -> str:
        """``">= 0"``, ``"> 0"``, ``"in [0, 1)"``..."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


NON_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1, high_open=True)  # a share pruned / dropped: 1 would remove all
UNIT_INTERVAL = Range(0, 1)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: what it is (``help``, with its unit), its type, default and rule.

    ``type`` is what a config file must give (``float`` also takes an ``int``);
    ``optional``: ``None`` is allowed (and means "not given"); ``rule`` is a
    :class:`Range` for numbers; ``choices`` the allowed strings; ``check`` a function
    raising ``ValueError`` for values of a structured option (e.g. sparsity) and
    ``parse`` its command-line conversion; ``default_text`` replaces the default shown in
    ``--help``. A model-specific option (declared by a model) may have
    ``on_pretrained``, a function of the loaded dense params applied when the option is
    true, and ``needs``, the name of an option that must be set with it.
    """

    type: type
    default: Any
    help: str
    rule: Range | None = None
    optional: bool = False
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], Any] | None = None
    parse: Callable[[str], Any] | None = None
    default_text: str | None = None
    on_pretrained: Callable[[Any], Any] | None = None
    needs: str | None = None

    @property
    def expected(self) -> str:
        """What a valid value is, in words: ``"an integer >= 0"``, ``"one of ..."``."""
        if self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = TYPE_NAMES.get(self.type, self.type.__name__)
            if self.rule == FRACTION or self.rule == UNIT_INTERVAL:
                text = f"a fraction {self.rule.text}"
            elif self.rule is not None:
                text += " " + self.rule.text
        return text + (" or None" if self.optional else "")


def field(option: Option) -> Any:
    """The dataclass field of ``option`` (the option rides along in its metadata)."""
    default = option.default
    if isinstance(default, dict | list):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"option": option}
        )
    return dataclasses.field(default=default, metadata={"option": option})


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _type_ok(typ: type, value: Any) -> bool:
    if typ is int:
        return _is_int(value)
    if typ is float:
        return _is_int(value) or (isinstance(value, numbers.Real) and not isinstance(value, bool))
    return isinstance(value, typ)


def check_value(name: str, option: Option, value: Any) -> Any:
    """``value`` if ``option`` accepts it, else :class:`ConfigError` naming ``name``."""
    if value is None and option.optional:
        return value
    bad = ConfigError(f"{name} must be {option.expected}, got {value!r}")
    if not _type_ok(option.type, value):
        raise bad
    if option.rule is not None and value not in option.rule:
        raise bad
    if option.choices is not None and value not in option.choices:
        raise bad
    if option.check is not None:
        try:
            option.check(value)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return value


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no`` (any case) from the command line."""
    word = text.strip().lower()
    if word not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"expected true or false, got {text!r}")
    return word in ("true", "1", "yes")


def parse_text(option: Option, text: str) -> Any:
    """The command-line text of an option as its value.

    Text that is no number raises a plain ``ValueError`` (argparse then says "invalid
    float value: 'ten'"); a value the option refuses raises :class:`ConfigError`
    saying what was expected and what was given.
    """
    if option.parse is not None:
        value = option.parse(text)
    elif option.type is bool:
        value = parse_bool(text)
    elif option.type is str:
        value = text
    else:
        value = option.type(text)  # ValueError: not a number
    try:
        return check_value("value", option, value)
    except ConfigError as err:
        if option.check is not None:
            raise
        raise ConfigError(f"expected {option.expected}, got {text!r}") from err


def flag(name: str) -> str:
    """The command-line flag of the option ``name``: ``--batch-size`` for ``batch_size``."""
    return "--" + name.replace("_", "-")


def help_line(option: Option, help_text: str | None = None) -> str:
    """The ``--help`` text of ``option``: what it is and its default."""
    default = option.default_text if option.default_text is not None else option.default
    return f"{help_text or option.help} [default: {default}]"


def options_of(cls: type) -> Mapping[str, Option]:
    """The options of a dataclass built with :func:`field`, in field order."""
    return {
        f.name: f.metadata["option"] for f in dataclasses.fields(cls) if "option" in f.metadata
    }
