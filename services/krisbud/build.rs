//! rust-i18n reads `locales/` while compiling; a changed text must rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=locales");
}
