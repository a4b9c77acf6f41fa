//! The one integration-test binary of cairn-payload; one module per area.

mod check;
mod generated;
#[cfg(feature = "json")]
mod json;
mod mapping;
mod payload;
mod python;
mod roundtrip;
mod support;
