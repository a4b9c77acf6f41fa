//! A plugin that shows, from a real guest, how often a shared dependency is
//! built in one invocation: once when it uses the cache (the default), once
//! per use when it opts out with `#[dependency(use_cache = false)]`.
//!
//! Two dependencies, `Left` and `Right`, both need `Shared`; two more,
//! `FreshLeft` and `FreshRight`, both need `Fresh`, which is built without
//! the cache. Each construction is counted in `Counts`, a cached dependency,
//! so the counts are per invocation.
//!
//! Imports no `cairn:plugin` dependency at all: dependencies of the plugin's
//! own are not imports.

use std::cell::Cell;

use cairn_sdk::{action, dependency, Dep};

cairn_sdk::plugin!(module = "deps_cache");

/// How many times `Shared` and `Fresh` were built in this invocation.
#[derive(Default)]
pub struct Counts {
    shared: Cell<u32>,
    fresh: Cell<u32>,
}

#[dependency]
fn counts() -> Counts {
    Counts::default()
}

/// Needed by both `Left` and `Right`; built once per invocation.
pub struct Shared;

#[dependency]
fn shared(counts: Dep<Counts>) -> Shared {
    counts.shared.set(counts.shared.get() + 1);
    Shared
}

/// Needed by both `FreshLeft` and `FreshRight`; built for each of them.
pub struct Fresh;

#[dependency(use_cache = false)]
fn fresh(counts: Dep<Counts>) -> Fresh {
    counts.fresh.set(counts.fresh.get() + 1);
    Fresh
}

/// One user of `Shared`.
pub struct Left(#[allow(dead_code)] Dep<Shared>);

#[dependency]
fn left(shared: Dep<Shared>) -> Left {
    Left(shared)
}

/// Another user of `Shared`.
pub struct Right(#[allow(dead_code)] Dep<Shared>);

#[dependency]
fn right(shared: Dep<Shared>) -> Right {
    Right(shared)
}

/// One user of `Fresh`.
pub struct FreshLeft(#[allow(dead_code)] Dep<Fresh>);

#[dependency]
fn fresh_left(fresh: Dep<Fresh>) -> FreshLeft {
    FreshLeft(fresh)
}

/// Another user of `Fresh`.
pub struct FreshRight(#[allow(dead_code)] Dep<Fresh>);

#[dependency]
fn fresh_right(fresh: Dep<Fresh>) -> FreshRight {
    FreshRight(fresh)
}

/// How many times the dependency two others share was built during this
/// invocation: the cached one (`cached = true`, expect 1) or the uncached
/// one (`cached = false`, expect 2).
#[action]
pub fn count(
    cached: bool,
    _left: Dep<Left>,
    _right: Dep<Right>,
    _fresh_left: Dep<FreshLeft>,
    _fresh_right: Dep<FreshRight>,
    counts: Dep<Counts>,
) -> u32 {
    if cached {
        counts.shared.get()
    } else {
        counts.fresh.get()
    }
}

#[cfg(test)]
mod tests {
    use cairn_sdk::Resolver;

    use super::count;

    #[test]
    fn cached_dependency_is_built_once_and_uncached_once_per_use() {
        let resolver = Resolver::new();
        assert_eq!(count::call(&resolver, true).unwrap(), 1);
        assert_eq!(count::call(&resolver, false).unwrap(), 2);
    }

    #[test]
    fn counts_start_over_with_every_invocation() {
        let resolver = Resolver::new();
        for _ in 0..3 {
            assert_eq!(count::call(&resolver, true).unwrap(), 1);
        }
    }
}
