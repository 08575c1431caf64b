//! Ticket numbers and calendar days (UTC), without a date library.

use crate::rules::NumberFormat;

/// The UTC calendar day of a Unix time in microseconds, as `YYYYMMDD`.
pub fn civil_day(unix_micros: i64) -> i32 {
    let days = unix_micros.div_euclid(86_400_000_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    i32::try_from(y * 10_000 + m * 100 + d).unwrap_or(0)
}

/// The counter a number is drawn from: one per day for date-based numbers.
pub fn counter_name(format: NumberFormat, day: i32) -> String {
    match format {
        NumberFormat::Date => format!("date:{day}"),
        NumberFormat::AutoIncrement => "auto".to_owned(),
    }
}

/// A ticket number from the counter value: `YYYYMMDD` + 2-digit system id + the counter
/// (at least 5 digits), or the counter alone.
pub fn format_number(format: NumberFormat, day: i32, system_id: u32, value: i64) -> String {
    match format {
        NumberFormat::Date => format!("{day:08}{:02}{value:05}", system_id % 100),
        NumberFormat::AutoIncrement => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_numbers() {
        assert_eq!(civil_day(0), 19_700_101);
        // 2026-11-30T11:00:00Z
        assert_eq!(civil_day(1_796_036_400 * 1_000_000), 20_261_130);
        assert_eq!(civil_day(951_782_400 * 1_000_000), 20_000_229);
        assert_eq!(format_number(NumberFormat::Date, 20_261_129, 10, 12), "202611291000012");
        assert_eq!(format_number(NumberFormat::AutoIncrement, 20_261_129, 10, 12), "12");
    }
}
