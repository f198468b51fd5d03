//! Calendar arithmetic on Unix seconds in UTC, for the textual dates CRMs exchange
//! (`YYYY-MM-DD`, `HH:MM:SS`). Proleptic Gregorian calendar, after H. Hinnant's algorithms.

/// Days since 1970-01-01 of a date.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `("YYYY-MM-DD", "HH:MM:SS")` of a Unix time, in UTC.
pub fn utc_date_time(unix: i64) -> (String, String) {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}:{:02}:{:02}", secs / 3600, secs % 3600 / 60, secs % 60))
}

/// Unix seconds of `YYYY-MM-DD HH:MM[:SS]` read as UTC.
pub fn parse_utc(value: &str) -> Option<i64> {
    let (date, time) = value.trim().split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.trim_end_matches('Z').split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || !(0..24).contains(&h) || !(0..60).contains(&min) {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s)
}

/// Unix seconds of an RFC 3339 date-time (`2026-12-01T09:30:00Z`, `…+07:00`, fractions of a
/// second dropped).
pub fn parse_rfc3339(value: &str) -> Option<i64> {
    let value = value.trim();
    if value.len() < 20 || !matches!(value.as_bytes()[10], b'T' | b't' | b' ') {
        return None;
    }
    let (date, rest) = value.split_at(10);
    let rest = &rest[1..];
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(at) => rest.split_at(at),
        None => return None,
    };
    let clock = clock.split_once('.').map_or(clock, |(whole, fraction)| {
        if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) { "" } else { whole }
    });
    let field = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<i64>().ok()).flatten()
    };
    let mut d = date.split('-');
    let (y, m, day) = (field(d.next()?, 4)?, field(d.next()?, 2)?, field(d.next()?, 2)?);
    let mut t = clock.split(':');
    let (h, min, s) = (field(t.next()?, 2)?, field(t.next()?, 2)?, field(t.next()?, 2)?);
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    let offset_secs = match offset {
        "Z" | "z" => 0,
        _ => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (oh, om) = offset[1..].split_once(':')?;
            let (oh, om) = (field(oh, 2)?, field(om, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s - offset_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(utc_date_time(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(utc_date_time(1_700_000_000), ("2023-11-14".into(), "22:13:20".into()));
        assert_eq!(parse_utc("2023-11-14 22:13:20"), Some(1_700_000_000));
        assert_eq!(parse_utc("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(parse_utc("2023-13-01 00:00:00"), None);
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-15T05:13:20.250+07:00"), Some(1_700_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T20:13:20-02:00"), Some(1_700_000_000));
        for bad in [
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13Z",
            "2023-13-14T22:13:20Z",
            "x023-11-14T22:13:20Z",
            "2023-11-14T22:13:20+7",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for day in [-800_000, -1, 0, 59, 60, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), day);
        }
    }
}
