//! A plugin that fails on purpose until a given attempt, to exercise the
//! host's retries. Imports `cairn:plugin/context` (for the attempt number)
//! and nothing else of cairn's.

use cairn_sdk::{action, context, Error};

cairn_sdk::plugin!(module = "flaky");

/// Fail with a retryable `FlakyError` until attempt number `attempts`, then
/// succeed.
#[action(retries = 5, backoff = "100ms")]
pub fn succeed_after(attempts: u32) -> Result<String, Error> {
    let n = context::attempt();
    if n < attempts {
        return Err(
            Error::retryable(format!("attempt {n} of {attempts} failed")).with_type("FlakyError"),
        );
    }
    Ok(format!("succeeded on attempt {n}"))
}

#[cfg(test)]
mod tests {
    use cairn_sdk::context::{self, NativeContext};

    #[test]
    fn fails_retryably_before_the_given_attempt_and_succeeds_on_it() {
        context::set_native(NativeContext {
            attempt: 1,
            ..NativeContext::default()
        });
        let err = super::succeed_after(2).unwrap_err();
        assert_eq!(err.type_name(), "FlakyError");
        assert_eq!(err.message(), "attempt 1 of 2 failed");
        assert!(err.is_retryable());

        context::set_native(NativeContext {
            attempt: 2,
            ..NativeContext::default()
        });
        assert_eq!(super::succeed_after(2).unwrap(), "succeeded on attempt 2");
    }
}
