"""Parameter budgets: parsing ``2M``, ``1.5B``, ``500K``, ``2_000_000`` and printing them back."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from archsearch.errors import BudgetError

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_PATTERN = re.compile(r"^(?P<num>\d+(?:_\d+)*(?:\.\d+)?)(?P<unit>[KMBGT]?)$", re.IGNORECASE)
ACCEPTED_FORMS = "2M, 20m, 1.5B, 500K, 2_000_000 or 2000000 (a positive whole number of parameters)"
#: The largest budget archsearch takes: 1000T parameters, far beyond any model it can build.
MAX_BUDGET = 10**15


def parse_budget(value: str | int) -> int:
    """Return the number of parameters that ``value`` names.

    >>> parse_budget("1.5B"), parse_budget("20m"), parse_budget("2_000_000")
    (1500000000, 20000000, 2000000)
    """
    if isinstance(value, bool):
        raise BudgetError(f"budget {value!r} is not a parameter count; accepted forms: {ACCEPTED_FORMS}")
    if isinstance(value, int):
        if value <= 0:
            raise BudgetError(f"budget {value} must be positive; accepted forms: {ACCEPTED_FORMS}")
        return _at_most_max(value, str(value))
    if isinstance(value, float) and value.is_integer() and value > 0:
        return _at_most_max(int(value), repr(value))
    text = str(value).strip()
    match = _PATTERN.match(text)
    if not match:
        raise BudgetError(f"budget {text!r} is not understood; accepted forms: {ACCEPTED_FORMS}")
    try:
        number = Decimal(match["num"].replace("_", "")) * _UNITS[match["unit"].upper()]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise BudgetError(f"budget {text!r} is not understood; accepted forms: {ACCEPTED_FORMS}") from exc
    if number != number.to_integral_value() or number <= 0:
        raise BudgetError(
            f"budget {text!r} is not a positive whole number of parameters; accepted forms: {ACCEPTED_FORMS}"
        )
    return _at_most_max(int(number), repr(text))


def _at_most_max(n: int, shown: str) -> int:
    if n > MAX_BUDGET:
        raise BudgetError(
            f"budget {shown} is larger than any model archsearch can count (at most {MAX_BUDGET:.0e} "
            f"parameters, 1000T); accepted forms: {ACCEPTED_FORMS}"
        )
    return n


def format_budget(n: int) -> str:
    """Print a budget canonically: its largest unit with at most three decimals, else plain digits.

    >>> format_budget(2_000_000), format_budget(1_500_000_000), format_budget(123_456)
    ('2M', '1.5B', '123.456K')
    """
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            q = Decimal(n) / size
            if q == q.quantize(Decimal("0.001")):
                return f"{q.normalize():f}{unit}"
            break
    return str(n)
