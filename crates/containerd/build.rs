//! Builds the sandbox (pause) program, `pause/pause.c`, as a static executable with the system C
//! compiler; `src/pause.rs` embeds it into the pause image.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.c");
    println!("cargo:rerun-if-env-changed=CC");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let output = out_dir.join("pause");
    let status = Command::new(&compiler)
        .args(["-static", "-Os", "-s", "-Wall", "-o"])
        .arg(&output)
        .arg("pause/pause.c")
        .status()
        .unwrap_or_else(|error| {
            panic!("running the C compiler `{compiler}` to build pause/pause.c: {error} (install the Debian package gcc and libc6-dev)")
        });
    if !status.success() {
        panic!(
            "`{compiler} -static -Os -o {} pause/pause.c` failed: {status} (a static libc is needed: Debian package libc6-dev)",
            output.display()
        );
    }
}
