//! `DATE 'YYYY-MM-DD'` and `TIMESTAMP 'YYYY-MM-DD HH:MM:SS[.fff]'` literals (UTC) to and from
//! epoch milliseconds, with the proleptic Gregorian calendar (Howard Hinnant's algorithms).

const MS_PER_DAY: i64 = 86_400_000;

/// Epoch milliseconds of 0000-01-01 and of 9999-12-31 23:59:59.999, the printable range.
pub(crate) const MIN_EPOCH_MS: i64 = -62_167_219_200_000;
pub(crate) const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

/// Parses a date (`timestamp == false`) or a timestamp literal's text.
pub(crate) fn parse(text: &str, timestamp: bool) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) if timestamp => (date, Some(time.trim())),
        Some(_) => return None,
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year = digits(parts.next()?, 4)?;
    let month = digits(parts.next()?, 2)?;
    let day = digits(parts.next()?, 2)?;
    if parts.next().is_some()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
    {
        return None;
    }
    let mut epoch_ms = days_from_civil(year, month, day) * MS_PER_DAY;
    if let Some(time) = time {
        epoch_ms += parse_time(time)?;
    }
    Some(epoch_ms)
}

fn parse_time(time: &str) -> Option<i64> {
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut parts = clock.split(':');
    let hour = digits(parts.next()?, 2)?;
    let minute = digits(parts.next()?, 2)?;
    let second = match parts.next() {
        Some(second) => digits(second, 2)?,
        None => 0,
    };
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let millis = match fraction {
        None => 0,
        Some(fraction)
            if (1..=3).contains(&fraction.len())
                && fraction.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            let padded = format!("{fraction:0<3}");
            padded.parse::<i64>().ok()?
        }
        Some(_) => return None,
    };
    Some(((hour * 60 + minute) * 60 + second) * 1000 + millis)
}

fn digits(text: &str, count: usize) -> Option<i64> {
    (text.len() == count && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())?
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Prints `YYYY-MM-DD HH:MM:SS`, with `.fff` only when the milliseconds are not zero.
pub(crate) fn format_timestamp(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = epoch_ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let seconds = ms_of_day / 1000;
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let millis = ms_of_day % 1000;
    if millis == 0 {
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}")
    } else {
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{millis:03}")
    }
}

/// Prints RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SSZ`, with `.fff` only when the milliseconds
/// are not zero (GeoJSON properties, OGC API - Features).
pub fn format_rfc3339(epoch_ms: i64) -> String {
    let mut text = format_timestamp(epoch_ms.clamp(MIN_EPOCH_MS, MAX_EPOCH_MS));
    text.replace_range(10..11, "T");
    text.push('Z');
    text
}

/// Parses an RFC 3339 date-time (`2026-12-07T10:00:00Z`, `...T10:00:00.5+01:00`; any number
/// of fraction digits, kept to the millisecond) or a full date (`2026-12-07`, its midnight
/// UTC) to epoch milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() == 10 {
        return parse(text, false);
    }
    if text.len() < 20 || !matches!(text.as_bytes()[10], b'T' | b't') {
        return None;
    }
    let (date, rest) = text.split_at(10);
    let rest = &rest[1..];
    let (clock, offset_minutes) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let split = rest.len().checked_sub(6)?;
        if !rest.is_char_boundary(split) {
            return None;
        }
        let (clock, offset) = rest.split_at(split);
        let sign = match offset.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (hours, minutes) = offset[1..].split_once(':')?;
        let (hours, minutes) = (digits(hours, 2)?, digits(minutes, 2)?);
        if hours > 23 || minutes > 59 {
            return None;
        }
        (clock, sign * (hours * 60 + minutes))
    };
    // Fractions past the millisecond are dropped.
    let clock = match clock.split_once('.') {
        Some((whole, fraction))
            if !fraction.is_empty() && fraction.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            format!("{whole}.{}", &fraction[..fraction.len().min(3)])
        }
        Some(_) => return None,
        None => clock.to_owned(),
    };
    if clock.len() < 8 {
        return None;
    }
    let local = parse(&format!("{date} {clock}"), true)?;
    Some(local - offset_minutes * 60_000).filter(|ms| (MIN_EPOCH_MS..=MAX_EPOCH_MS).contains(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_795_523_696_789),
            "2026-11-24T12:34:56.789Z"
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T12:34:56.789Z"),
            Some(1_795_523_696_789)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T12:34:56.789123Z"),
            Some(1_795_523_696_789)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24t13:34:56.789+01:00"),
            Some(1_795_523_696_789)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T11:34:56.789-01:00"),
            Some(1_795_523_696_789)
        );
        assert_eq!(parse_rfc3339("1970-01-02"), Some(86_400_000));
        // Outside what prints (years 0000 to 9999 in UTC): refused.
        assert_eq!(parse_rfc3339("0000-01-01T00:30:00+01:00"), None);
        assert_eq!(parse_rfc3339("9999-12-31T23:30:00-01:00"), None);
        for bad in [
            "",
            "2026-11-24T12:34Z",
            "2026-11-24T12:34:56",
            "2026-11-24 12:34:56Z",
            "2026-13-24T12:34:56Z",
            "2026-11-24T12:34:56.Z",
            "2026-11-24T12:34:56+1:00",
            "2026-11-24T12:34:56+24:00",
            "2026-11-24T12:34:56.xZ",
            "2026-11-24T12:34:56é",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_and_timestamps_parse_to_epoch_ms() {
        assert_eq!(parse("1970-01-01", false), Some(0));
        assert_eq!(parse("2024-02-29", false), Some(1_709_164_800_000));
        assert_eq!(
            parse("2026-11-24 12:34:56.789", true),
            Some(1_795_523_696_789)
        );
        assert_eq!(
            parse("2026-11-24 12:34:56.7", true),
            Some(1_795_523_696_700)
        );
        assert_eq!(parse("2026-11-24 12:34", true), Some(1_795_523_640_000));
        assert_eq!(parse("1969-12-31 23:59:59", true), Some(-1000));
        assert_eq!(parse("0000-01-01", false), Some(MIN_EPOCH_MS));
        assert_eq!(parse("9999-12-31 23:59:59.999", true), Some(MAX_EPOCH_MS));
    }

    #[test]
    fn malformed_dates_are_refused() {
        for text in [
            "2023-02-29",
            "2024-13-01",
            "24-01-01",
            "2024-1-01",
            "2024-01-01 24:00:00",
            "2024-01-01 10:00:00.1234",
            "x",
        ] {
            assert_eq!(parse(text, true), None, "{text}");
        }
        assert_eq!(
            parse("2024-01-01 10:00:00", false),
            None,
            "DATE takes no time"
        );
    }

    #[test]
    fn formatting_round_trips() {
        for epoch_ms in [
            0,
            -1,
            1_795_524_896_789,
            MIN_EPOCH_MS,
            MAX_EPOCH_MS,
            951_782_400_000,
        ] {
            assert_eq!(
                parse(&format_timestamp(epoch_ms), true),
                Some(epoch_ms),
                "{epoch_ms}"
            );
        }
    }
}
