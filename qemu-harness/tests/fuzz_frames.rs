//! The fuzz protocol's byte stream over a real TCP connection, with a
//! fake guest on the other end: every way a peer can misbehave ends in
//! the right [`SessionError`], within the deadline.

use okernel_abi::fuzz::{
    CASE_MAGIC, CaseVerdict, MAX_CASE, MAX_RESULT, READY_MAGIC, RESULT_MAGIC, ResultFrame,
    ResultHeader,
};
use qemu_harness::fuzz::SessionError;
use qemu_harness::fuzz::frame::{Link, Wait, case_frame, decode_outcome};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_millis(300);

/// A link to a peer thread that runs `peer` on its end of the socket.
fn pair(peer: impl FnOnce(TcpStream) + Send + 'static) -> (Link, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || peer(TcpStream::connect(addr).unwrap()));
    let (stream, _) = listener.accept().unwrap();
    (Link::new(stream).unwrap(), handle)
}

fn no_watch() -> impl FnMut() -> Option<String> {
    || None
}

/// A result frame on the wire: magic, length, `frame`.
fn wire(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![RESULT_MAGIC];
    v.extend_from_slice(&(frame.len() as u16).to_le_bytes());
    v.extend_from_slice(frame);
    v
}

fn encoded(verdict: CaseVerdict, hits: &[u16], message: &[u8]) -> Vec<u8> {
    let header = ResultHeader {
        verdict: verdict as u8,
        ops_total: 5,
        ops_run: 4,
        exits: 77,
        ..Default::default()
    };
    let mut buf = vec![0; MAX_RESULT];
    let n = ResultFrame::encode(header, hits, message, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Reads one case frame the way the executor does.
fn read_case(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 3];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], CASE_MAGIC);
    let mut case = vec![0; usize::from(u16::from_le_bytes([head[1], head[2]]))];
    s.read_exact(&mut case).unwrap();
    case
}

/// Sends a case and waits for its result, as a session does.
fn round(link: &mut Link, case: &[u8]) -> Result<Vec<u8>, Wait> {
    link.send_case(case)?;
    link.recv_result(Instant::now() + SHORT, &mut no_watch())
}

fn case_error(w: Wait) -> SessionError {
    w.into_case_error("test", SHORT, "console".into())
}

#[test]
fn a_good_frame_round_trips() {
    let frame = encoded(CaseVerdict::GuestOracle, &[3, 4097], b"text write ok");
    let answer = wire(&frame);
    let (mut link, peer) = pair(move |mut s| {
        s.write_all(&[READY_MAGIC]).unwrap();
        assert_eq!(read_case(&mut s), b"case-bytes");
        s.write_all(&answer).unwrap();
    });
    link.wait_ready(Instant::now() + SHORT, &mut no_watch())
        .unwrap();
    let bytes = round(&mut link, b"case-bytes").unwrap();
    let o = decode_outcome("test", &bytes).unwrap();
    assert_eq!(o.verdict, CaseVerdict::GuestOracle);
    assert_eq!((o.ops_total, o.ops_run, o.exits), (5, 4, 77));
    assert_eq!(o.hits, [3, 4097]);
    assert_eq!(o.message, "text write ok");
    peer.join().unwrap();
}

#[test]
fn a_long_case_is_cut_to_the_limit() {
    let f = case_frame(&vec![7; MAX_CASE + 10]);
    assert_eq!(f.len(), 3 + MAX_CASE);
    assert_eq!(f[0], CASE_MAGIC);
    assert_eq!(usize::from(u16::from_le_bytes([f[1], f[2]])), MAX_CASE);
}

#[test]
fn a_frame_that_does_not_decode_is_a_protocol_error() {
    let mut frame = encoded(CaseVerdict::Pass, &[1, 2], b"");
    frame.pop(); // the header announces two hits; one and a half arrive
    let answer = wire(&frame);
    let (mut link, peer) = pair(move |mut s| {
        read_case(&mut s);
        s.write_all(&answer).unwrap();
    });
    let bytes = round(&mut link, b"x").unwrap();
    let e = decode_outcome("test", &bytes).unwrap_err();
    assert!(
        matches!(&e, SessionError::Protocol { detail, .. } if detail.contains("truncated")),
        "{e}"
    );
    peer.join().unwrap();
}

#[test]
fn a_frame_cut_short_on_the_wire_times_out_or_crashes() {
    let frame = encoded(CaseVerdict::Pass, &[1, 2], b"");
    let half = wire(&frame)[..8].to_vec();
    // The peer stays silent after half a frame: a timeout, on time.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let sent = half.clone();
    let (mut link, peer) = pair(move |mut s| {
        read_case(&mut s);
        s.write_all(&sent).unwrap();
        let _ = rx.recv_timeout(Duration::from_secs(10));
    });
    let start = Instant::now();
    let w = round(&mut link, b"x").unwrap_err();
    assert!(matches!(w, Wait::Deadline { got: 8 }), "{w:?}");
    assert!(start.elapsed() < SHORT * 3, "{:?}", start.elapsed());
    let e = case_error(w);
    assert!(
        matches!(e, SessionError::Timeout { timeout, .. } if timeout == SHORT),
        "{e}"
    );
    tx.send(()).unwrap();
    peer.join().unwrap();

    // The peer closes after half a frame: the machine died.
    let (mut link, peer) = pair(move |mut s| {
        read_case(&mut s);
        s.write_all(&half).unwrap();
    });
    let e = case_error(round(&mut link, b"x").unwrap_err());
    assert!(
        matches!(&e, SessionError::Crashed { reason, console, .. }
            if reason.contains("closed (8 bytes") && console == "console"),
        "{e}"
    );
    peer.join().unwrap();
}

#[test]
fn a_wrong_magic_or_an_oversize_length_is_a_protocol_error() {
    let (mut link, peer) = pair(|mut s| {
        read_case(&mut s);
        s.write_all(&[0x42, 1, 0, 0]).unwrap();
    });
    let e = case_error(round(&mut link, b"x").unwrap_err());
    assert!(
        matches!(&e, SessionError::Protocol { detail, .. } if detail.contains("got 0x42")),
        "{e}"
    );
    peer.join().unwrap();

    let too_long = (MAX_RESULT as u16 + 1).to_le_bytes();
    let (mut link, peer) = pair(move |mut s| {
        read_case(&mut s);
        s.write_all(&[RESULT_MAGIC, too_long[0], too_long[1]])
            .unwrap();
    });
    let e = case_error(round(&mut link, b"x").unwrap_err());
    assert!(
        matches!(&e, SessionError::Protocol { detail, .. } if detail.contains("above the limit")),
        "{e}"
    );
    peer.join().unwrap();
}

#[test]
fn the_wrong_ready_byte_or_a_closed_peer_fails_the_boot() {
    let (mut link, peer) = pair(|mut s| s.write_all(&[0x00]).unwrap());
    let w = link
        .wait_ready(Instant::now() + SHORT, &mut no_watch())
        .unwrap_err();
    let e = w.into_boot_error("test", SHORT, String::new());
    assert!(
        matches!(&e, SessionError::Boot { reason, .. } if reason.contains("ready byte 0xa5, got 0x00")),
        "{e}"
    );
    peer.join().unwrap();

    let (mut link, peer) = pair(drop);
    peer.join().unwrap();
    let w = link
        .wait_ready(Instant::now() + SHORT, &mut no_watch())
        .unwrap_err();
    assert!(matches!(w, Wait::Closed { got: 0 }), "{w:?}");
}

#[test]
fn a_peer_that_closes_during_a_case_crashed() {
    let (mut link, peer) = pair(|mut s| {
        read_case(&mut s);
    });
    let e = case_error(round(&mut link, b"x").unwrap_err());
    assert!(
        matches!(&e, SessionError::Crashed { reason, .. } if reason.contains("closed (0 bytes")),
        "{e}"
    );
    peer.join().unwrap();
}

#[test]
fn the_watch_ends_a_wait_with_its_reason() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (mut link, peer) = pair(move |mut s| {
        read_case(&mut s);
        let _ = rx.recv_timeout(Duration::from_secs(10));
    });
    link.send_case(b"x").unwrap();
    let mut calls = 0;
    let mut watch = || {
        calls += 1;
        Some("Bochs exited (exit status: 1)".to_string())
    };
    let w = link
        .recv_result(Instant::now() + Duration::from_secs(5), &mut watch)
        .unwrap_err();
    let e = case_error(w);
    assert!(
        matches!(&e, SessionError::Crashed { reason, .. } if reason == "Bochs exited (exit status: 1)"),
        "{e}"
    );
    tx.send(()).unwrap();
    peer.join().unwrap();
}
