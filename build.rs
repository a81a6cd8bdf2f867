//! Compiles the kernel-side gate (`bpf/gate.bpf.c`, see `src/hsm/gate.rs`) with clang for the
//! BPF target when the daemon is built. Without clang the daemon builds without a gate (a
//! warning here; `skyfill doctor` says so at run time): Debian's `clang-14` and `libbpf-dev`
//! provide what it needs (`.ci/install-deps` installs them).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skyfill_gate)");
    println!("cargo::rerun-if-changed=bpf/gate.bpf.c");
    println!("cargo::rerun-if-env-changed=CLANG");
    if std::env::var_os("CARGO_FEATURE_DAEMON").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("gate.bpf.o");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let candidates: Vec<String> = match std::env::var("CLANG") {
        Ok(c) => vec![c],
        Err(_) => vec!["clang-14".into(), "clang".into()],
    };
    let mut why = String::from("no clang found (tried clang-14, clang; set CLANG)");
    for clang in candidates {
        let r = Command::new(&clang)
            .args([
                "-target", "bpf", "-O2", "-g", "-mcpu=v3", "-Wall", "-Werror",
            ])
            .arg(format!("-I{multiarch}"))
            .args(["-c", "bpf/gate.bpf.c", "-o"])
            .arg(&out)
            .output();
        match r {
            Ok(o) if o.status.success() => {
                println!("cargo::rustc-cfg=skyfill_gate");
                return;
            }
            Ok(o) => {
                why = format!(
                    "{clang} failed on bpf/gate.bpf.c:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
                break;
            }
            Err(_) => continue,
        }
    }
    println!("cargo::warning=building skyfilld without its kernel gate: {why}");
}
