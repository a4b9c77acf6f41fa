//! A plugin whose every build can be many versions: the version number lives
//! in a 16-byte marker in the data section, `CAIRNVER:` plus seven digits,
//! which a test (or `cairn bench-reload`) rewrites in the `.wasm` bytes to
//! make version N — the same length, so the component stays valid, and a new
//! digest, so the host sees a new plugin. The hot-reload tests use it to tell
//! which version ran each row.
//!
//! The marker is read with a volatile load so that the compiler cannot fold
//! the digits into a constant: the bytes in the data section are what the
//! guest returns.
//!
//! Imports no `cairn:plugin` dependency.

use std::time::Duration;

cairn_sdk::plugin!(module = "versioned");

/// `CAIRNVER:` and the version in seven ASCII digits. Exactly one copy of
/// this string is in the built component.
static VERSION: [u8; 16] = *b"CAIRNVER:0000001";

/// The version this build carries (0 if the marker's digits are not digits).
fn current() -> u32 {
    // SAFETY: reading a valid, aligned, initialised static.
    let marker = unsafe { std::ptr::read_volatile(&VERSION) };
    marker[9..]
        .iter()
        .try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
        .unwrap_or(0)
}

/// This plugin's version number.
#[cairn_sdk::action]
pub fn version() -> u32 {
    current()
}

/// Sleep `ms` milliseconds (in a WASI poll, no CPU), then return this
/// plugin's version number: an action that is still running when the plugin
/// is replaced.
#[cairn_sdk::action]
pub fn slow_version(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    current()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unpatched_build_is_version_one() {
        assert_eq!(super::version(), 1);
        assert_eq!(super::slow_version(1), 1);
    }
}
