//! The smallest useful plugin: one action, no dependencies.
//!
//! Imports no `cairn:plugin` dependency at all (only the WASI interfaces
//! Rust's standard library always brings).

cairn_sdk::plugin!(module = "greet");

/// Greet someone by name.
#[cairn_sdk::action]
pub fn hello(name: String) -> String {
    format!("Hello, {name}!")
}

#[cfg(test)]
mod tests {
    #[test]
    fn hello_greets_by_name() {
        assert_eq!(super::hello("Ada".into()), "Hello, Ada!");
    }
}
