//! Cron schedules of scheduled webhooks (SPEC §13): parsing, the next and the latest
//! occurrence in an IANA time zone, and the 30-day rules. croner parses standard five-field
//! cron (`*`, lists, ranges, steps, names) and keeps Vixie cron's daylight-saving rules: a
//! time in the hour that is skipped runs right after the change, a time in the hour that
//! repeats runs once. chrono-tz holds the time zones. Times cross into SQL as `timestamptz`.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// Longest gap between two runs, and farthest first run (SPEC §13).
const MAX_GAP_DAYS: i64 = 30;
/// How far ahead the gap rule is checked.
const CHECKED_DAYS: i64 = 366;
/// The jump of the gap check: see [`rule_error`].
const JUMP_DAYS: i64 = 15;
const MAX_CRON_CHARS: usize = 100;
const MAX_ZONE_CHARS: usize = 64;
/// Microseconds from the Unix epoch to Postgres's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The cron expression: exactly five fields, no seconds or years.
pub fn parse(cron: &str) -> Result<Cron, String> {
    if cron.chars().count() > MAX_CRON_CHARS {
        return Err(format!(
            "schedule.cron must be at most {MAX_CRON_CHARS} characters"
        ));
    }
    if cron.split_whitespace().count() != 5 {
        return Err(
            "schedule.cron must have 5 fields: minute hour day-of-month month day-of-week".into(),
        );
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| format!("schedule.cron does not parse: {e}"))
}

/// The time zone, by its IANA name.
pub fn zone(name: &str) -> Result<Tz, String> {
    let bad = || "schedule.timezone must be an IANA time zone name such as Europe/Rome".to_owned();
    if name.is_empty() || name.len() > MAX_ZONE_CHARS {
        return Err(bad());
    }
    name.parse::<Tz>().map_err(|_| bad())
}

/// `t` without its fraction of a second: croner keeps the fraction of the time it starts
/// from in the run it finds (09:00:00.196 for a search from 08:59:40.196).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// The first run strictly after `after`, if there is one.
pub fn next_after(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&whole_second(after).with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The last run at or before `until`, if there is one.
pub fn latest_until(cron: &Cron, tz: Tz, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_previous_occurrence(&whole_second(until).with_timezone(&tz), true)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Why a schedule is refused from `from` on, or `None`: its first run must be at most 30
/// days away (checked day by day first, so a cron that never runs costs no search) and no
/// two runs of the next year more than 30 days apart. The check jumps: from a run `o`, the
/// last run `p` at or before `o + 15 days`, if later than `o`, ends a stretch whose every gap
/// is under 15 days; else the gap after `o` is the next run's distance, checked and stepped.
/// So a year takes ~25 jumps plus two per block of runs, whatever the cron (a dense block
/// like `* * * 1,3-12 *` is one jump per 15 days, not one step per minute).
pub fn rule_error(cron: &Cron, tz: Tz, from: DateTime<Utc>) -> Option<String> {
    let max_gap = Duration::days(MAX_GAP_DAYS);
    let gap_error = || {
        Some(format!(
            "schedule must not leave more than {MAX_GAP_DAYS} days between two runs"
        ))
    };
    let too_far = || {
        Some(format!(
            "schedule's next run must be at most {MAX_GAP_DAYS} days away"
        ))
    };
    // A day that can hold a run within the limit, before any search: croner looks for a
    // cron that never matches (`0 0 30 2 *`) until the year 5000, 20 to 70 ms per call.
    let today = from.with_timezone(&tz).date_naive();
    let has_day = (0..=MAX_GAP_DAYS + 1)
        .filter_map(|i| today.checked_add_signed(Duration::days(i)))
        .any(|d| {
            cron.pattern.month_match(d.month()).unwrap_or(false)
                && cron
                    .pattern
                    .day_match(d.year(), d.month(), d.day())
                    .unwrap_or(false)
        });
    let Some(first) = has_day.then(|| next_after(cron, tz, from)).flatten() else {
        return too_far();
    };
    if first - from > max_gap {
        return too_far();
    }
    let end = from + Duration::days(CHECKED_DAYS);
    let mut run = first;
    while run < end {
        match latest_until(cron, tz, run + Duration::days(JUMP_DAYS)) {
            Some(p) if p > run => run = p,
            _ => match next_after(cron, tz, run) {
                Some(n) if n - run <= max_gap => run = n,
                _ => return gap_error(),
            },
        }
    }
    None
}

fn to_utc(t: TimestampWithTimeZone) -> Option<DateTime<Utc>> {
    if !t.is_finite() {
        return None;
    }
    let micros = t.into_inner().checked_add(PG_EPOCH_MICROS)?;
    Utc.timestamp_micros(micros).single()
}

fn to_sql(t: DateTime<Utc>) -> Option<TimestampWithTimeZone> {
    let micros = t.timestamp_micros().checked_sub(PG_EPOCH_MICROS)?;
    TimestampWithTimeZone::try_from(micros).ok()
}

/// `echovalue.schedule_next(cron, timezone, after)`: the first run strictly after `after`;
/// NULL when the cron or the time zone does not parse, or it never runs.
#[pg_extern(immutable, parallel_safe, strict, name = "schedule_next")]
fn schedule_next(
    cron: &str,
    timezone: &str,
    after: TimestampWithTimeZone,
) -> Option<TimestampWithTimeZone> {
    let (c, tz) = (parse(cron).ok()?, zone(timezone).ok()?);
    to_sql(next_after(&c, tz, to_utc(after)?)?)
}

/// `echovalue.schedule_latest(cron, timezone, until)`: the last run at or before `until`
/// (the one that missed runs collapse into); NULL as for schedule_next.
#[pg_extern(immutable, parallel_safe, strict, name = "schedule_latest")]
fn schedule_latest(
    cron: &str,
    timezone: &str,
    until: TimestampWithTimeZone,
) -> Option<TimestampWithTimeZone> {
    let (c, tz) = (parse(cron).ok()?, zone(timezone).ok()?);
    to_sql(latest_until(&c, tz, to_utc(until)?)?)
}

/// `echovalue._schedule_error(cron, timezone, from)`: why a schedule is refused, as a 400
/// body, or NULL.
#[pg_extern(immutable, parallel_safe, name = "_schedule_error")]
fn schedule_error(
    cron: Option<&str>,
    timezone: Option<&str>,
    from: Option<TimestampWithTimeZone>,
) -> Option<String> {
    let why = (|| {
        let c = parse(cron.ok_or("schedule.cron is required")?)?;
        let tz = zone(timezone.ok_or("schedule.timezone is required")?)?;
        let from = from.and_then(to_utc).ok_or("schedule needs a start time")?;
        rule_error(&c, tz, from).map_or(Ok(()), Err)
    })();
    why.err().map(|e: String| format!("Bad Request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_and_a_zone() {
        assert!(parse("*/5 * * * *").is_ok());
        assert!(parse("0 9 * * MON-FRI").is_ok());
        assert!(parse("* * * * * *").unwrap_err().contains("5 fields"));
        assert!(parse("@hourly").unwrap_err().contains("5 fields"));
        assert!(parse("61 * * * *").unwrap_err().contains("does not parse"));
        assert!(zone("Europe/Rome").is_ok());
        assert!(zone("Mars/Olympus").is_err());
        assert!(zone("").is_err());
    }

    #[test]
    fn thirty_day_rules() {
        let from = at("2026-01-15T00:00:00Z");
        let utc: Tz = "UTC".parse().unwrap();
        let check = |c: &str| rule_error(&parse(c).unwrap(), utc, from);
        assert_eq!(check("*/5 * * * *"), None);
        assert_eq!(check("0 9 * * 1"), None);
        // Jan 31 -> Mar 31: 59 days
        assert!(check("0 0 31 * *").unwrap().contains("more than 30 days"));
        // the 1st of each month: Jan 1 -> Feb 1 is 31 days
        assert!(check("0 0 1 * *").is_some());
        // once a year: the first run is months away
        assert!(check("0 0 1 6 *").unwrap().contains("next run"));
        // never: refused before any search
        assert!(check("0 0 30 2 *").unwrap().contains("next run"));
        // dense blocks with a gap under 30 days (February) are fine; with one over, refused
        assert_eq!(check("* * * 1,3-12 *"), None);
        assert!(check("* * * 1,4-12 *")
            .unwrap()
            .contains("more than 30 days"));
        assert_eq!(check("*/10 8-18 * * 1-5"), None);
        assert!(check("0 0 31 4,6,9,11 *").unwrap().contains("next run"));
    }

    #[test]
    fn rome_across_both_changes() {
        let rome: Tz = "Europe/Rome".parse().unwrap();
        let c = parse("30 2 * * *").unwrap();
        // 29 March 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist, it runs at 03:00
        let spring = next_after(&c, rome, at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(spring, at("2026-03-29T01:00:00Z"));
        // 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, it runs once
        let first = next_after(&c, rome, at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        assert_eq!(
            next_after(&c, rome, first).unwrap(),
            at("2026-10-26T01:30:00Z")
        );
        // a run is at a whole minute, whatever fraction of a second the search starts from
        let every = parse("* * * * *").unwrap();
        assert_eq!(
            next_after(&every, rome, at("2026-12-02T03:26:40.196660Z")).unwrap(),
            at("2026-12-02T03:27:00Z")
        );
        assert_eq!(
            next_after(&every, rome, at("2026-12-02T03:27:00.5Z")).unwrap(),
            at("2026-12-02T03:28:00Z")
        );
        assert_eq!(
            latest_until(&every, rome, at("2026-12-02T03:27:00.5Z")).unwrap(),
            at("2026-12-02T03:27:00Z")
        );
        let nine = parse("0 9 * * *").unwrap();
        assert_eq!(
            next_after(&nine, rome, at("2026-03-29T00:00:00Z")).unwrap(),
            at("2026-03-29T07:00:00Z")
        );
        assert_eq!(
            latest_until(&nine, rome, at("2026-03-29T07:00:00Z")).unwrap(),
            at("2026-03-29T07:00:00Z")
        );
    }
}
