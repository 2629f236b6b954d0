//! `sqlx::migrate!` embeds `migrations/` when the crate compiles, but cargo does not know the
//! macro read that folder: without this, a new migration file leaves an incremental build with
//! the old set (tests then run against a schema without it).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
