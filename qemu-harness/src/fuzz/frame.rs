//! The byte-stream side of the fuzzing protocol ([`okernel_abi::fuzz`]):
//! case frames out, the ready byte and result frames in, over a TCP
//! stream (Bochs' COM2 in `socket-client` mode) with a deadline on every
//! wait.
//!
//! A [`Link`] reports what ended a wait as a [`Wait`]; the session turns
//! that into a [`SessionError`] with the console it knows about
//! ([`Wait::into_case_error`], [`Wait::into_boot_error`]).

use super::{CaseOutcome, SessionError};
use okernel_abi::fuzz::{CASE_MAGIC, MAX_CASE, MAX_RESULT, READY_MAGIC, RESULT_MAGIC, ResultFrame};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How often a blocked read wakes up to check its deadline and the
/// session's watch (the emulator's state, the console).
pub const TICK: Duration = Duration::from_millis(20);

/// The wire form of a case: [`CASE_MAGIC`], the length (u16 LE) and the
/// bytes, cut to [`MAX_CASE`].
pub fn case_frame(case: &[u8]) -> Vec<u8> {
    let case = &case[..case.len().min(MAX_CASE)];
    let mut out = Vec::with_capacity(3 + case.len());
    out.push(CASE_MAGIC);
    out.extend_from_slice(&(case.len() as u16).to_le_bytes());
    out.extend_from_slice(case);
    out
}

/// Decodes a result frame (without magic and length) into an outcome.
pub fn decode_outcome(backend: &str, bytes: &[u8]) -> Result<CaseOutcome, SessionError> {
    let frame = ResultFrame::decode(bytes).map_err(|e| SessionError::Protocol {
        backend: backend.to_string(),
        detail: format!("{} ({} bytes)", e.describe(), bytes.len()),
    })?;
    Ok(CaseOutcome {
        verdict: frame.verdict(),
        ops_total: frame.header.ops_total,
        ops_run: frame.header.ops_run,
        exits: frame.header.exits,
        hits: frame.hits().collect(),
        message: String::from_utf8_lossy(frame.message).into_owned(),
    })
}

/// What ended a wait on the link without the bytes asked for.
#[derive(Debug)]
pub enum Wait {
    /// The peer closed the stream after `got` of the bytes asked for.
    Closed {
        /// Bytes of the frame (or ready byte) received before the end.
        got: usize,
    },
    /// The deadline passed after `got` of the bytes asked for.
    Deadline {
        /// Bytes received before the deadline.
        got: usize,
    },
    /// The session's watch saw the machine stop (its words).
    Stopped(String),
    /// The peer sent something that is not the protocol.
    Protocol(String),
    /// The socket failed.
    Io(std::io::Error),
}

impl Wait {
    /// The error for a wait during a case that was given `timeout`.
    pub fn into_case_error(
        self,
        backend: &str,
        timeout: Duration,
        console: String,
    ) -> SessionError {
        let backend = backend.to_string();
        match self {
            Wait::Closed { got } => SessionError::Crashed {
                backend,
                reason: format!(
                    "the guest's serial link closed ({got} bytes of the result received)"
                ),
                console,
            },
            Wait::Deadline { .. } => SessionError::Timeout {
                backend,
                timeout,
                console,
            },
            Wait::Stopped(reason) => SessionError::Crashed {
                backend,
                reason,
                console,
            },
            Wait::Protocol(detail) => SessionError::Protocol { backend, detail },
            Wait::Io(e) => SessionError::Crashed {
                backend,
                reason: format!("the serial link failed: {e}"),
                console,
            },
        }
    }

    /// The error for a wait before the guest was ready.
    pub fn into_boot_error(
        self,
        backend: &str,
        timeout: Duration,
        console: String,
    ) -> SessionError {
        let reason = match self {
            Wait::Closed { .. } => "the serial link closed before the ready byte".to_string(),
            Wait::Deadline { .. } => format!("no ready byte within {timeout:?}"),
            Wait::Stopped(reason) => reason,
            Wait::Protocol(detail) => detail,
            Wait::Io(e) => format!("the serial link failed: {e}"),
        };
        SessionError::Boot {
            backend: backend.to_string(),
            reason,
            console,
        }
    }
}

/// One end of the protocol's byte stream.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
}

impl Link {
    /// Wraps a connected stream: sets TCP_NODELAY (a case is one small
    /// write the guest waits for) and the read tick.
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self { stream })
    }

    /// Sends one case (cut to [`MAX_CASE`]).
    pub fn send_case(&mut self, case: &[u8]) -> Result<(), Wait> {
        match self.stream.write_all(&case_frame(case)) {
            Ok(()) => Ok(()),
            Err(e) if is_closed(&e) => Err(Wait::Closed { got: 0 }),
            Err(e) if is_tick(&e) => Err(Wait::Deadline { got: 0 }),
            Err(e) => Err(Wait::Io(e)),
        }
    }

    /// Waits for [`READY_MAGIC`].
    pub fn wait_ready(
        &mut self,
        deadline: Instant,
        watch: &mut dyn FnMut() -> Option<String>,
    ) -> Result<(), Wait> {
        let mut b = [0u8];
        self.fill(&mut b, deadline, watch)?;
        match b[0] {
            READY_MAGIC => Ok(()),
            other => Err(Wait::Protocol(format!(
                "expected the ready byte {READY_MAGIC:#04x}, got {other:#04x}"
            ))),
        }
    }

    /// Waits for one result frame and returns its bytes (without magic
    /// and length).
    pub fn recv_result(
        &mut self,
        deadline: Instant,
        watch: &mut dyn FnMut() -> Option<String>,
    ) -> Result<Vec<u8>, Wait> {
        let mut head = [0u8; 3];
        self.fill(&mut head, deadline, watch)?;
        if head[0] != RESULT_MAGIC {
            return Err(Wait::Protocol(format!(
                "expected a result frame ({RESULT_MAGIC:#04x}), got {:#04x}",
                head[0]
            )));
        }
        let len = usize::from(u16::from_le_bytes([head[1], head[2]]));
        if len > MAX_RESULT {
            return Err(Wait::Protocol(format!(
                "result frame of {len} bytes, above the limit of {MAX_RESULT}"
            )));
        }
        let mut body = vec![0u8; len];
        self.fill(&mut body, deadline, watch).map_err(|w| match w {
            Wait::Closed { got } => Wait::Closed { got: got + 3 },
            Wait::Deadline { got } => Wait::Deadline { got: got + 3 },
            other => other,
        })?;
        Ok(body)
    }

    /// Reads exactly `buf.len()` bytes, or says what stopped it.
    fn fill(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        watch: &mut dyn FnMut() -> Option<String>,
    ) -> Result<(), Wait> {
        let mut got = 0;
        let mut next_watch = Instant::now() + TICK * 5;
        while got < buf.len() {
            quick_ack(&self.stream);
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(Wait::Closed { got }),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_tick(&e) => {}
                Err(e) if is_closed(&e) => return Err(Wait::Closed { got }),
                Err(e) => return Err(Wait::Io(e)),
            }
            if got == buf.len() {
                break;
            }
            let now = Instant::now();
            if now >= next_watch {
                next_watch = now + TICK * 5;
                if let Some(reason) = watch() {
                    return Err(Wait::Stopped(reason));
                }
            }
            if now >= deadline {
                return Err(Wait::Deadline { got });
            }
        }
        Ok(())
    }
}

/// Turns delayed ACKs off for the next reads (Linux resets TCP_QUICKACK
/// after it acknowledges). Bochs writes the guest's bytes one `write` at a
/// time with Nagle's algorithm on, so each small segment waits for the ACK
/// of the previous one: with delayed ACKs that is up to 40 ms per result.
fn quick_ack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor owned by `stream`, and a pointer
    // to an int option of the right size; failure only leaves ACKs delayed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const on).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A read or write timeout (what the socket's tick looks like).
fn is_tick(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The peer is gone.
fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}
