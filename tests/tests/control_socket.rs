//! The control socket refuses anyone but root twice over: the file is 0600 (connect fails), and
//! if its mode were loosened, the peer check (SO_PEERCRED) still answers with a refusal.
use std::{io::Write, os::unix::fs::PermissionsExt, time::Duration};

use kpo_agent::api::server::Server;

/// Runs `f` on a thread whose (real, effective, saved) uid is `nobody`. A raw `setresuid` changes
/// only the calling thread (glibc's wrapper would change every thread of the test process).
fn as_nobody<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let nobody = 65534;
            // SAFETY: a plain syscall with integer arguments.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, nobody, nobody, nobody) };
            assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

pub fn non_root_callers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Let nobody traverse to the socket, so that only the socket's own mode and the peer check
    // stand in the way.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("kpo.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let (server, _requests) = Server::bind(&socket).unwrap();
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);

    let err = as_nobody(|| std::os::unix::net::UnixStream::connect(&socket).unwrap_err());
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");

    // Loosen the mode: the peer check must still refuse.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut stream = as_nobody(|| std::os::unix::net::UnixStream::connect(&socket).unwrap());
    stream.write_all(b"{\"op\":\"status\"}\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        // To the end, as socat or a script does: a request left unread by the agent would end
        // the answer with a reset (s58 story BJ-6).
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        answer
    });
    // The server's tasks run on this runtime: drive it until the reply is written.
    let line = rt.block_on(async {
        for _ in 0..500 {
            if reader.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reader.join().unwrap()
    });
    assert!(
        line.contains("serves root only")
            && line.contains("uid 65534")
            && line.lines().count() == 1,
        "{line}"
    );
    drop(server);
    assert!(
        !socket.exists(),
        "the socket is removed when the server goes"
    );
}

/// A socket at the agent's path answered by another user (one put there while the agent was
/// down, in a directory others can write) gets nothing from root's CLI: the listener's
/// credentials are checked before the request is sent.
pub fn a_socket_another_user_listens_on_gets_nothing() {
    use kpo_agent::api::client::{ApiError, SocketControl};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("kpo.sock");
    let listener = as_nobody(|| std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let control = SocketControl::connect(&socket)
        .unwrap()
        .expect("someone answers");
    let err = control
        .call::<serde_json::Value>(&kpo_agent::api::Request::Status)
        .unwrap_err();
    assert!(
        matches!(err, ApiError::NotTheAgent { uid: 65534, .. }),
        "{err}"
    );
    // What the listener got: connections, and not one byte.
    listener.set_nonblocking(true).unwrap();
    let mut received = Vec::new();
    while let Ok((mut conn, _)) = listener.accept() {
        conn.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        if let Ok(n) = std::io::Read::read(&mut conn, &mut buf) {
            received.extend_from_slice(&buf[..n]);
        }
    }
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );

    // An agent starting on that path names the listener instead of "another agent answers".
    let err = match kpo_agent::api::server::Server::bind(&socket) {
        Err(e) => e,
        Ok(_) => panic!("bound over another user's listener"),
    };
    assert!(
        matches!(
            err,
            kpo_agent::api::server::ServeError::NotAnAgent { uid: 65534, .. }
        ),
        "{err}"
    );
    assert!(socket.exists(), "their socket is left as it is");
}

/// Under `umask 000` the socket's missing directories are made 0755 and the events file 0644,
/// not writable by every user; the socket stays 0600. Defect (s55 story AU-6): the directories
/// came out 0777, the agent then refused the very directory it had made (leaving it behind,
/// every later start refused too), and the events file 0666, where any user could add events.
pub fn what_the_agent_creates_is_not_everyones_under_an_open_umask() {
    struct Umask(nix::sys::stat::Mode);
    impl Drop for Umask {
        fn drop(&mut self) {
            nix::sys::stat::umask(self.0);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let _restore = Umask(nix::sys::stat::umask(nix::sys::stat::Mode::empty()));
    let socket = dir.path().join("run/kpo/kpo.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let (server, _requests) = Server::bind(&socket).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("run")), 0o755);
    assert_eq!(mode(&dir.path().join("run/kpo")), 0o755);
    assert_eq!(mode(&socket), 0o600);
    drop(server);
    let events = dir.path().join("events.jsonl");
    let sink = kpo_agent::output::sink::EventSink::open(&events, 1 << 20).unwrap();
    assert_eq!(mode(&events), 0o644);
    sink.close(Duration::from_secs(5));
}
