//! How the host reports errors: one line each.
//!
//! Every failure cairn reports — a CLI `error:` line, a log record, the
//! message inside an error payload — is one line, because each lands
//! somewhere line-oriented (a terminal, a log collector, a `failed` row a
//! dashboard lists). `anyhow` chains (`{:#}`) and some library errors
//! (wasmtime's, with backtraces and notes) span lines; [`one_line`] folds
//! them.

use std::fmt;

/// `err` with its whole cause chain (`{:#}`) on one line: lines trimmed,
/// blank ones dropped, the rest joined by single spaces.
pub fn one_line(err: &impl fmt::Display) -> String {
    let text = format!("{err:#}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn chains_and_multi_line_messages_fold_into_one_line() {
        let err = anyhow::anyhow!("inner\n\n  detail  ").context("outer");
        assert_eq!(one_line(&err), "outer: inner detail");
    }
}
