//! Readiness for the service manager (`Type=notify` in the unit `install.sh --systemd`
//! writes): `READY=1` once every listener is bound and served, `STOPPING=1` when draining
//! starts, each with a `STATUS=` line that `systemctl status` shows.
//!
//! The protocol (sd_notify(3)) is one datagram of `KEY=value` lines sent to the socket named
//! by `$NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace. It is hand-written
//! rather than taken from the `sd-notify` crate: it is these few lines of std, and that crate
//! (0.5) connects to the variable's text as a file path, so under an abstract `@…` socket
//! (documented by sd_notify(3), used by container managers) READY=1 would silently never
//! arrive and systemd would kill the daemon at its start timeout. Without `NOTIFY_SOCKET` (not
//! under systemd, or another service type) nothing is sent. A failure to send is logged, not
//! fatal: a manager that waits for READY=1 then says the start timed out.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// How long a send may block on a manager that does not read its socket.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells the manager the daemon is serving; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&message("READY=1", status));
}

/// Tells the manager the daemon is shutting down (draining).
pub fn stopping(status: &str) {
    send(&message("STOPPING=1", status));
}

fn send(message: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET).filter(|v| !v.is_empty()) else {
        return;
    };
    if let Err(err) = send_to(&target, message.as_bytes()) {
        tracing::warn!(
            error = %err,
            socket = %target.to_string_lossy(),
            "cannot notify the service manager"
        );
    }
}

/// `STATE` and a one-line status: a newline in it (a socket path may have one) would start a
/// line the manager reads as another assignment.
fn message(state: &str, status: &str) -> String {
    let status: String = status
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{state}\nSTATUS={status}\n")
}

fn send_to(target: &OsStr, message: &[u8]) -> io::Result<()> {
    let address = address(target)?;
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = socket.send_to_addr(message, &address)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was cut short",
        ));
    }
    Ok(())
}

fn address(target: &OsStr) -> io::Result<SocketAddr> {
    match target.as_bytes() {
        [b'/', ..] => SocketAddr::from_pathname(target),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor @name (abstract)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).expect("a datagram");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn a_path_socket_gets_one_datagram_of_assignments() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str(), message("READY=1", "serving").as_bytes()).expect("send");
        assert_eq!(received(&listener), "READY=1\nSTATUS=serving\n");
    }

    #[test]
    fn an_abstract_socket_is_named_with_an_at_sign() {
        let name = format!("gatewayd-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("address"),
        )
        .expect("bind");
        let target = OsString::from(format!("@{name}"));
        send_to(&target, message("STOPPING=1", "draining").as_bytes()).expect("send");
        assert_eq!(received(&listener), "STOPPING=1\nSTATUS=draining\n");
    }

    #[test]
    fn the_status_stays_on_its_line() {
        assert_eq!(
            message("READY=1", "socket /tmp/a\nREADY=0"),
            "READY=1\nSTATUS=socket /tmp/a READY=0\n"
        );
    }

    #[test]
    fn an_unusable_target_is_an_error_not_a_panic() {
        for target in ["relative/path", "vsock:2:1234"] {
            assert!(
                send_to(OsStr::new(target), b"READY=1\n").is_err(),
                "{target}"
            );
        }
        let dir = tempfile::tempdir().expect("dir");
        let nobody = dir.path().join("nobody-listens");
        assert!(send_to(nobody.as_os_str(), b"READY=1\n").is_err());
    }
}
