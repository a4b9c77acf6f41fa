//! A plugin that chains actions: `greet_later` enqueues a follow-up
//! `greet:hello` through the `Enqueue` dependency.
//!
//! Imports `cairn:plugin/enqueue` and nothing else of cairn's.

use std::time::Duration;

use cairn_sdk::enqueue::EnqueueOptions;
use cairn_sdk::{action, Dep, Enqueue, Error};
use serde::Serialize;

cairn_sdk::plugin!(module = "chain");

/// The keyword arguments of `greet:hello`.
#[derive(Serialize)]
struct Hello<'a> {
    name: &'a str,
}

/// Enqueue `greet:hello` for `name`, after `delay_ms` milliseconds if given,
/// at most once per `idempotency_key` if given. Returns the id of the
/// enqueued row (with a live idempotency key: the existing row's).
#[action]
pub fn greet_later(
    name: String,
    delay_ms: Option<u64>,
    idempotency_key: Option<String>,
    enqueue: Dep<Enqueue>,
) -> Result<i64, Error> {
    let mut options = EnqueueOptions::new();
    if let Some(ms) = delay_ms {
        options = options.delay(Duration::from_millis(ms));
    }
    if let Some(key) = idempotency_key {
        options = options.idempotency_key(key);
    }
    enqueue.enqueue("greet:hello", &Hello { name: &name }, options)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use cairn_sdk::testing::RecordingEnqueue;
    use cairn_sdk::Resolver;

    use super::greet_later;

    #[test]
    fn enqueues_greet_hello_with_the_name() {
        let enqueue = RecordingEnqueue::new();
        let resolver = Resolver::new().enqueue(enqueue.clone());

        let id = greet_later::call(&resolver, "Ada".into(), None, None).unwrap();

        let rows = enqueue.enqueued();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, id);
        assert_eq!(
            (rows[0].module.as_str(), rows[0].name.as_str()),
            ("greet", "hello")
        );
        let kwargs: BTreeMap<String, String> = rows[0].kwargs().unwrap();
        assert_eq!(
            kwargs,
            BTreeMap::from([("name".to_owned(), "Ada".to_owned())])
        );
        assert_eq!(rows[0].options.delay, None);
    }

    #[test]
    fn delay_and_idempotency_key_are_passed_on() {
        let enqueue = RecordingEnqueue::new();
        let resolver = Resolver::new().enqueue(enqueue.clone());

        let first =
            greet_later::call(&resolver, "Ada".into(), Some(1500), Some("ada".into())).unwrap();
        let again =
            greet_later::call(&resolver, "Ada".into(), Some(1500), Some("ada".into())).unwrap();

        assert_eq!(first, again, "the same idempotency key gives the same row");
        let rows = enqueue.enqueued();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].options.delay, Some(Duration::from_millis(1500)));
        assert_eq!(rows[0].options.idempotency_key.as_deref(), Some("ada"));
    }
}
