//! Opening hours such as `"mon-fri 08:30-17:00"`, in the engine's local time.

use chrono::{Datelike, NaiveDateTime, NaiveTime, Weekday};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeeklyWindow {
    /// Bit `n` set = open on `Weekday::num_days_from_monday() == n`.
    days: u8,
    start: NaiveTime,
    end: NaiveTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningHours {
    windows: Vec<WeeklyWindow>,
}

impl OpeningHours {
    pub fn parse(lines: &[String]) -> Result<OpeningHours, String> {
        if lines.is_empty() {
            return Err("hours.open is empty: list windows like \"mon-fri 08:30-17:00\"".into());
        }
        let windows = lines
            .iter()
            .map(|l| WeeklyWindow::parse(l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OpeningHours { windows })
    }

    pub fn is_open(&self, now: NaiveDateTime) -> bool {
        let day = now.weekday().num_days_from_monday();
        let t = now.time();
        self.windows
            .iter()
            .any(|w| w.days & (1 << day) != 0 && t >= w.start && t < w.end)
    }
}

impl WeeklyWindow {
    fn parse(text: &str) -> Result<WeeklyWindow, String> {
        let bad = |why: &str| {
            format!("opening hours {text:?}: {why} (expected e.g. \"mon-fri 08:30-17:00\")")
        };
        let (days, times) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("missing times"))?;
        let days = parse_days(days.trim()).ok_or_else(|| bad("unknown day"))?;
        let (start, end) = times
            .trim()
            .split_once('-')
            .ok_or_else(|| bad("times need START-END"))?;
        let time = |s: &str| {
            NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| bad("times are HH:MM"))
        };
        let start = time(start)?;
        let end = if end.trim() == "24:00" {
            NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).expect("valid time")
        } else {
            time(end)?
        };
        if end <= start {
            return Err(bad("the end is not after the start"));
        }
        Ok(WeeklyWindow { days, start, end })
    }
}

fn parse_days(text: &str) -> Option<u8> {
    let mut mask = 0u8;
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day(part)?,
        }
    }
    Some(mask)
}

fn day(s: &str) -> Option<u8> {
    let w: Weekday = s.trim().parse().ok()?;
    Some(w.num_days_from_monday() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn windows() {
        let hours =
            OpeningHours::parse(&["mon-fri 08:30-17:00".into(), "sat 09:00-12:30".into()]).unwrap();
        assert!(hours.is_open(at(2026, 11, 23, 8, 30))); // Monday
        assert!(!hours.is_open(at(2026, 11, 23, 17, 0)));
        assert!(hours.is_open(at(2026, 11, 28, 12, 0))); // Saturday
        assert!(!hours.is_open(at(2026, 11, 29, 12, 0))); // Sunday
        let wrap = OpeningHours::parse(&["sat-mon 00:00-24:00".into()]).unwrap();
        assert!(wrap.is_open(at(2026, 11, 29, 23, 59)));
        assert!(!wrap.is_open(at(2026, 11, 25, 10, 0))); // Wednesday
    }

    #[test]
    fn bad_windows() {
        for bad in [
            "",
            "mon",
            "funday 09:00-10:00",
            "mon 10:00-09:00",
            "mon 9-5",
        ] {
            assert!(OpeningHours::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(OpeningHours::parse(&[]).is_err());
    }
}
