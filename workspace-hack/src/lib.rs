//! No code: `cargo hakari` keeps this crate's dependencies at the union of the
//! features the whole workspace turns on, and every crate depends on it, so
//! `cargo run -p krisbud` and `cargo test --workspace` share one build.
