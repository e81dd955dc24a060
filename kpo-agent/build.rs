//! Builds the eBPF object from `kpo-ebpf` (nightly, bpfel-unknown-none, bpf-linker) and leaves it in
//! OUT_DIR for `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    emit_commit();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("kpo");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // Unit tests of user-space code can run without the eBPF toolchain; the loader then
        // reports that the object is empty instead of failing to compile.
        if !object.exists() {
            fs::write(&object, b"")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    // Where cargo says this package is now, not `env!` (where it was when this script was
    // compiled): cargo reuses a build script compiled for another checkout of the repository in a
    // shared CARGO_TARGET_DIR (its hash does not depend on the path), which would then build that
    // checkout's kpo-ebpf into this one's agent.
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root_dir = manifest_dir.join("../kpo-ebpf");
    let ebpf = aya_build::Package {
        name: "kpo-ebpf",
        root_dir: root_dir
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{}: not UTF-8", root_dir.display()))?,
        ..Default::default()
    };
    // aya-build runs a nested cargo for kpo-ebpf and relays each line of its stderr as a
    // `cargo:warning`, and cargo replays a build script's warnings on every later build, even one
    // that compiles nothing: some 47 "Compiling ..." lines burying the real warnings. A quiet
    // nested cargo drops only its status lines: it still writes errors to stderr, and rustc's
    // messages, warnings and errors alike, reach aya-build as JSON on stdout, which it relays in
    // full. CARGO_TERM_VERBOSE=false overrides a `term.verbose` in a cargo config, with which the
    // nested cargo would refuse to start; one who set CARGO_TERM_VERBOSE=true keeps the lines.
    println!("cargo:rerun-if-env-changed=CARGO_TERM_VERBOSE");
    if env::var("CARGO_TERM_VERBOSE").map_or(true, |v| v != "true") {
        env::set_var("CARGO_TERM_QUIET", "true");
        env::set_var("CARGO_TERM_VERBOSE", "false");
    }
    // `cargo xtask setup` checks this toolchain's LLVM against bpf-linker's and installs it.
    println!("cargo:rerun-if-env-changed=KPO_EBPF_TOOLCHAIN");
    let toolchain = env::var("KPO_EBPF_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty());
    match toolchain.as_deref() {
        Some(name) => aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(name)),
        None => aya_build::build_ebpf([ebpf], aya_build::Toolchain::default()),
    }
}

/// `KPO_COMMIT`, the commit this is built from (`unknown` outside a git checkout of this
/// workspace), for `kpo --version`, the `start` event and `kpo status`: every build says version
/// 0.1.0, and an operator who upgraded must be able to tell the agent that runs from the binary
/// installed (s51 story Z3). Built again when HEAD moves: `logs/HEAD`, the reflog, is appended to
/// at every commit and checkout, packed refs or not, in the worktree's own git directory.
/// What is built into the binary, from kpo-agent's directory: a change to any of it, not
/// committed, makes the build `-dirty`. kpo-ebpf's sources are watched by aya-build too.
const BUILT_IN: [&str; 8] = [
    "src",
    "Cargo.toml",
    "../kpo-common/src",
    "../kpo-common/Cargo.toml",
    "../kpo-ebpf",
    "../Cargo.toml",
    "../Cargo.lock",
    "../docs/events.schema.json",
];

fn emit_commit() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&manifest_dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // A source tree without its own .git inside another repository would take that one's commit.
    let workspace = manifest_dir.join("..").canonicalize().ok();
    let ours = git(&["rev-parse", "--show-toplevel"])
        .and_then(|top| PathBuf::from(top).canonicalize().ok())
        .is_some_and(|top| Some(top) == workspace);
    // A tree with changes not committed is no build of its commit (s64 story CP-1: a binary with
    // code first committed later said the commit before): marked as `git describe --dirty` does.
    // Untracked files (notes, scratch) and files not built in (the docs) change nothing that is
    // built; the same paths are watched below. Without optional locks: a status would otherwise
    // refresh the index, which is watched, and contend for its lock with the user's git.
    let dirty = || {
        let mut args = vec!["--no-optional-locks", "status", "--porcelain"];
        args.extend(["--untracked-files=no", "--"]);
        args.extend(BUILT_IN);
        git(&args).is_some()
    };
    let commit = ours
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .map(|c| if dirty() { format!("{c}-dirty") } else { c })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KPO_COMMIT={commit}");
    if !ours {
        return;
    }
    let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) else {
        return;
    };
    // Only files that exist: cargo runs a build script whose watched file is missing every time.
    // The index and the sources built into the binary: an edit or a `git add` may make the tree
    // dirty or clean again.
    let sources = BUILT_IN.map(|path| manifest_dir.join(path));
    for file in ["HEAD", "logs/HEAD", "index"]
        .into_iter()
        .map(|f| git_dir.join(f))
        .chain(sources)
        .filter(|f| f.exists())
    {
        println!("cargo:rerun-if-changed={}", file.display());
    }
}
