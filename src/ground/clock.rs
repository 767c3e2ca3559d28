//! Wall-clock helpers. Anki mixes seconds and milliseconds; the names say which.

use std::time::{SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z. A board without a real-time clock boots in 1970 (or
/// at the last saved fake-hwclock time); anything before this date means the
/// clock has not been set yet and every client would refuse our timestamps.
const EARLIEST_PLAUSIBLE_SECS: i64 = 1_767_225_600;

pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn now_secs() -> i64 {
    now_millis() / 1000
}

/// True when the system clock is obviously unset (see [`EARLIEST_PLAUSIBLE_SECS`]).
pub(crate) fn is_unset(now_secs: i64) -> bool {
    now_secs < EARLIEST_PLAUSIBLE_SECS
}

/// The most recent 04:00 UTC at or before `now_secs`: the scheduler's day 0
/// for a collection the server creates itself.
pub(crate) fn last_day_start(now_secs: i64) -> i64 {
    const DAY: i64 = 86_400;
    const FOUR_AM: i64 = 4 * 3_600;
    let start = now_secs.div_euclid(DAY) * DAY + FOUR_AM;
    if start > now_secs {
        start - DAY
    } else {
        start
    }
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's
/// algorithm).
pub(crate) fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The day counted from 1970-01-01 of a (year, month, day): [`civil`]
/// backwards.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_start_is_the_previous_four_am() {
        // 2026-11-23 03:00 UTC -> 2026-11-22 04:00 UTC
        assert_eq!(last_day_start(1_795_402_800), 1_795_320_000);
        // 2026-11-23 05:00 UTC -> 2026-11-23 04:00 UTC
        assert_eq!(last_day_start(1_795_410_000), 1_795_406_400);
    }

    #[test]
    fn unset_clock_is_detected() {
        assert!(is_unset(0));
        assert!(is_unset(1_600_000_000));
        assert!(!is_unset(1_795_402_800));
    }
}
