//! A build script, so that cargo also unifies the build dependencies listed here.
fn main() {}
