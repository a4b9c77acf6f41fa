//! Dependency `cairn:plugin/kv`: durable key-value storage, namespaced per
//! plugin by the host (one plugin can neither read nor write another's keys).
//!
//! Take a `Dep<Kv>` parameter to use it; only then does the component import
//! `cairn:plugin/kv`.
//!
//! ```
//! use cairn_sdk::{Dep, Error, Kv};
//!
//! /// Count visits to `page`.
//! #[cairn_sdk::action]
//! fn visit(page: String, kv: Dep<Kv>) -> Result<i64, Error> {
//!     kv.increment(&format!("visits:{page}"), 1)
//! }
//! ```
//!
//! # Values
//!
//! Values are bytes. [`Kv::get_as`] and [`Kv::set_as`] store any serde type
//! in cairn's payload format (a protobuf `WorkflowArgumentValue`, the same
//! encoding as action arguments), which every cairn SDK can read.
//!
//! Counters written by [`Kv::increment`] are stored however the host stores
//! them; read them back with `increment(key, 0)` rather than by decoding
//! [`Kv::get`]'s bytes.
//!
//! # Errors
//!
//! The host reports failures as one-line messages (typically: the database is
//! away). They become retryable `KvError`s: the WIT cannot tell a transient
//! failure from a permanent one, and the usual cause is transient. Encoding
//! and decoding typed values fails with non-retryable `SerializationError`s.

use std::fmt;
use std::rc::Rc;

use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::deps::builtin_dependency;
use crate::error::SDK_MODULE;
use crate::Error;

/// The plugin's key-value store.
#[derive(Clone)]
pub struct Kv {
    backend: Rc<dyn KvBackend>,
}

/// Where a [`Kv`] stores: the host (in a component) or a test double such as
/// [`testing::MemoryKv`](crate::testing::MemoryKv). The methods mirror the
/// WIT interface one to one.
pub trait KvBackend {
    /// The value under `key`, if any.
    ///
    /// # Errors
    ///
    /// When the store cannot be reached.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Store `value` under `key`, replacing any previous value.
    ///
    /// # Errors
    ///
    /// When the store cannot be reached.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error>;

    /// Remove `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// When the store cannot be reached.
    fn delete(&self, key: &str) -> Result<bool, Error>;

    /// Atomically add `delta` to the integer under `key` (absent counts as 0)
    /// and return the new value.
    ///
    /// # Errors
    ///
    /// When the store cannot be reached, or the value under `key` is not a
    /// counter.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, Error>;

    /// Atomically set `key` to `new` if its value is `expected` (`None`: the
    /// key must be absent); returns whether it swapped.
    ///
    /// # Errors
    ///
    /// When the store cannot be reached.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error>;
}

impl Kv {
    /// A `Kv` over any backend, e.g. to call a function that takes `&Kv` in
    /// a test.
    pub fn new(backend: impl KvBackend + 'static) -> Self {
        Kv {
            backend: Rc::new(backend),
        }
    }

    /// The value under `key`, if any.
    ///
    /// # Errors
    ///
    /// A retryable `KvError` when the store cannot be reached.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.backend.get(key)
    }

    /// Store `value` under `key`, replacing any previous value.
    ///
    /// # Errors
    ///
    /// A retryable `KvError` when the store cannot be reached.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.backend.set(key, value)
    }

    /// Remove `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// A retryable `KvError` when the store cannot be reached.
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        self.backend.delete(key)
    }

    /// Atomically add `delta` (may be negative) to the counter under `key`
    /// (absent counts as 0) and return the new value.
    ///
    /// # Errors
    ///
    /// A `KvError` when the store cannot be reached or the value under `key`
    /// was not written by `increment`.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        self.backend.increment(key, delta)
    }

    /// Atomically set `key` to `new` if its current value is `expected`
    /// (`None`: only if the key is absent). Returns whether it swapped; build
    /// optimistic updates and locks on it.
    ///
    /// # Errors
    ///
    /// A retryable `KvError` when the store cannot be reached.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, Error> {
        self.backend.compare_and_swap(key, expected, new)
    }

    /// The value under `key`, decoded from cairn's payload format.
    ///
    /// # Errors
    ///
    /// A `KvError` as [`Kv::get`]; a `SerializationError` if the stored bytes
    /// are not a payload value or do not fit `T`.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let Some(bytes) = self.get(key)? else {
            return Ok(None);
        };
        let value = cairn_payload::WorkflowArgumentValue::decode(bytes.as_slice())
            .map_err(|err| serialization_error(key, &err))?;
        cairn_payload::from_value(&value)
            .map(Some)
            .map_err(|err| serialization_error(key, &err))
    }

    /// Store `value` under `key` in cairn's payload format.
    ///
    /// # Errors
    ///
    /// A `SerializationError` if `value` does not serialize; a `KvError` as
    /// [`Kv::set`].
    pub fn set_as<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let value = cairn_payload::to_value(value).map_err(|err| serialization_error(key, &err))?;
        self.set(key, &value.encode_to_vec())
    }
}

fn serialization_error(key: &str, err: &dyn fmt::Display) -> Error {
    Error::new(format!("kv value under `{key}`: {err}"))
        .with_type("SerializationError")
        .with_module(SDK_MODULE)
}

/// A failure the host reported for a kv call: retryable, see the module docs.
pub(crate) fn kv_error(operation: &str, key: &str, message: &str) -> Error {
    Error::retryable(format!("kv {operation} `{key}`: {message}"))
        .with_type("KvError")
        .with_module(SDK_MODULE)
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kv { .. }")
    }
}

builtin_dependency!(
    Kv,
    kv,
    import "cairn:plugin/kv",
    double "cairn_sdk::testing::MemoryKv::new()"
);

#[cfg(target_arch = "wasm32")]
fn host_backend() -> Result<Rc<dyn KvBackend>, crate::deps::DependencyError> {
    use crate::bindings::cairn::plugin::kv as wit;

    struct Host;

    impl KvBackend for Host {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            wit::get(key).map_err(|m| kv_error("get", key, &m))
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
            wit::set(key, value).map_err(|m| kv_error("set", key, &m))
        }

        fn delete(&self, key: &str) -> Result<bool, Error> {
            wit::delete(key).map_err(|m| kv_error("delete", key, &m))
        }

        fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
            wit::increment(key, delta).map_err(|m| kv_error("increment", key, &m))
        }

        fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<&[u8]>,
            new: &[u8],
        ) -> Result<bool, Error> {
            wit::compare_and_swap(key, expected, new)
                .map_err(|m| kv_error("compare-and-swap", key, &m))
        }
    }

    Ok(Rc::new(Host))
}
