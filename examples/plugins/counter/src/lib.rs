//! A plugin with durable counters in the `Kv` dependency: each plugin's keys
//! are its own, so two plugins bumping the same key count separately.
//!
//! Imports `cairn:plugin/kv` and nothing else of cairn's.

use cairn_sdk::{action, Dep, Error, Kv};

cairn_sdk::plugin!(module = "counter");

/// Add one to the counter `key` (absent counts as 0) and return its new
/// value.
#[action]
pub fn bump(key: String, kv: Dep<Kv>) -> Result<i64, Error> {
    kv.increment(&key, 1)
}

/// The counter `key`'s value, or `None` if it was never bumped.
///
/// The WIT leaves how counters are stored to the host, so this reads the
/// value through `increment(key, 0)` rather than decoding the stored bytes.
#[action]
pub fn peek(key: String, kv: Dep<Kv>) -> Result<Option<i64>, Error> {
    if kv.get(&key)?.is_none() {
        return Ok(None);
    }
    kv.increment(&key, 0).map(Some)
}

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::MemoryKv;
    use cairn_sdk::Resolver;

    use super::{bump, peek};

    #[test]
    fn bump_counts_up_from_zero_and_peek_reads_without_counting() {
        let resolver = Resolver::new().kv(MemoryKv::new());

        assert_eq!(peek::call(&resolver, "visits".into()).unwrap(), None);
        assert_eq!(bump::call(&resolver, "visits".into()).unwrap(), 1);
        assert_eq!(bump::call(&resolver, "visits".into()).unwrap(), 2);
        assert_eq!(peek::call(&resolver, "visits".into()).unwrap(), Some(2));
        assert_eq!(peek::call(&resolver, "other".into()).unwrap(), None);
    }

    #[test]
    fn separate_stores_count_separately() {
        let first = Resolver::new().kv(MemoryKv::new());
        let second = Resolver::new().kv(MemoryKv::new());

        bump::call(&first, "k".into()).unwrap();
        bump::call(&first, "k".into()).unwrap();

        assert_eq!(bump::call(&second, "k".into()).unwrap(), 1);
    }
}
