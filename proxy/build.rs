//! Rebuilds the proxy when a file under `dashboard/` or `openapi.json` changes, new files
//! included: `include_dir!` cannot tell cargo about files added to a directory on stable Rust.
fn main() {
    println!("cargo:rerun-if-changed=dashboard");
    println!("cargo:rerun-if-changed=openapi.json");
}
