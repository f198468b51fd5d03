//! Vtiger's datetime strings (`YYYY-MM-DD HH:MM:SS`, server time = UTC in the observed install).
//! Done by hand with the civil-from-days algorithm rather than pulling in a date crate for two
//! conversions.

/// Formats Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn datetime(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs_of_day = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs_of_day / 3600, (secs_of_day % 3600) / 60, secs_of_day % 60)
}

/// Formats Unix seconds as `YYYY-MM-DD` (UTC).
pub(crate) fn date(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` (UTC) back to Unix seconds.
pub(crate) fn parse(s: &str) -> Option<i64> {
    let (date, time) = match s.split_once(' ') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut p = t.splitn(3, ':').map(|p| p.parse::<i64>().ok());
            let (h, mi, se) = (p.next()??, p.next().unwrap_or(Some(0))?, p.next().unwrap_or(Some(0))?);
            if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..62).contains(&se) {
                return None;
            }
            h * 3600 + mi * 60 + se
        }
    };
    Some(days_from_civil(y, m, day) * 86_400 + secs)
}

/// Howard Hinnant's `days_from_civil`: (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    // Both are in range by construction (1..=31, 1..=12).
    (y, u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(datetime(951_825_600), "2000-02-29 12:00:00");
        assert_eq!(date(1_628_075_023), "2021-08-04");
    }

    #[test]
    fn parses_what_it_formats() {
        for t in [0, 951_825_600, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse(&datetime(t)), Some(t));
        }
        assert_eq!(parse("2021-08-04"), Some(1_628_035_200));
        assert_eq!(parse("2021-13-04"), None);
        assert_eq!(parse("nonsense"), None);
    }
}
