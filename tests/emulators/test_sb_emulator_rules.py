"""The SQL filter and action subset of subscription rules (no sockets: the parser and evaluator alone)."""

from __future__ import annotations

import pytest
from gcw_emulators.servicebus.rules import RuleError, SqlAction, SqlFilter, sql_filter

MESSAGE = {
    "subject": "ingest",
    "message_id": "m1",
    "correlation_id": None,
    "properties": {"tenant": "a", "n": 5, "ratio": 0.5, "s": "hello world", "flag": True},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("tenant = 'a'", True),
        ("Tenant = 'a'", True),
        ("tenant <> 'a'", False),
        ("tenant != 'b'", True),
        ("n > 3 AND sys.Label = 'ingest'", True),
        ("n > 3 AND sys.Subject = 'other'", False),
        ("n < 3 OR ratio <= 0.5", True),
        ("NOT (n = 5)", False),
        ("n + 1 = 6 AND n * 2 = 10 AND n % 2 = 1", True),
        ("n / 2 = 2", True),
        ("-n = -5", True),
        ("missing = 1", False),
        ("NOT missing = 1", False),
        ("missing IS NULL", True),
        ("tenant IS NOT NULL", True),
        ("EXISTS(tenant)", True),
        ("EXISTS(nope)", False),
        ("s LIKE 'hello%'", True),
        ("s LIKE 'h_llo world'", True),
        ("s NOT LIKE '%x%'", True),
        ("s LIKE '100!%' ESCAPE '!'", False),
        ("tenant IN ('b', 'a')", True),
        ("tenant NOT IN ('a')", False),
        ("[tenant] = 'a'", True),
        ("user.tenant = 'a'", True),
        ("sys.MessageId = 'm1'", True),
        ("sys.CorrelationId IS NULL", True),
        ("flag = TRUE", True),
        ("n = @p", True),
        ("tenant = 5", False),
        ("missing = 1 OR tenant = 'a'", True),
        ("s = 'it''s'", False),
    ],
)
def test_filter_expressions(expression, expected):
    assert SqlFilter(expression, (("@p", 5),)).matches(MESSAGE) is expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("tenant ==", "expected a property name"),
        ("sys.DeliveryCount > 1", "not supported by the emulator"),
        ("a LIKE b", "LIKE needs a quoted pattern"),
        ("x = @nope", "parameter @nope is not given"),
        ("tenant = 'a' garbage", "unexpected 'garbage'"),
        ("app.x = 1", "unknown property scope"),
        ("tenant = 'a' #", "unexpected character"),
    ],
)
def test_unsupported_or_malformed_filters_say_why(expression, reason):
    with pytest.raises(RuleError, match=reason):
        SqlFilter(expression)


def test_true_and_false_filters_are_recognised():
    assert sql_filter("1=1") is True
    assert sql_filter(" 1 = 0 ") is False
    assert isinstance(sql_filter("a = 1"), SqlFilter)


def test_actions_set_and_remove_application_properties_in_order():
    action = SqlAction("SET tenant = 'z'; REMOVE ratio; SET doubled = n * 2; SET tag = tenant + '!'")
    result = action.apply(MESSAGE)
    assert result["properties"] == {"tenant": "z", "n": 5, "s": "hello world", "flag": True, "doubled": 10, "tag": "z!"}
    assert MESSAGE["properties"]["tenant"] == "a"  # the original is untouched
    with pytest.raises(RuleError, match="system properties"):
        SqlAction("SET sys.Label = 'x'")
    with pytest.raises(RuleError, match="at least one"):
        SqlAction("")
