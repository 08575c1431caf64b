//! Generates the gRPC code from `proto/` at the workspace root. protoc comes from the
//! `protoc-bin-vendored` crate (shipped inside the registry package), so a fresh machine
//! needs no protobuf-compiler package; set `PROTOC` to use another one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // tonic-prost-build finds protoc through PROTOC.
        set_protoc(protoc_bin_vendored::protoc_bin_path()?);
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("deskmail/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("deskmail_descriptor.bin");
    tonic_prost_build::configure().file_descriptor_set_path(&descriptor).compile_protos(&files, &[root])?;
    Ok(())
}

#[allow(unsafe_code)]
fn set_protoc(path: PathBuf) {
    // Setting an env var is unsafe in edition 2024 because other threads may read the
    // environment; a build script has no other threads at this point.
    unsafe { std::env::set_var("PROTOC", path) };
}
