//! The one integration-test binary of cairn-payload; one module per area.

mod generated;
