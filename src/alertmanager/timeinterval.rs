//! Time intervals (`time_intervals:` in `alertmanager.yml`): times of day, weekdays,
//! days of month, months and years in a location, as Alertmanager's
//! `timeinterval` package reads and evaluates them.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Deserialize;

/// A time interval could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum TimeIntervalError {
    #[error("couldn't parse timestamp {0}, invalid format")]
    BadTime(String),
    #[error("start time cannot be equal or greater than end time")]
    TimeOrder,
    #[error("{0} is not a valid weekday")]
    BadWeekday(String),
    #[error("{0} is not a valid month")]
    BadMonth(String),
    #[error("invalid range {0}")]
    BadRange(String),
    #[error("{0}")]
    Range(String),
    #[error("unknown time zone {0}")]
    BadLocation(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeRange {
    start_time: String,
    end_time: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeInterval {
    #[serde(default)]
    times: Vec<RawTimeRange>,
    #[serde(default)]
    weekdays: Vec<String>,
    #[serde(default)]
    days_of_month: Vec<String>,
    #[serde(default)]
    months: Vec<String>,
    #[serde(default)]
    years: Vec<String>,
    location: Option<String>,
}

/// One time interval: every criterion that is given must hold (empty = any).
/// Ranges are inclusive, except times of day, which end exclusively.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawTimeInterval")]
pub struct TimeInterval {
    /// Minutes of the day, `[start, end)`.
    pub times: Vec<(u32, u32)>,
    /// 0 = Sunday … 6 = Saturday, inclusive ranges.
    pub weekdays: Vec<(i32, i32)>,
    /// 1..=31 or -31..=-1 counted from the month's end, inclusive ranges.
    pub days_of_month: Vec<(i32, i32)>,
    /// 1..=12, inclusive ranges.
    pub months: Vec<(i32, i32)>,
    /// Inclusive ranges of years.
    pub years: Vec<(i32, i32)>,
    /// Where the calendar is read; UTC when absent.
    pub location: TimeZone,
}

fn parse_hhmm(s: &str) -> Result<u32, TimeIntervalError> {
    let bad = || TimeIntervalError::BadTime(s.to_string());
    if s == "24:00" {
        return Ok(24 * 60);
    }
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Splits `a:b` (or `a`) and parses both ends with `f`.
fn range<F>(s: &str, f: F) -> Result<(i32, i32), TimeIntervalError>
where
    F: Fn(&str) -> Result<i32, TimeIntervalError>,
{
    match s.split_once(':') {
        Some((a, b)) => Ok((f(a)?, f(b)?)),
        None => {
            let v = f(s)?;
            Ok((v, v))
        }
    }
}

impl TryFrom<RawTimeInterval> for TimeInterval {
    type Error = TimeIntervalError;

    fn try_from(raw: RawTimeInterval) -> Result<Self, Self::Error> {
        let mut times = Vec::new();
        for t in &raw.times {
            let (s, e) = (parse_hhmm(&t.start_time)?, parse_hhmm(&t.end_time)?);
            if s >= e {
                return Err(TimeIntervalError::TimeOrder);
            }
            times.push((s, e));
        }
        let mut weekdays = Vec::new();
        for w in &raw.weekdays {
            let r = range(w, |d| {
                let l = d.to_lowercase();
                WEEKDAYS
                    .iter()
                    .position(|n| *n == l)
                    .map(|i| i as i32)
                    .ok_or_else(|| TimeIntervalError::BadWeekday(d.to_string()))
            })?;
            if r.0 > r.1 {
                return Err(TimeIntervalError::Range(
                    "start day cannot be before end day".into(),
                ));
            }
            weekdays.push(r);
        }
        let mut days_of_month = Vec::new();
        for d in &raw.days_of_month {
            let r = range(d, |x| {
                let v: i32 = x
                    .parse()
                    .map_err(|_| TimeIntervalError::BadRange(d.to_string()))?;
                if v == 0 || !(-31..=31).contains(&v) {
                    return Err(TimeIntervalError::Range(format!(
                        "{v} is not a valid day of the month: out of range"
                    )));
                }
                Ok(v)
            })?;
            if r.0 < 0 && r.1 > 0 {
                return Err(TimeIntervalError::Range(
                    "end day must be negative if start day is negative".into(),
                ));
            }
            if (r.0 > 0) == (r.1 > 0) && r.0 > r.1 {
                return Err(TimeIntervalError::Range(
                    "start day cannot be before end day".into(),
                ));
            }
            days_of_month.push(r);
        }
        let mut months = Vec::new();
        for m in &raw.months {
            let r = range(m, |x| {
                let l = x.to_lowercase();
                if let Some(i) = MONTHS.iter().position(|n| *n == l) {
                    return Ok(i as i32 + 1);
                }
                match x.parse::<i32>() {
                    Ok(v) if (1..=12).contains(&v) => Ok(v),
                    _ => Err(TimeIntervalError::BadMonth(x.to_string())),
                }
            })?;
            if r.0 > r.1 {
                return Err(TimeIntervalError::Range(
                    "end month is before start month".into(),
                ));
            }
            months.push(r);
        }
        let mut years = Vec::new();
        for y in &raw.years {
            let r = range(y, |x| {
                x.parse::<i32>()
                    .map_err(|_| TimeIntervalError::BadRange(y.to_string()))
            })?;
            if r.0 > r.1 {
                return Err(TimeIntervalError::Range(
                    "end year cannot be before start year".into(),
                ));
            }
            years.push(r);
        }
        let location = match raw.location.as_deref() {
            None | Some("") | Some("UTC") => TimeZone::UTC,
            Some("Local") => TimeZone::system(),
            Some(name) => {
                TimeZone::get(name).map_err(|_| TimeIntervalError::BadLocation(name.to_string()))?
            }
        };
        Ok(TimeInterval {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            location,
        })
    }
}

fn in_ranges(v: i32, rs: &[(i32, i32)]) -> bool {
    rs.is_empty() || rs.iter().any(|(a, b)| *a <= v && v <= *b)
}

impl TimeInterval {
    /// Whether `t` falls inside this interval.
    pub fn contains(&self, t: Timestamp) -> bool {
        let z = t.to_zoned(self.location.clone());
        let minute = z.hour() as u32 * 60 + z.minute() as u32;
        if !self.times.is_empty() && !self.times.iter().any(|(s, e)| *s <= minute && minute < *e) {
            return false;
        }
        if !self.days_of_month.is_empty() {
            let dim = z.days_in_month() as i32;
            let day = z.day() as i32;
            let ok = self.days_of_month.iter().any(|(a, b)| {
                // Negative days count back from the month's end; ends beyond the
                // month are clamped to it.
                let conv = |d: i32| if d < 0 { dim + d + 1 } else { d };
                let (s, e) = (conv(*a).max(1), conv(*b).min(dim));
                s <= day && day <= e
            });
            if !ok {
                return false;
            }
        }
        in_ranges(z.month() as i32, &self.months)
            && in_ranges(z.weekday().to_sunday_zero_offset() as i32, &self.weekdays)
            && in_ranges(z.year() as i32, &self.years)
    }
}

/// Whether `t` falls inside any of `intervals`.
pub fn any_contains(intervals: &[TimeInterval], t: Timestamp) -> bool {
    intervals.iter().any(|i| i.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ti(yaml: &str) -> TimeInterval {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn weekdays_and_times() {
        let t =
            ti("weekdays: ['monday:friday']\ntimes: [{start_time: '09:00', end_time: '17:00'}]");
        assert!(t.contains(at("2024-01-08T09:00:00Z"))); // Monday
        assert!(!t.contains(at("2024-01-08T17:00:00Z"))); // end is exclusive
        assert!(!t.contains(at("2024-01-07T12:00:00Z"))); // Sunday
    }

    #[test]
    fn days_of_month_months_years_location() {
        let t = ti("days_of_month: ['-1']\nmonths: ['february']\nyears: ['2024']");
        assert!(t.contains(at("2024-02-29T10:00:00Z")));
        assert!(!t.contains(at("2024-02-28T10:00:00Z")));
        assert!(!t.contains(at("2023-02-28T10:00:00Z")));
        let t = ti("times: [{start_time: '00:00', end_time: '01:00'}]\nlocation: Asia/Tokyo");
        assert!(t.contains(at("2024-01-01T15:30:00Z"))); // 00:30 in Tokyo
    }

    #[test]
    fn rejects_bad_intervals() {
        for bad in [
            "times: [{start_time: '10:00', end_time: '09:00'}]",
            "times: [{start_time: '9:00', end_time: '10:00'}]",
            "weekdays: [funday]",
            "days_of_month: ['0']",
            "months: ['13']",
            "location: Nowhere/Atlantis",
        ] {
            assert!(
                serde_saphyr::from_str::<TimeInterval>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }
}
