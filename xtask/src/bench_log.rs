//! What the eBPF programs' log (aya-log) cost during the overhead bench: the programs write to its
//! ring buffer only on their error paths, so while all goes well it receives nothing.
//!
//! Measured by the kernel, not by the agent: the ring buffer's producer position counts every
//! byte ever reserved in it (records are never un-counted when the agent consumes them), so 0
//! after a run means not one record was written, hence not one cycle spent formatting one.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{bail, Context, Result};

/// aya-log's ring buffer, as the kernel names it.
const LOG_MAP: &str = "AYA_LOGS";

/// Bytes written to the log ring buffer of the agent running as `pid`, summed per configuration.
#[derive(Default)]
pub struct LogTally(BTreeMap<&'static str, Result<u64, String>>);

impl LogTally {
    /// Adds what the agent `pid` has written so far (call it just before stopping the agent).
    pub fn add(&mut self, config: &'static str, pid: u32) {
        let now = produced_bytes(pid).map_err(|e| format!("{e:#}"));
        let entry = self.0.entry(config).or_insert(Ok(0));
        *entry = match (entry.clone(), now) {
            (Ok(a), Ok(b)) => Ok(a + b),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }

    /// `agent_log`: where the agents' logs are kept at the end, with the records themselves.
    pub fn print(&self, agent_log: &std::path::Path) {
        println!("\neBPF log (aya-log ring buffer), bytes the programs wrote during the throughput runs:");
        let log = format!("the agents' log: {}", agent_log.display());
        for (config, bytes) in &self.0 {
            match bytes {
                Ok(0) => println!("{config:<10} 0 bytes: no record, the log cost nothing"),
                Ok(n) => println!(
                    "{config:<10} {n} bytes: at least one record (a program met an error; {log})"
                ),
                Err(e) => println!("{config:<10} not measured: {e}"),
            }
        }
    }
}

/// The producer position of the agent's `AYA_LOGS` ring buffer: bytes ever written to it.
pub fn produced_bytes(pid: u32) -> Result<u64> {
    let id = log_map_id(pid)?;
    let map = aya::maps::MapData::from_id(id).with_context(|| format!("opening map {id}"))?;
    let fd = map.fd().as_fd().as_raw_fd();
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // A ring buffer map's second page holds the producer position; user space may map it
    // read-only (the consumer page, the first, is the one it may write).
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            page as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        bail!(
            "mapping the producer page of {LOG_MAP}: {}",
            std::io::Error::last_os_error()
        );
    }
    let produced = unsafe {
        (*(ptr as *const std::sync::atomic::AtomicU64)).load(std::sync::atomic::Ordering::Acquire)
    };
    unsafe { libc::munmap(ptr, page) };
    Ok(produced)
}

/// The id of the `AYA_LOGS` map among the map fds the process `pid` holds (other agents may run).
fn log_map_id(pid: u32) -> Result<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(info) = aya::maps::MapInfo::from_id(id) else {
            continue;
        };
        if info.name_as_str() == Some(LOG_MAP) {
            return Ok(id);
        }
    }
    bail!("the agent (pid {pid}) holds no {LOG_MAP} map")
}
