import pytest
from hypothesis import given
from hypothesis import strategies as st

from archsearch.budget import ACCEPTED_FORMS, format_budget, parse_budget
from archsearch.errors import BudgetError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2M", 2_000_000),
        ("20m", 20_000_000),
        ("1.5B", 1_500_000_000),
        ("500K", 500_000),
        ("2_000_000", 2_000_000),
        ("2000000", 2_000_000),
        (" 200M ", 200_000_000),
        (2_000_000_000, 2_000_000_000),
    ],
)
def test_parse_accepted_forms(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["2Q", "", "-2M", "0", "1.0000001M", "2e6", "M", "2..0M", "1_M", True])
def test_parse_rejects_with_accepted_forms(text):
    with pytest.raises(BudgetError) as info:
        parse_budget(text)
    assert ACCEPTED_FORMS in str(info.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [(2_000_000, "2M"), (20_000_000, "20M"), (1_500_000_000, "1.5B"), (500_000, "500K"), (999, "999")],
)
def test_format_canonical(value, text):
    assert format_budget(value) == text


@given(st.integers(min_value=1, max_value=10**13))
def test_format_parse_round_trip(n):
    assert parse_budget(format_budget(n)) == n


@given(st.integers(min_value=1, max_value=999_999), st.sampled_from(["K", "M", "B"]))
def test_parse_format_round_trip_from_text(n, unit):
    text = f"{n}{unit}"
    assert format_budget(parse_budget(text)) == format_budget(parse_budget(text.lower()))
