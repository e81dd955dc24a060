//! Child processes the unit tests need: a `sleep` that holds something for as long as it lives
//! (a network or user namespace, a socket), killed and reaped when dropped, even when the test
//! panics.
use std::os::unix::process::CommandExt;

pub(crate) struct Sleeper(std::process::Child);

impl Sleeper {
    /// `sleep secs`, with `setup` run in the child between fork and exec.
    ///
    /// # Safety
    /// `setup` runs in a forked child of a multi-threaded process: async-signal-safe calls only
    /// (no allocation, no locks).
    pub(crate) unsafe fn spawn(
        secs: u32,
        setup: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> std::io::Result<Sleeper> {
        let mut command = std::process::Command::new("sleep");
        command.arg(secs.to_string());
        // SAFETY: the caller's promise.
        unsafe {
            command.pre_exec(setup);
        }
        // In its namespaces once spawned: spawn returns after the exec.
        command.spawn().map(Sleeper)
    }

    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        // Reaped: what it held is gone with it.
        let _ = self.0.wait();
    }
}

/// Between fork and exec: become `uid`, with the group of the same number and no others.
/// Async-signal-safe (three system calls).
pub(crate) fn become_user(uid: u32) -> nix::Result<()> {
    nix::unistd::setgroups(&[])?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(uid))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))
}
