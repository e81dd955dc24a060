//! `cargo xtask setup`: installs what the eBPF build and the tests need on a Debian host, skipping
//! what is already there (the recipe: ../shared/DESIGN.md). Progress goes to standard error, so
//! that `cargo xtask run | jq` sees only the agent's events on standard output.
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Debian packages: LLVM 22 for bpf-linker (its LLVM must match nightly's), iproute2 for the
/// namespace tests (`ip`, `ss`, `nstat`), ethtool as the coalescing tests' reference, procps for
/// the `sysctl -w` a person runs in the yielding tests, util-linux for `setpriv`, nginx and wrk
/// for the overhead and reaction benches and `cargo xtask scenario backlog`, systemd for the
/// `systemd-analyze verify` of deploy/kpo.service (a container or minimal root lacks it, and that
/// test then skips).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "ethtool",
    "procps",
    "util-linux",
    "nginx-light",
    "wrk",
    "systemd",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// The bpf-linker release installed: one that builds against LLVM 22 (0.13 takes LLVM 21 to 23;
/// a later release may drop 22, and an unpinned install would then fail on a fresh machine).
const BPF_LINKER: &str = "0.13.0";
/// What `bpf-linker --version` prints for it.
const BPF_LINKER_VERSION_LINE: &str = "bpf-linker 0.13.0";
/// The LLVM major version bpf-linker is built against; nightly's must be the same, since an LLVM
/// cannot read the bitcode of a newer one.
const LLVM_MAJOR: &str = "22";

/// The toolchain the eBPF object is built with: `nightly`, or `KPO_EBPF_TOOLCHAIN` (a dated
/// nightly on LLVM 22 once `nightly` has moved to a newer LLVM). kpo-agent/build.rs reads the same
/// variable.
pub fn ebpf_toolchain() -> String {
    std::env::var("KPO_EBPF_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "nightly".into())
}

/// What is missing, as human-readable items.
pub fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    let apt = missing_apt(APT_PACKAGES);
    if !apt.is_empty() {
        missing.push(format!("apt packages {}", apt.join(" ")));
    }
    if !has_nightly_rust_src() {
        missing.push(format!("toolchain {} with rust-src", ebpf_toolchain()));
    }
    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        missing.push("bpf-linker".into());
    }
    missing
}

/// Runs setup if anything is missing.
pub fn ensure() -> Result<()> {
    let missing = missing();
    if !missing.is_empty() {
        eprintln!("xtask: missing {}; running setup", missing.join(", "));
        install()?;
    }
    check_nightly_llvm()
}

/// Nightly's LLVM must be bpf-linker's: a nightly on a newer LLVM writes bitcode that bpf-linker
/// cannot read, and the eBPF build would fail with an error that does not say why.
fn check_nightly_llvm() -> Result<()> {
    let out = Command::new("rustup")
        .args(["run", &ebpf_toolchain(), "rustc", "-vV"])
        .output()
        .with_context(|| format!("running rustc +{} -vV", ebpf_toolchain()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .map(str::trim)
    else {
        bail!(
            "rustc +{} -vV does not say its LLVM version:\n{text}",
            ebpf_toolchain()
        );
    };
    if version.split('.').next() != Some(LLVM_MAJOR) {
        bail!(
            "the toolchain {} uses LLVM {version}, but bpf-linker is built against Debian's LLVM \
             {LLVM_MAJOR} and cannot read newer bitcode: build with a nightly on LLVM \
             {LLVM_MAJOR}, e.g. KPO_EBPF_TOOLCHAIN=nightly-YYYY-MM-DD cargo xtask ... (setup \
             installs it with rust-src)",
            ebpf_toolchain()
        );
    }
    Ok(())
}

pub fn install() -> Result<()> {
    let apt = missing_apt(APT_PACKAGES);
    if apt.is_empty() {
        eprintln!("xtask setup: apt packages present");
    } else {
        apt_install(&apt)?;
    }
    if has_nightly_rust_src() {
        eprintln!("xtask setup: {} rust-src present", ebpf_toolchain());
    } else {
        eprintln!(
            "xtask setup: installing the {} toolchain with rust-src",
            ebpf_toolchain()
        );
        let toolchain_present =
            succeeds(Command::new("rustup").args(["run", &ebpf_toolchain(), "rustc", "--version"]));
        let status = if toolchain_present {
            Command::new("rustup")
                .args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    &ebpf_toolchain(),
                ])
                .status()
        } else {
            Command::new("rustup")
                .args([
                    "toolchain",
                    "install",
                    &ebpf_toolchain(),
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ])
                .status()
        }
        .context("running rustup")?;
        if !status.success() {
            bail!("rustup could not install {} rust-src", ebpf_toolchain());
        }
    }
    let present = Command::new("bpf-linker")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if present.as_deref() == Some(BPF_LINKER_VERSION_LINE) {
        eprintln!("xtask setup: {BPF_LINKER_VERSION_LINE} present");
    } else {
        if let Some(other) = &present {
            // Another release may be built against another LLVM, whose bitcode nightly's does
            // not read; later releases drop older LLVMs. The pinned one is what was checked.
            eprintln!("xtask setup: found {other}, not {BPF_LINKER_VERSION_LINE}: replacing it");
        }
        eprintln!("xtask setup: building bpf-linker {BPF_LINKER} against LLVM 22 (about a minute)");
        let path = format!(
            "{LLVM_PREFIX}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER,
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path)
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .status()
            .context("running cargo install bpf-linker")?;
        if !status.success() {
            bail!("cargo install bpf-linker failed");
        }
    }
    check_nightly_llvm()?;
    eprintln!("xtask setup: done");
    Ok(())
}

pub fn missing_apt(packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

pub fn apt_install(packages: &[String]) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing apt packages {}; install them as root: apt-get install -y {}",
            packages.join(" "),
            packages.join(" ")
        );
    }
    eprintln!("xtask setup: apt-get install {}", packages.join(" "));
    let update = Command::new("apt-get")
        .args(["update", "-q"])
        .stdout(std::io::stderr())
        .status()
        .context("apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(std::io::stderr())
        .status()
        .context("apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed", packages.join(" "));
    }
    // Debian enables and starts an installed nginx on port 80; the benches start their own, in
    // namespaces, and the machine should not gain a web server from `cargo xtask test`. Where
    // systemd is not running (a chroot, a container, an image being built), apt still enables
    // nginx.service, for the next boot: disabled there too (systemctl does that offline).
    if packages.iter().any(|p| p.starts_with("nginx")) {
        let running = std::path::Path::new("/run/systemd/system").exists();
        let args: &[&str] = if running {
            &["disable", "--now", "nginx"]
        } else {
            &["disable", "nginx"]
        };
        let stopped = Command::new("systemctl")
            .args(args)
            .stdout(std::io::stderr())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            let what = if running {
                "stop and disable"
            } else {
                "disable"
            };
            eprintln!(
                "xtask setup: could not {what} nginx.service; it may be serving port 80 (now, or \
                 after the next boot)"
            );
        }
    }
    Ok(())
}

fn has_nightly_rust_src() -> bool {
    let Ok(out) = Command::new("rustup")
        .args([
            "component",
            "list",
            "--toolchain",
            &ebpf_toolchain(),
            "--installed",
        ])
        .output()
    else {
        return false;
    };
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("rust-src"))
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
