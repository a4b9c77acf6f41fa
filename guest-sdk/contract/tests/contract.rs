//! The one specification of the rules in `cairn-contract`. The duration
//! vectors live in `durations.txt`, which the Python SDK runs too.

use cairn_contract::{
    check_name, format_duration, is_valid_name, parse_duration, parse_positive_duration,
};
use std::time::Duration;

/// `(input, expected)` from `durations.txt`: `Some(ms)` accepted, `None`
/// refused; zero is `Some(0)`.
fn vectors() -> Vec<(String, Option<u64>)> {
    let text = include_str!("durations.txt");
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (input, expected) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("vector without a tab: {line:?}"));
        let input = input.replace("\\s", " ");
        let expected = match expected.trim() {
            "error" => None,
            "zero" => Some(0),
            ms => Some(
                ms.parse()
                    .unwrap_or_else(|_| panic!("bad expectation in {line:?}")),
            ),
        };
        out.push((input, expected));
    }
    assert!(out.len() >= 20, "the vector file lost lines");
    out
}

#[test]
fn every_duration_vector_parses_as_specified() {
    for (input, expected) in vectors() {
        let got = parse_duration(&input).ok().map(|d| d.as_millis() as u64);
        assert_eq!(got, expected, "parse_duration({input:?})");
    }
}

#[test]
fn positive_durations_refuse_exactly_the_zero_vectors() {
    for (input, expected) in vectors() {
        let got = parse_positive_duration(&input)
            .ok()
            .map(|d| d.as_millis() as u64);
        let want = expected.filter(|&ms| ms > 0);
        assert_eq!(got, want, "parse_positive_duration({input:?})");
    }
}

#[test]
fn a_bare_number_is_refused_with_the_accepted_form() {
    let err = parse_duration("500").unwrap_err().to_string();
    assert!(err.contains("`500` has no unit"), "{err}");
    assert!(err.contains("500ms, 30s, 5m or 1h"), "{err}");
}

#[test]
fn zero_timeout_is_refused_saying_so() {
    let err = parse_positive_duration("0s").unwrap_err().to_string();
    assert!(err.contains("greater than zero"), "{err}");
}

#[test]
fn an_overflowing_duration_is_refused_not_wrapped() {
    let err = parse_duration("5124095576030432h").unwrap_err().to_string();
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn formatted_durations_parse_back() {
    for ms in [
        0u64, 1, 999, 1_000, 1_500, 60_000, 90_000, 3_600_000, 7_200_001,
    ] {
        let d = Duration::from_millis(ms);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
    }
    assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
}

#[test]
fn names_refuse_empty_colon_and_whitespace() {
    for good in ["greet", "hello_world", "a-b", "x.y", "名前"] {
        assert!(is_valid_name(good), "{good:?}");
    }
    for bad in ["", "a:b", "a b", "tab\there", "new\nline", ":"] {
        assert!(!is_valid_name(bad), "{bad:?}");
        let err = check_name("action", bad).unwrap_err().to_string();
        assert!(err.starts_with("action name"), "{err}");
    }
}
