//! The CUDA build's link check, when `scripts/build-cuda` has produced
//! `dist/herd-worker-cuda` on this machine (CI machines have no CUDA
//! toolkit cache, and the test then only says it was skipped): every
//! library resolves — with the toolkit's empty driver stub standing in for
//! `libcuda.so.1` on a machine without a GPU driver — and a worker that
//! requires a GPU refuses to start instead of running on the CPU.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_cuda_dist_links_and_never_falls_back_to_the_cpu() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dist = std::env::var_os("HERD_CUDA_DIST")
        .map_or_else(|| root.join("dist/herd-worker-cuda"), PathBuf::from);
    let binary = dist.join("bin/herd-worker");
    if !binary.is_file() {
        eprintln!(
            "skipped: no CUDA build at {} (scripts/build-cuda)",
            dist.display()
        );
        return;
    }
    let cache = std::env::var_os("HERD_CUDA_CACHE").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/herd/cuda"),
        PathBuf::from,
    );
    let toolkit = cache.join("toolkit-13.0.88/lib");
    let has_driver = std::path::Path::new("/dev/nvidiactl").exists();
    let mut path = vec![dist.join("lib"), toolkit.clone()];
    if !has_driver {
        path.push(toolkit.join("stubs"));
    }
    let library_path = std::env::join_paths(path).unwrap();

    let ldd = Command::new("ldd")
        .arg(&binary)
        .env("LD_LIBRARY_PATH", &library_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ldd.stdout);
    assert!(!text.contains("not found"), "unresolved libraries:\n{text}");
    assert!(text.contains("libllama"), "{text}");
    assert!(text.contains("libggml"), "{text}");

    if has_driver {
        return; // A GPU machine: bench-gpu is the check there.
    }
    let store = tempfile::tempdir().unwrap();
    let out = Command::new(&binary)
        .args(["--gpu", "required", "--listen", "127.0.0.1:0", "--store"])
        .arg(store.path())
        .env("LD_LIBRARY_PATH", &library_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no GPU"), "{stderr}");
}
