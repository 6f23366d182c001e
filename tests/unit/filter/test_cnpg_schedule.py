# -*- coding: utf-8 -*-
"""The cnpg_schedule filter: 5-field cron becomes CloudNativePG's 6-field (seconds first) schedule, with a warning;
6 fields pass unchanged; invalid and ambiguous expressions fail with the reason and a correct example.

The runbook's issue 3: a ScheduledBackup with ``0 2 * * *`` ran every hour instead of daily at 02:00.
"""

from __future__ import annotations

import datetime

import pytest
from ansible.errors import AnsibleFilterError
from croniter import croniter

from ansible_collections.pgops.resilience.plugins.filter import cnpg_schedule as plugin

EXAMPLE = "'0 0 2 * * *' runs once a day at 02:00:00"


@pytest.fixture
def warnings(monkeypatch):
    """The warnings the filter emits, captured instead of printed."""
    captured = []
    monkeypatch.setattr(plugin.display, 'warning', lambda msg, *args, **kwargs: captured.append(msg))
    return captured


def fire_times(expression, count=3, start=datetime.datetime(2026, 3, 1, 0, 0, 0)):
    """The next ``count`` fire times of a 6-field, seconds-first expression after ``start``, as croniter sees them."""
    schedule = croniter(expression, start, second_at_beginning=True)
    return [schedule.get_next(datetime.datetime) for index in range(count)]


def refused(expression, **kwargs):
    """The message of the AnsibleFilterError the filter raises for ``expression``."""
    with pytest.raises(AnsibleFilterError) as info:
        plugin.cnpg_schedule(expression, **kwargs)
    return str(info.value)


# The runbook's case.

def test_the_runbook_schedule_becomes_daily_at_2_with_a_warning(warnings):
    assert plugin.cnpg_schedule('0 2 * * *') == '0 0 2 * * *'
    assert len(warnings) == 1
    message = warnings[0]
    # What was converted, to what, and why.
    assert "'0 2 * * *' has 5 fields" in message
    assert "Converted to '0 0 2 * * *'" in message and 'once a day at 02:00:00' in message
    assert 'seconds first' in message
    # What CloudNativePG itself would have done with the 5 fields: the hourly backups of the runbook.
    assert 'second 0, minute 2, hour *' in message
    assert 'every hour (00:02:00, 01:02:00, 02:02:00, ...)' in message


def test_croniter_agrees_the_conversion_fires_once_a_day_at_2():
    assert fire_times('0 0 2 * * *') == [datetime.datetime(2026, 3, day, 2, 0, 0) for day in (1, 2, 3)]


def test_croniter_agrees_cnpg_reads_the_5_field_form_as_hourly():
    # robfig/cron v1 (cron.Parse, what CloudNativePG's webhook and controller use) makes the day of week optional:
    # '0 2 * * *' is second 0, minute 2, every hour, every day, every month - '0 2 * * * *'.
    assert fire_times('0 2 * * * *') == [datetime.datetime(2026, 3, 1, hour, 2, 0) for hour in (0, 1, 2)]


def test_the_6_field_form_passes_unchanged_without_a_warning(warnings):
    assert plugin.cnpg_schedule('0 0 2 * * *') == '0 0 2 * * *'
    assert plugin.cnpg_schedule('  0 0 2 * * *\n') == '0 0 2 * * *'
    assert warnings == []


@pytest.mark.parametrize('expression', [
    '0 30 1 * * sun', '0 0 12 * * MON-FRI', '0 0 0 1 * *', '0 0 */6 * * *', '0 15,45 * * * *', '0 0 2 * * ?',
    '0 0 3 ? * 0', '30 0 2 1-15 jan-mar *', '0 0 0 1/7 * *', '59 59 23 31 12 6',
])
def test_valid_6_field_expressions_pass_unchanged(warnings, expression):
    assert plugin.cnpg_schedule(expression) == expression
    assert warnings == []


@pytest.mark.parametrize('expression, converted', [
    ('*/15 * * * *', '0 */15 * * * *'),
    ('30 4 * * 1-5', '0 30 4 * * 1-5'),
    ('0 0 1 * *', '0 0 0 1 * *'),
    ('0 6 * * sun', '0 0 6 * * sun'),
])
def test_other_5_field_expressions_are_converted_with_a_warning(warnings, expression, converted):
    assert plugin.cnpg_schedule(expression) == converted
    assert len(warnings) == 1 and converted in warnings[0]


def test_a_5_field_expression_cnpg_would_reject_says_so(warnings):
    assert plugin.cnpg_schedule('0 0 31 * *') == '0 0 0 31 * *'
    assert "hour 31" in warnings[0] and 'reject it' in warnings[0]


def test_the_warning_offers_cnpg_s_own_reading_when_that_was_meant(warnings):
    # '0 0 2 * *' is monthly (2nd, 00:00) as a Kubernetes cron, daily at 02:00 as CloudNativePG reads it.
    assert plugin.cnpg_schedule('0 0 2 * *') == '0 0 0 2 * *'
    assert "write it as '0 0 2 * * *'" in warnings[0] and 'once a day at 02:00:00' in warnings[0]


@pytest.mark.parametrize('strict', [True, 'yes'])
def test_strict_refuses_5_fields(warnings, strict):
    message = refused('0 2 * * *', strict=strict)
    assert 'strict' in message and "Write '0 0 2 * * *' instead" in message and 'every hour' in message
    assert warnings == []


def test_strict_still_accepts_6_fields():
    assert plugin.cnpg_schedule('0 0 2 * * *', strict=True) == '0 0 2 * * *'


def test_strict_must_be_a_boolean():
    assert 'strict must be a boolean' in refused('0 0 2 * * *', strict='sometimes')


@pytest.mark.parametrize('expression', [
    '@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly', '@every 12h', '@every 1h30m',
    '@every 90s', '@every 1.5h',
])
def test_descriptors_pass_unchanged(warnings, expression):
    assert plugin.cnpg_schedule(expression) == expression
    assert warnings == []


@pytest.mark.parametrize('expression, reason', [
    ('@Daily', 'not a descriptor CloudNativePG knows'),
    ('@fortnightly', 'not a descriptor CloudNativePG knows'),
    ('@every', 'not a descriptor CloudNativePG knows'),
    ('@every 1 hour', 'is not a Go duration'),
    ('@every 1d', 'is not a Go duration'),
    ('@every 500ms', 'at least 1s'),
    ('@every 0', 'at least 1s'),
])
def test_bad_descriptors_are_refused(expression, reason):
    message = refused(expression)
    assert reason in message and EXAMPLE in message


# Invalid expressions: the reason, and the correct 6-field example.

@pytest.mark.parametrize('expression, reason', [
    ('', 'the schedule is empty'),
    ('   ', 'the schedule is empty'),
    ('garbage', 'has 1 field;'),
    ('0 2 * *', 'has 4 fields'),
    ('0 0 0 2 * * * *', 'has 8 fields'),
    ('0 0 2 * * * *', 'has 7 fields'),
    ('60 2 * * *', "'60' is out of range in the minute field (0-59)"),
    ('0 24 * * *', "'24' is out of range in the hour field (0-23)"),
    ('0 2 0 * *', "'0' is out of range in the day-of-month field (1-31)"),
    ('0 2 * 13 *', "'13' is out of range in the month field (1-12)"),
    ('0 2 * * 7', 'write 0 for Sunday'),
    ('0 60 2 * * *', "'60' is out of range in the minute field (0-59)"),
    ('0 0 2 * * 8', "'8' is out of range in the day-of-week field (0-6)"),
    ('0 0 2 * * funday', "'funday' is not a number or the names"),
    ('0 0 2 L * *', "'L' is not a number"),
    ('0 0 2 15W * *', "'15W' is not a number"),
    ('0 0 2 * * 1#2', "'1#2' is not a number"),
    ('0 0 H * * *', "'H' is not a number"),
    ('0 0 22-2 * * *', "the range '22-2' of the hour field runs backwards"),
    ('0 0 */0 * * *', 'must be a positive number'),
    ('0 0 1-2-3 * * *', 'is not a value or a range'),
    ('0 0 1,,2 * * *', 'empty list item'),
    ('0 0 -1 * * *', 'is not a value or a range'),
    ('0 0 0 31 2 *', 'can never occur in month'),
    ('0 0 30 2 *', 'can never occur in month'),
    ('a b c d e', "'a' is not a number"),
], ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None)
def test_invalid_expressions_fail_with_the_reason_and_an_example(expression, reason):
    message = refused(expression)
    assert reason in message and EXAMPLE in message


@pytest.mark.parametrize('value', [None, 2, ['0', '0', '2', '*', '*', '*']])
def test_non_strings_are_refused(value):
    message = refused(value)
    assert 'expects a string' in message and EXAMPLE in message


# Ambiguous 6-field expressions.

@pytest.mark.parametrize('expression, seconds', [
    ('* 2 * * * *', 60), ('*/5 * * * * *', 12), ('0,30 0 2 * * *', 2), ('0-10 0 2 * * *', 11), ('5/30 0 2 * * *', 2),
])
def test_a_first_field_that_is_not_one_second_is_ambiguous(expression, seconds):
    message = refused(expression)
    assert 'is ambiguous' in message and 'start %d times a minute' % seconds in message
    assert EXAMPLE in message


def test_ambiguous_seconds_suggest_the_5_field_conversion():
    message = refused('*/5 * * * * *')
    assert "If '*/5 * * * *' was meant as a 5-field cron expression, write '0 */5 * * * *': every 5 minutes" in message


@pytest.mark.parametrize('expression', ['60 0 2 * * *', '75 0 2 * * *', 'x 0 2 * * *'])
def test_a_first_field_that_is_no_second_at_all_is_refused(expression):
    message = refused(expression)
    assert 'reads the first field as the seconds (0-59)' in message and EXAMPLE in message


@pytest.mark.parametrize('expression', ['0 2 * * * 2026', '0 2 * * * 2025-2030', '30 1 * * mon 2026'])
def test_a_year_in_the_sixth_field_is_refused(expression):
    message = refused(expression)
    assert 'looks like a year' in message and 'has no year field' in message and EXAMPLE in message


def test_a_year_appended_to_the_runbook_schedule_suggests_the_conversion():
    assert "write '0 0 2 * * *': once a day at 02:00:00" in refused('0 2 * * * 2026')


def test_a_quartz_expression_with_a_year_is_refused():
    message = refused('0 0 2 * * ? 2026')
    assert "ending with the year '2026' (Quartz format)" in message
    assert "Without it, '0 0 2 * * ?' is once a day at 02:00:00" in message


@pytest.mark.parametrize('expression, field', [('0 2 * * ? *', 'month'), ('0 2 ? * MON *', 'hour')])
def test_the_aws_eventbridge_shape_is_refused(expression, field):
    message = refused(expression)
    assert "'?' in the %s field" % field in message and 'AWS EventBridge' in message and EXAMPLE in message


def test_aws_eventbridge_daily_suggests_the_conversion():
    assert "write '0 0 2 * * *'" in refused('0 2 * * ? *')


def test_filter_module_exports_the_filter():
    assert plugin.FilterModule().filters() == {'cnpg_schedule': plugin.cnpg_schedule}


@pytest.mark.parametrize('text, spec, values', [
    ('*/20', plugin.MINUTE, {0, 20, 40}),
    ('mon-fri', plugin.DOW, {1, 2, 3, 4, 5}),
    ('JAN,jul', plugin.MONTH, {1, 7}),
    ('10/20', plugin.SECOND, {10, 30, 50}),
    ('1-10/3', plugin.DOM, {1, 4, 7, 10}),
    ('?', plugin.DOW, set(range(7))),
])
def test_parse_field_follows_robfig_cron(text, spec, values):
    assert plugin.parse_field(text, spec) == values


def test_describe_names_irregular_schedules_by_their_first_runs():
    assert plugin.describe('0 0 0 1 * *') == 'first runs 2026-01-01 00:00:00, 2026-02-01 00:00:00, 2026-03-01 00:00:00'
    assert plugin.describe('0 0 6 * * 0') == 'once a week, on Sunday at 06:00:00'


def test_whitespace_inside_is_normalised(warnings):
    # A newline inside the value must not reach a manifest: fields come back joined by one space.
    assert plugin.cnpg_schedule('0 0 2\n* *\t*') == '0 0 2 * * *'
    assert plugin.cnpg_schedule('0 2  * * *') == '0 0 2 * * *'
    assert plugin.cnpg_schedule('@every \n12h') == '@every 12h'


@pytest.mark.parametrize('expression', ['0 0 \u00b2 * * *', '0 0 2 * * \u0663', '\u0660 0 2 * * *'])
def test_only_ascii_digits_are_numbers(expression):
    assert 'A CloudNativePG schedule has 6 fields' in refused(expression)
