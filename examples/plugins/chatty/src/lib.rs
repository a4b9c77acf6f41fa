//! A plugin that talks: structured log records through `cairn:plugin/log`,
//! plus plain stdout and stderr. Imports `log`, not `context`.

use cairn_sdk::{action, log};

cairn_sdk::plugin!(module = "chatty");

/// Log `message` (info, with its length as field `len`), plus one debug and
/// one warn record; echo it to stdout and stderr. Returns the number of log
/// records emitted.
#[action]
pub fn chat(message: String) -> u32 {
    log::info(&message, &[("len", &message.len().to_string())]);
    log::debug("chat debug record", &[]);
    log::warn("chat warn record", &[("level", "warn")]);
    println!("stdout: {message}");
    eprintln!("stderr: {message}");
    3
}

#[cfg(test)]
mod tests {
    #[test]
    fn chat_counts_its_records() {
        assert_eq!(super::chat("hi".into()), 3);
    }
}
