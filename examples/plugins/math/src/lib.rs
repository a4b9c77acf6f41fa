//! Arithmetic actions: typed arguments, a struct argument and result, errors
//! with Python-style type names, an async action and per-action defaults.

use cairn_sdk::{action, Error};
use serde::{Deserialize, Serialize};

cairn_sdk::plugin!(module = "math");

/// A point in the plane. Passed as a dict (or a Pydantic model) `{"x": .., "y": ..}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// Summary statistics of a list of numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// Add two integers.
#[action]
pub fn add(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

/// Scale a point away from the origin by `factor`.
#[action]
pub fn scale(point: Point, factor: f64) -> Point {
    Point {
        x: point.x * factor,
        y: point.y * factor,
    }
}

/// Divide `a` by `b`.
///
/// Fails with `ZeroDivisionError` when `b` is zero.
#[action(timeout = "5s", retries = 3, backoff = "200ms", max_backoff = "2s")]
pub fn divide(a: f64, b: f64) -> Result<f64, Error> {
    if b == 0.0 {
        return Err(Error::new("division by zero").with_type("ZeroDivisionError"));
    }
    Ok(a / b)
}

/// Count, mean, minimum and maximum of `values`.
///
/// Fails with `ValueError` when `values` is empty.
#[action]
pub async fn stats(values: Vec<f64>) -> Result<Stats, Error> {
    if values.is_empty() {
        return Err(Error::new("stats of an empty list").with_type("ValueError"));
    }
    let sum: f64 = values.iter().sum();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(Stats {
        count: values.len() as u64,
        mean: sum / values.len() as f64,
        min,
        max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_adds() {
        assert_eq!(add(2, 3), 5);
    }

    #[test]
    fn scale_multiplies_both_coordinates() {
        assert_eq!(
            scale(Point { x: 1.0, y: -2.0 }, 3.0),
            Point { x: 3.0, y: -6.0 }
        );
    }

    #[test]
    fn divide_by_zero_is_zero_division_error() {
        let err = divide(1.0, 0.0).unwrap_err();
        assert_eq!(err.type_name(), "ZeroDivisionError");
        assert_eq!(err.message(), "division by zero");
        assert!(!err.is_retryable());
    }

    #[test]
    fn stats_of_values_and_of_nothing() {
        let stats = cairn_sdk::__private::block_on(stats(vec![1.0, 2.0, 6.0]))
            .unwrap()
            .unwrap();
        assert_eq!(
            stats,
            Stats {
                count: 3,
                mean: 3.0,
                min: 1.0,
                max: 6.0
            }
        );
        let err = cairn_sdk::__private::block_on(super::stats(vec![]))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.type_name(), "ValueError");
    }
}
