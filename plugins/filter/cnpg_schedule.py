# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
name: cnpg_schedule
short_description: Turn a cron expression into the 6-field schedule of a CloudNativePG ScheduledBackup
version_added: 0.1.0
author:
  - pgops.resilience maintainers (@pgops)
description:
  - >-
    A CloudNativePG C(ScheduledBackup) reads C(spec.schedule) with the Go library robfig/cron (v1, C(cron.Parse))
    as B(6 fields, seconds first), C(second minute hour day-of-month month day-of-week). It also accepts 5 fields,
    but reads them as C(second minute hour day-of-month month) and only warns. A Kubernetes CronJob expression
    such as C(0 2 * * *) (daily at 02:00) therefore becomes second 0, minute 2, B(every hour) - hourly backups
    instead of daily ones (issue 3 of the CloudNativePG barman-cloud runbook).
  - This filter returns the schedule to put in C(spec.schedule). The rules are applied in this order.
  - >-
    1. Surrounding whitespace is removed and fields are separated by one space. An empty value or a value that is
    not a string is an error.
  - >-
    2. The descriptors C(@yearly), C(@annually), C(@monthly), C(@weekly), C(@daily), C(@midnight), C(@hourly) and
    C(@every <duration>) (a Go duration of at least one second, for example C(@every 12h) or C(@every 1h30m))
    are returned unchanged. Descriptors are lower-case; any other C(@...) is an error.
  - >-
    3. B(5 fields) are a Kubernetes (Vixie) cron expression, C(minute hour day-of-month month day-of-week). Each
    field is checked, then a C(0) seconds field is prepended (C(0 2 * * *) becomes C(0 0 2 * * *)) and a warning
    says what was converted, what CloudNativePG would have done with the 5 fields, and what the result means.
    With O(strict=true) a 5-field expression is an error instead.
  - >-
    4. B(6 fields) are checked and returned unchanged, except that these shapes are refused as ambiguous.
    The first field is not a plausible seconds field, that is not one number from 0 to 59 (C(*), C(*/5), C(0,30)
    or C(0-10) would start several backups in each matching minute; C(60) or more is a minute or garbage).
    The sixth field holds a 4-digit number, a year (CloudNativePG has no year field; the expression is a 5-field
    cron expression with a year appended, as in Quartz or AWS EventBridge).
    A C(?) appears outside the day-of-month and day-of-week fields (the AWS EventBridge shape
    C(minute hour day-of-month month day-of-week year), for example C(0 2 * * ? *)).
    When the first five fields form a valid 5-field expression, the error suggests its 6-field conversion.
  - >-
    5. Any other number of fields is an error; 7 fields ending with a year get the same explanation as a year in 4.
  - >-
    Field syntax is robfig/cron's. C(*), C(?) (day-of-month and day-of-week only), a number, a range C(a-b),
    a step C(*/n), C(a/n) or C(a-b/n), lists joined by commas, and the names C(jan)-C(dec) and C(sun)-C(sat)
    (any case). Ranges are second 0-59, minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6
    (0 is Sunday; C(7) is refused, write C(0)). A range must not run backwards and a step must be positive.
    Extensions that robfig/cron does not know (C(L), C(W), C(#), C(H)) are refused.
  - >-
    Every accepted expression is also checked with croniter (C(second_at_beginning=true), C(strict=true)), which
    refuses dates that never exist, such as 31 February.
  - >-
    Every refusal raises an error that says what is wrong and shows a correct 6-field example.
positional: strict
options:
  _input:
    description: The schedule, in 5-field Kubernetes form, 6-field CloudNativePG form, or a robfig/cron descriptor.
    type: str
    required: true
  strict:
    description:
      - Refuse 5-field expressions instead of converting them with a warning.
    type: bool
    default: false
requirements:
  - croniter (on the controller)
notes:
  - The schedule of a Kubernetes C(CronJob) keeps its 5 fields; do not pass it through this filter.
seealso:
  - name: robfig/cron v1 expression format
    description: The format CloudNativePG's ScheduledBackup uses.
    link: https://pkg.go.dev/github.com/robfig/cron#hdr-CRON_Expression_Format
  - name: CloudNativePG scheduled backups
    description: The ScheduledBackup resource and its 6-field schedule.
    link: https://cloudnative-pg.io/documentation/current/backup/#scheduled-backups
'''

EXAMPLES = r'''
- name: The runbook's schedule, converted with a warning - returns '0 0 2 * * *' (daily at 02:00:00)
  ansible.builtin.debug:
    msg: "{{ '0 2 * * *' | pgops.resilience.cnpg_schedule }}"

- name: A 6-field schedule is checked and returned as it is
  ansible.builtin.debug:
    msg: "{{ '0 30 1 * * sun' | pgops.resilience.cnpg_schedule }}"

- name: Refuse 5-field schedules instead of converting them
  ansible.builtin.debug:
    msg: "{{ backup_schedule | pgops.resilience.cnpg_schedule(strict=true) }}"

- name: In a ScheduledBackup template
  ansible.builtin.set_fact:
    scheduled_backup_spec:
      schedule: "{{ backup_schedule | pgops.resilience.cnpg_schedule }}"
      method: plugin
      pluginConfiguration:
        name: barman-cloud.cloudnative-pg.io
'''

RETURN = r'''
_value:
  description:
    - The schedule for C(ScheduledBackup.spec.schedule) - 6 fields, or a descriptor.
  type: str
  sample: '0 0 2 * * *'
'''

import datetime
import inspect
import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.utils.display import Display

try:
    from croniter import croniter
    HAS_CRONITER = True
    CRONITER_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without croniter
    HAS_CRONITER = False
    CRONITER_IMPORT_ERROR = exc

display = Display()

EXAMPLE = ("A CloudNativePG schedule has 6 fields, 'second minute hour day-of-month month day-of-week': "
           "for example '0 0 2 * * *' runs once a day at 02:00:00.")
DESCRIPTORS = ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly')
MONTH_NAMES = dict((name, number) for number, name in enumerate(
    ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'), start=1))
DOW_NAMES = dict((name, number) for number, name in enumerate(('sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat')))

# (name, lowest, highest, names, '?' allowed): robfig/cron's bounds.
SECOND = ('second', 0, 59, None, False)
MINUTE = ('minute', 0, 59, None, False)
HOUR = ('hour', 0, 23, None, False)
DOM = ('day-of-month', 1, 31, None, True)
MONTH = ('month', 1, 12, MONTH_NAMES, False)
DOW = ('day-of-week', 0, 6, DOW_NAMES, True)
CNPG_FIELDS = (SECOND, MINUTE, HOUR, DOM, MONTH, DOW)
CRON5_FIELDS = (MINUTE, HOUR, DOM, MONTH, DOW)

# Go's time.ParseDuration units, in seconds.
GO_DURATION_UNITS = {'ns': 1e-9, 'us': 1e-6, '\u00b5s': 1e-6, '\u03bcs': 1e-6, 'ms': 1e-3, 's': 1, 'm': 60, 'h': 3600}
GO_DURATION_PART = re.compile(r'([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)')
YEAR_LIKE = re.compile(r'[0-9]{4}')
NUMBER = re.compile(r'[0-9]+')
# Fire times are described from this instant (a Thursday), so messages do not depend on the clock.
REFERENCE = datetime.datetime(2025, 12, 31, 23, 59, 59)


class ScheduleError(Exception):
    """A field or expression that CloudNativePG would refuse or misread; the message says why."""


def _values(token, spec):
    """The numbers one value of a field (a number or, where the field has them, a name) stands for."""
    name, low, high, names = spec[:4]
    if names and token.lower() in names:
        return names[token.lower()]
    if not NUMBER.fullmatch(token):
        if token.startswith('-'):
            raise ScheduleError('negative numbers are not allowed in the %s field' % name)
        allowed = ' or the names %s-%s' % (min(names, key=names.get), max(names, key=names.get)) if names else ''
        raise ScheduleError("'%s' is not a number%s (the %s field takes %d-%d)" % (token, allowed, name, low, high))
    return int(token)


def parse_field(text, spec):
    """The set of values a robfig/cron field selects.

    :param text: the field, for example ``*/15`` or ``mon-fri``.
    :param spec: one of the field tuples (name, lowest, highest, names, '?' allowed).
    :raises ScheduleError: naming the field and what is wrong with it.
    """
    name, low, high, names, question = spec
    selected = set()
    for part in text.split(','):
        if not part:
            raise ScheduleError("the %s field '%s' has an empty list item" % (name, text))
        range_text, slash, step_text = part.partition('/')
        if '/' in step_text:
            raise ScheduleError("the %s field '%s' has more than one '/'" % (name, text))
        if range_text in ('*', '?'):
            if range_text == '?' and not question:
                raise ScheduleError("'?' is only allowed in the day-of-month and day-of-week fields, not in the %s field" % name)
            start, end = low, high
        else:
            bounds = range_text.split('-')
            if len(bounds) > 2 or not all(bounds):
                raise ScheduleError("'%s' is not a value or a range a-b in the %s field" % (part, name))
            start = _values(bounds[0], spec)
            end = _values(bounds[1], spec) if len(bounds) == 2 else start
            if slash and len(bounds) == 1:
                end = high   # robfig/cron: 'a/n' means 'a-max/n'
        step = 1
        if slash:
            if not NUMBER.fullmatch(step_text) or int(step_text) == 0:
                raise ScheduleError("the step in '%s' of the %s field must be a positive number" % (part, name))
            step = int(step_text)
        if spec is DOW and 7 in (start, end):
            raise ScheduleError("7 is not a day of week in CloudNativePG's cron (0-6, 0 is Sunday): write 0 for Sunday")
        if start < low or end > high:
            raise ScheduleError("'%s' is out of range in the %s field (%d-%d)" % (part, name, low, high))
        if start > end:
            raise ScheduleError("the range '%s' of the %s field runs backwards" % (part, name))
        selected.update(range(start, end + 1, step))
    return selected


def parse_fields(fields, specs):
    """Check every field against its spec; raise :class:`ScheduleError` for the first bad one."""
    for text, spec in zip(fields, specs):
        parse_field(text, spec)


def _require_croniter():
    if not HAS_CRONITER:
        raise AnsibleFilterError('pgops.resilience.cnpg_schedule needs the Python library croniter on the controller '
                                 '(pip install croniter): %s' % CRONITER_IMPORT_ERROR)


def croniter_error(expression, seconds_first):
    """croniter's objection to ``expression`` (strict: impossible dates too), or None when it accepts it."""
    _require_croniter()
    # 'strict' (day-of-month against month) is newer than the croniter 2.0 requirements.txt allows.
    options = {'strict': True} if 'strict' in inspect.signature(croniter.expand).parameters else {}
    try:
        croniter.expand(expression, second_at_beginning=seconds_first, **options)
    except Exception as exc:  # croniter raises several unrelated types (CroniterError, ValueError, ...)
        return str(exc) or exc.__class__.__name__
    return None


def _span(seconds):
    for unit, size in (('day', 86400), ('hour', 3600), ('minute', 60)):
        if seconds % size == 0:
            count = seconds // size
            return '%d %ss' % (count, unit) if count != 1 else unit
    return '%d seconds' % seconds if seconds != 1 else 'second'


def describe(expression6):
    """How often a 6-field (seconds first) expression fires, with its first fire times, in words.

    For example ``every hour (00:02:00, 01:02:00, 02:02:00, ...)`` or ``once a day at 02:00:00``.
    """
    _require_croniter()
    schedule = croniter(expression6, REFERENCE, second_at_beginning=True)
    times = [schedule.get_next(datetime.datetime) for index in range(4)]
    gaps = set(int((later - earlier).total_seconds()) for earlier, later in zip(times, times[1:]))
    if len(gaps) == 1:
        gap = gaps.pop()
        if gap == 86400:
            return 'once a day at %s' % times[0].strftime('%H:%M:%S')
        if gap == 604800:
            return 'once a week, on %s at %s' % (times[0].strftime('%A'), times[0].strftime('%H:%M:%S'))
        if gap < 86400:
            return 'every %s (%s, ...)' % (_span(gap), ', '.join(t.strftime('%H:%M:%S') for t in times[:3]))
        return 'every %s' % _span(gap)
    return 'first runs %s' % ', '.join(t.strftime('%Y-%m-%d %H:%M:%S') for t in times[:3])


def _go_duration_seconds(text):
    """Seconds in a Go duration such as ``1h30m``; None when Go's time.ParseDuration would refuse it."""
    position = 0
    total = 0.0
    if text in ('', '0'):
        return 0.0 if text == '0' else None
    for match in GO_DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * GO_DURATION_UNITS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


def _check_descriptor(expression):
    if expression in DESCRIPTORS:
        return expression
    if expression.startswith('@every '):
        duration = expression[len('@every '):].strip()
        seconds = _go_duration_seconds(duration)
        if seconds is None:
            raise AnsibleFilterError("cnpg_schedule: '%s': '%s' is not a Go duration (for example 12h, 1h30m, 90s). %s"
                                     % (expression, duration, EXAMPLE))
        if seconds < 1:
            raise AnsibleFilterError("cnpg_schedule: '%s': the interval must be at least 1s; robfig/cron cannot run more "
                                     "often. %s" % (expression, EXAMPLE))
        return '@every ' + duration
    raise AnsibleFilterError("cnpg_schedule: '%s' is not a descriptor CloudNativePG knows (%s, or '@every <duration>'; "
                             "lower-case). %s" % (expression, ', '.join(DESCRIPTORS), EXAMPLE))


def _five_field_suggestion(fields):
    """'Did you mean' text for the 6-field conversion of the first five fields, when they are a valid 5-field cron."""
    five = [field if field != '?' else '*' for field in fields[:5]]
    try:
        parse_fields(five, CRON5_FIELDS)
    except ScheduleError:
        return ''
    candidate = '0 ' + ' '.join(five)
    if croniter_error(candidate, True):
        return ''
    return " If '%s' was meant as a 5-field cron expression, write '%s': %s." % (' '.join(five), candidate, describe(candidate))


def _check_six(expression, fields):
    if YEAR_LIKE.search(fields[5]):
        raise AnsibleFilterError(
            "cnpg_schedule: '%s' ends with '%s', which looks like a year: CloudNativePG's schedule has no year field "
            "(its sixth field is the day of week, 0-6). This is a 5-field cron expression with a year appended "
            "(Quartz, AWS EventBridge); drop the year.%s %s" % (expression, fields[5], _five_field_suggestion(fields), EXAMPLE))
    misplaced = [index for index in (0, 1, 2, 4) if '?' in fields[index]]
    if misplaced:
        raise AnsibleFilterError(
            "cnpg_schedule: '%s' has '?' in the %s field; CloudNativePG allows it only in day-of-month and day-of-week. "
            "It looks like an AWS EventBridge expression (minute hour day-of-month month day-of-week year), which "
            "CloudNativePG would misread.%s %s"
            % (expression, CNPG_FIELDS[misplaced[0]][0], _five_field_suggestion(fields), EXAMPLE))
    seconds = fields[0]
    try:
        selected = parse_field(seconds, SECOND)
    except ScheduleError as exc:
        raise AnsibleFilterError(
            "cnpg_schedule: '%s': CloudNativePG reads the first field as the seconds (0-59), and %s. It does not look "
            "like a CloudNativePG schedule.%s %s" % (expression, exc, _five_field_suggestion(fields), EXAMPLE))
    if not NUMBER.fullmatch(seconds):
        raise AnsibleFilterError(
            "cnpg_schedule: '%s' is ambiguous: CloudNativePG reads the first field as the seconds, and '%s' selects %d "
            "seconds of every matching minute, so a backup would start %d times a minute. A backup schedule names one "
            "second, normally 0; the first field is not the minute.%s %s"
            % (expression, seconds, len(selected), len(selected), _five_field_suggestion(fields), EXAMPLE))
    try:
        parse_fields(fields[1:], CNPG_FIELDS[1:])
    except ScheduleError as exc:
        raise AnsibleFilterError("cnpg_schedule: '%s' is not a valid CloudNativePG schedule: %s. %s" % (expression, exc, EXAMPLE))
    objection = croniter_error(expression, True)
    if objection:
        raise AnsibleFilterError("cnpg_schedule: '%s' is not a usable schedule: croniter says %s. %s" % (expression, objection, EXAMPLE))
    return expression


def _cnpg_reading_of_five(fields):
    """What CloudNativePG itself does with a 5-field expression (second minute hour day-of-month month)."""
    mapping = ', '.join('%s %s' % (spec[0], text) for spec, text in zip(CNPG_FIELDS, fields))
    try:
        parse_fields(fields, CNPG_FIELDS[:5])
    except ScheduleError as exc:
        return 'CloudNativePG would read it as %s and reject it (%s).' % (mapping, exc)
    as_six = ' '.join(fields) + ' *'
    if croniter_error(as_six, True):
        return 'CloudNativePG would read it as %s, a schedule that never fires.' % mapping
    return ("CloudNativePG would read it as %s: %s - not what the 5-field form means (that misreading is why a "
            "'0 2 * * *' ScheduledBackup runs every hour instead of once a day). If CloudNativePG's reading is what "
            "you want, write it as '%s'." % (mapping, describe(as_six), as_six))


def _convert_five(expression, fields, strict):
    try:
        parse_fields(fields, CRON5_FIELDS)
    except ScheduleError as exc:
        raise AnsibleFilterError("cnpg_schedule: '%s' is not a valid 5-field cron expression (minute hour day-of-month "
                                 "month day-of-week): %s. %s" % (expression, exc, EXAMPLE))
    objection = croniter_error(' '.join(fields), False)
    if objection:
        raise AnsibleFilterError("cnpg_schedule: '%s' is not a usable schedule: croniter says %s. %s" % (expression, objection, EXAMPLE))
    converted = '0 ' + ' '.join(fields)
    explanation = (
        "'%s' has 5 fields, the Kubernetes CronJob format (minute hour day-of-month month day-of-week), but a "
        "CloudNativePG ScheduledBackup reads 6 fields with the seconds first (second minute hour day-of-month month "
        "day-of-week). %s" % (expression, _cnpg_reading_of_five(fields)))
    if strict:
        raise AnsibleFilterError("cnpg_schedule (strict): %s Write '%s' instead: %s." % (explanation, converted, describe(converted)))
    display.warning("cnpg_schedule: %s Converted to '%s' by prepending a 0 seconds field: %s. Write the 6-field form "
                    "to silence this warning." % (explanation, converted, describe(converted)))
    return converted


def cnpg_schedule(value, strict=False):
    """Return the CloudNativePG (robfig/cron, seconds first) form of a schedule; see DOCUMENTATION for the rules.

    - 5 fields (Kubernetes cron): checked, ``0`` seconds prepended, warning emitted (error when ``strict``).
    - 6 fields: checked, returned unchanged (fields joined by one space); ambiguous shapes (first field not one second 0-59, a year as sixth
      field, '?' outside day-of-month/day-of-week) are errors.
    - ``@yearly @annually @monthly @weekly @daily @midnight @hourly`` and ``@every <Go duration >= 1s>``: unchanged.

    :raises AnsibleFilterError: for anything else, with the reason and a correct 6-field example.
    """
    if not isinstance(value, str):
        raise AnsibleFilterError('cnpg_schedule expects a string, got %s (%r). %s' % (type(value).__name__, value, EXAMPLE))
    try:
        strict = boolean(strict, strict=True)
    except TypeError as exc:
        raise AnsibleFilterError('cnpg_schedule: strict must be a boolean: %s' % exc)
    expression = value.strip()
    if not expression:
        raise AnsibleFilterError('cnpg_schedule: the schedule is empty. %s' % EXAMPLE)
    if expression.startswith('@'):
        return _check_descriptor(expression)
    fields = expression.split()
    if len(fields) == 6:
        return _check_six(' '.join(fields), fields)
    if len(fields) == 5:
        return _convert_five(expression, fields, strict)
    if len(fields) == 7 and YEAR_LIKE.search(fields[6]):
        suggestion = ''
        try:
            suggestion = " Without it, '%s' is %s." % (_check_six(' '.join(fields[:6]), fields[:6]), describe(' '.join(fields[:6])))
        except AnsibleFilterError:
            pass
        raise AnsibleFilterError(
            "cnpg_schedule: '%s' has 7 fields ending with the year '%s' (Quartz format); CloudNativePG's schedule has no "
            "year field, drop it.%s %s" % (expression, fields[6], suggestion, EXAMPLE))
    raise AnsibleFilterError("cnpg_schedule: '%s' has %d field%s; CloudNativePG needs 6 (a 5-field Kubernetes cron "
                             "expression is converted). %s" % (expression, len(fields), '' if len(fields) == 1 else 's', EXAMPLE))


class FilterModule(object):
    """pgops.resilience filters."""

    def filters(self):
        return {'cnpg_schedule': cnpg_schedule}
