//! What both binaries a runtime execs do around a request (`plexus`, and `plexus-shim` of thick mode, which includes
//! this file too): the process made safe before anything runs (standard descriptors, SIGPIPE), and the reply printed
//! with its exit status. Not part of the library, which has no unsafe code.

use std::io::Write;

use plexus_api::cni::CniError;
use plexus_cni::shim::Reply;

/// Before anything else, with no other thread running: closed standard descriptors reopened on `/dev/null` and
/// SIGPIPE ignored (a write to a delegate or a caller that has gone is an error, not the end of the process; children
/// start with it back at its default, as std's `Command` resets it).
pub fn start() {
    standard_descriptors();
    // SAFETY: no other thread exists yet, and SIG_IGN installs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}

/// Descriptors 0, 1 and 2 open: a closed one is opened on `/dev/null`, so that no file or socket `plexus` opens takes
/// its number (and the result meant for stdout goes to a socket).
fn standard_descriptors() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
    for fd in 0..=2 {
        // SAFETY: only asked for its flags; a closed descriptor answers EBADF and is not otherwise used.
        let fd_ref = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if fcntl(fd_ref, FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            // Opens the lowest free number: this one, as the lower ones are open.
            let flags = if fd == 0 {
                OFlag::O_RDONLY
            } else {
                OFlag::O_WRONLY
            };
            if let Ok(null) = open("/dev/null", flags, nix::sys::stat::Mode::empty()) {
                std::mem::forget(null);
            }
        }
    }
}

/// Prints what the request produced (the result, or the CNI error object) on stdout and gives the exit status.
pub fn print(reply: Result<Reply, CniError>) -> i32 {
    let reply = reply.unwrap_or_else(|e| Reply {
        success: false,
        stdout: e.to_json(),
    });
    let mut out = std::io::stdout().lock();
    if !reply.stdout.is_empty() {
        let _ = writeln!(out, "{}", reply.stdout);
    }
    let _ = out.flush();
    if reply.success { 0 } else { 1 }
}
