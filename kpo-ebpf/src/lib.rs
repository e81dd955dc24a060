//! Stub so that clippy and `cargo test` on the host can see this crate; the programs live in the
//! `kpo` binary target, built for bpfel-unknown-none by kpo-agent's build script.
#![no_std]
