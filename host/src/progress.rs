//! Progress bars for long commands (`cairn bench`, `cairn bench-reload`,
//! `cairn prune`, `cairn retry --failed`), drawn on stderr **only when
//! stderr is a terminal**: piped or logged output gets nothing extra, so
//! scripts and CI logs see exactly what they saw before.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting to `len` `unit`s, prefixed with `what`; hidden (every call
/// a no-op) unless stderr is a terminal.
pub fn bar(len: u64, what: &str, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template =
        format!("{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_owned());
    // Redraw on a timer too, so a phase that waits (no increments) still
    // shows the elapsed time moving.
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
