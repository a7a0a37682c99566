//! A human-readable preview of a 5-field cron expression ("At 09:00, Monday
//! through Friday"), for the schedules page. Covers the forms people write:
//! `*`, values, lists, ranges, steps, month and weekday names, and the
//! `@hourly`-style macros; anything it cannot read is reported as an error
//! and the page shows the raw expression.

/// One element of a cron field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `*`.
    Any,
    /// `n`.
    Value(u32),
    /// `a-b`.
    Range(u32, u32),
    /// `*/s`, `a/s` or `a-b/s`: from `a` (to `b`) every `s`.
    Step(Option<(u32, Option<u32>)>, u32),
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn number(s: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u32, String> {
    let n = match s.parse::<u32>() {
        Ok(n) => n,
        Err(_) => names
            .iter()
            .position(|n| n.get(..3).is_some_and(|a| a.eq_ignore_ascii_case(s)) && s.len() == 3)
            .map(|i| i as u32 + name_base)
            .ok_or_else(|| format!("`{s}` is not a number"))?,
    };
    if n < lo || n > hi {
        return Err(format!("{n} is out of range {lo}-{hi}"));
    }
    Ok(n)
}

fn parse_field(
    field: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
    name_base: u32,
) -> Result<Vec<Part>, String> {
    let num = |s: &str| number(s, lo, hi, names, name_base);
    field
        .split(',')
        .map(|item| {
            let (base, step) = match item.split_once('/') {
                Some((b, s)) => {
                    let step: u32 = s.parse().map_err(|_| format!("bad step `{s}`"))?;
                    if step == 0 {
                        return Err("a step of 0".to_owned());
                    }
                    (b, Some(step))
                }
                None => (item, None),
            };
            let range = if base == "*" || base == "?" {
                None
            } else if let Some((a, b)) = base.split_once('-') {
                Some((num(a)?, Some(num(b)?)))
            } else {
                Some((num(base)?, None))
            };
            Ok(match (range, step) {
                (None, None) => Part::Any,
                (Some((a, None)), None) => Part::Value(a),
                (Some((a, Some(b))), None) => Part::Range(a, b),
                (r, Some(s)) => Part::Step(r, s),
            })
        })
        .collect()
}

fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Describes each part with `name` (e.g. a weekday name or `09:00`).
fn list(parts: &[Part], name: &dyn Fn(u32) -> String, unit: &str) -> String {
    let items: Vec<String> = parts
        .iter()
        .map(|p| match *p {
            Part::Any => format!("every {unit}"),
            Part::Value(v) => name(v),
            Part::Range(a, b) => format!("{} through {}", name(a), name(b)),
            Part::Step(None, s) => format!("every {} {unit}", ordinal(s)),
            Part::Step(Some((a, None)), s) => {
                format!("every {} {unit} from {}", ordinal(s), name(a))
            }
            Part::Step(Some((a, Some(b))), s) => {
                format!(
                    "every {} {unit} from {} through {}",
                    ordinal(s),
                    name(a),
                    name(b)
                )
            }
        })
        .collect();
    join(&items)
}

fn values(parts: &[Part]) -> Option<Vec<u32>> {
    parts
        .iter()
        .map(|p| match p {
            Part::Value(v) => Some(*v),
            _ => None,
        })
        .collect()
}

fn time_phrase(minute: &[Part], hour: &[Part]) -> String {
    let hh = |h: u32| format!("{h:02}:00");
    match (minute, hour) {
        ([Part::Any], [Part::Any]) => "every minute".to_owned(),
        ([Part::Step(None, s)], [Part::Any]) => format!("every {s} minutes"),
        ([Part::Value(0)], [Part::Any]) => "every hour".to_owned(),
        ([Part::Value(m)], [Part::Any]) => format!("every hour at minute {m}"),
        ([Part::Value(0)], [Part::Step(None, s)]) => format!("every {s} hours"),
        ([Part::Value(m)], [Part::Step(None, s)]) => format!("every {s} hours at minute {m}"),
        ([Part::Value(m)], [Part::Range(a, b)]) => {
            format!(
                "at minute {m} of every hour from {} through {}",
                hh(*a),
                hh(*b)
            )
        }
        ([Part::Step(None, s)], [Part::Range(a, b)]) => {
            format!("every {s} minutes from {} through {b:02}:59", hh(*a))
        }
        _ => match (values(minute), values(hour)) {
            (Some(ms), Some(hs)) => {
                let times: Vec<String> = hs
                    .iter()
                    .flat_map(|h| ms.iter().map(move |m| format!("{h:02}:{m:02}")))
                    .collect();
                format!("at {}", join(&times))
            }
            (Some(ms), None) if hour == [Part::Any] => {
                let ms: Vec<String> = ms.iter().map(u32::to_string).collect();
                format!("every hour at minutes {}", join(&ms))
            }
            _ => format!(
                "at minute {} of hour {}",
                list(minute, &|v| v.to_string(), "minute"),
                list(hour, &|v| v.to_string(), "hour")
            ),
        },
    }
}

fn day_phrase(dom: &[Part], dow: &[Part]) -> Option<String> {
    let day_name = |d: u32| DAYS[(d % 7) as usize].to_owned();
    let weekdays = (dow != [Part::Any]).then(|| list(dow, &day_name, "day of the week"));
    let month_days = (dom != [Part::Any]).then(|| {
        let single = dom.len() == 1 && matches!(dom[0], Part::Value(_));
        let word = if single { "day" } else { "days" };
        format!(
            "{word} {} of the month",
            list(dom, &|d| d.to_string(), "day")
        )
    });
    match (month_days, weekdays) {
        (None, None) => None,
        (Some(d), None) => Some(format!("on {d}")),
        (None, Some(w)) => Some(format!("on {w}")),
        // Cron runs when either matches.
        (Some(d), Some(w)) => Some(format!("on {d} or on {w}")),
    }
}

/// Describes a cron expression in English; `Err` says why it is unreadable.
pub fn describe_cron(expr: &str) -> Result<String, String> {
    let expr = expr.trim();
    let expanded = match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => expr,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields.as_slice() else {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
            fields.len()
        ));
    };
    let minute = parse_field(minute, 0, 59, &[], 0)?;
    let hour = parse_field(hour, 0, 23, &[], 0)?;
    let dom = parse_field(dom, 1, 31, &[], 0)?;
    let month = parse_field(month, 1, 12, &MONTHS, 1)?;
    let dow = parse_field(dow, 0, 7, &DAYS, 0)?;

    let time = time_phrase(&minute, &hour);
    let days = day_phrase(&dom, &dow);
    let months = (month != [Part::Any]).then(|| {
        format!(
            "in {}",
            list(&month, &|m| MONTHS[(m - 1) as usize].to_owned(), "month")
        )
    });
    let mut out = match (&days, &months) {
        (None, None) if time.starts_with("at ") && !time.starts_with("at minute") => {
            format!("every day {time}")
        }
        _ => time,
    };
    for extra in [days, months].into_iter().flatten() {
        out.push_str(", ");
        out.push_str(&extra);
    }
    let mut chars = out.chars();
    Ok(match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => out,
    })
}

#[cfg(test)]
mod tests {
    use super::describe_cron;

    fn d(e: &str) -> String {
        describe_cron(e).unwrap()
    }

    #[test]
    fn common_expressions_read_naturally() {
        assert_eq!(d("* * * * *"), "Every minute");
        assert_eq!(d("*/5 * * * *"), "Every 5 minutes");
        assert_eq!(d("0 * * * *"), "Every hour");
        assert_eq!(d("15 * * * *"), "Every hour at minute 15");
        assert_eq!(d("0 3 * * *"), "Every day at 03:00");
        assert_eq!(d("30 2 * * 0"), "At 02:30, on Sunday");
        assert_eq!(d("0 9 * * 1-5"), "At 09:00, on Monday through Friday");
        assert_eq!(d("0 9 * * MON-FRI"), "At 09:00, on Monday through Friday");
        assert_eq!(d("0 9,17 * * *"), "Every day at 09:00 and 17:00");
        assert_eq!(d("0 */2 * * *"), "Every 2 hours");
        assert_eq!(d("30 */6 * * *"), "Every 6 hours at minute 30");
        assert_eq!(d("0 0 1 * *"), "At 00:00, on day 1 of the month");
        assert_eq!(d("0 0 1,15 * *"), "At 00:00, on days 1 and 15 of the month");
        assert_eq!(d("0 12 * 1 *"), "At 12:00, in January");
        assert_eq!(d("0 12 * jan-mar *"), "At 12:00, in January through March");
        assert_eq!(
            d("0 0 1 * 1"),
            "At 00:00, on day 1 of the month or on Monday"
        );
        assert_eq!(d("0 * * * 6,0"), "Every hour, on Saturday and Sunday");
        assert_eq!(
            d("*/15 9-17 * * *"),
            "Every 15 minutes from 09:00 through 17:59"
        );
        assert_eq!(
            d("0 9-17 * * *"),
            "At minute 0 of every hour from 09:00 through 17:00"
        );
        assert_eq!(d("0,30 * * * *"), "Every hour at minutes 0 and 30");
        assert_eq!(d("@daily"), "Every day at 00:00");
        assert_eq!(d("@hourly"), "Every hour");
        assert_eq!(d("0 0 * * 7"), "At 00:00, on Sunday");
        assert_eq!(d("5 4 * * */2"), "At 04:05, on every 2nd day of the week");
    }

    #[test]
    fn unreadable_expressions_say_why() {
        assert!(describe_cron("* * * *").unwrap_err().contains("5 fields"));
        assert!(
            describe_cron("61 * * * *")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            describe_cron("*/0 * * * *")
                .unwrap_err()
                .contains("step of 0")
        );
        assert!(
            describe_cron("0 9 * * funday")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(describe_cron("").is_err());
    }
}
