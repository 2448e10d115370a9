//! The VM-fuzzing protocol: what the in-guest executor, a monitor built
//! with okernel's `fuzz` feature and the host-side driver exchange.
//!
//! Nothing here is part of a production monitor: the two calls below
//! exist only in a monitor built with the `fuzz` feature; any other
//! monitor answers them with [`crate::hypercall::Status::UnknownCall`].
//!
//! # Monitor calls (VMCALL, the register convention of [`crate::hypercall`])
//!
//! - [`CALL_BASELINE`]: the trusted context (CPL 0, context 0) asks the
//!   monitor to record the baseline the oracles compare against: a
//!   checksum of every locked region, and a fingerprint of the policy
//!   state (regions and their locks, CR pins, MSR locks, the
//!   descriptor-table lock, gates, live contexts, protected pages). RDI
//!   in = guest-physical address of a page (4 KiB-aligned guest RAM,
//!   writable in the trusted view) where the monitor keeps an
//!   [`AuditMirror`] from then on, or 0 for none (`InvalidArgument` for a
//!   bad page, nothing recorded). RDI out = the number of bytes
//!   checksummed. From any other caller: `PermissionDenied`, nothing
//!   recorded.
//! - [`CALL_CHECK`]: the trusted context asks the monitor to check the
//!   invariants against the baseline and to hand over the coverage it
//!   collected since the last check. RDI = guest-physical address of a
//!   4 KiB-aligned page, writable guest RAM in the trusted view, where the
//!   monitor writes a [`CheckReport`]; the coverage map is cleared. RAX =
//!   `Success` when the report was written (whatever its verdict),
//!   `InvalidArgument` for a bad page, `NotFound` before a baseline,
//!   `PermissionDenied` from any other caller (nothing cleared).
//!
//! # Coverage
//!
//! The monitor counts *edges* between consecutive VM exits: each exit has
//! a key (exit reason × handler outcome × policy decision, see okernel's
//! `fuzz` module), and the edge index is `(previous_key >> 1) ^ key`
//! modulo [`MONITOR_MAP_SIZE`]. The executor adds its own op × outcome
//! indices above [`GUEST_MAP_BASE`]. The host's map is [`MAP_SIZE`] long.
//!
//! # Transport
//!
//! A test case travels host → guest as a [`CASE_MAGIC`] byte, a
//! little-endian `u16` length (at most [`MAX_CASE`]) and the bytes; the
//! result comes back as a [`RESULT_MAGIC`] byte, a little-endian `u16`
//! length and a [`ResultFrame`] encoding. On Bochs both go over COM2
//! ([`COM2`]); on KVM through the mailbox of [`mailbox`] and the
//! [`DOORBELL_PORT`].

/// Records the oracles' baseline (see the module docs).
pub const CALL_BASELINE: u64 = 0x100;
/// Checks the invariants and hands over coverage (see the module docs).
pub const CALL_CHECK: u64 = 0x101;

/// Entries of the map the monitor fills.
pub const MONITOR_MAP_SIZE: usize = 4096;
/// The first index of the executor's own entries.
pub const GUEST_MAP_BASE: usize = MONITOR_MAP_SIZE;
/// Entries of the executor's part of the map.
pub const GUEST_MAP_SIZE: usize = 4096;
/// The whole coverage map the host keeps.
pub const MAP_SIZE: usize = MONITOR_MAP_SIZE + GUEST_MAP_SIZE;

/// The most coverage indices one [`CheckReport`] carries.
pub const MAX_HITS: usize = 1000;
/// The longest test case, in bytes.
pub const MAX_CASE: usize = 1024;
/// The longest result frame, in bytes.
pub const MAX_RESULT: usize =
    ResultHeader::SIZE + 2 * (MAX_HITS + GUEST_MAP_SIZE / 8) + MAX_MESSAGE;
/// The longest violation message, in bytes.
pub const MAX_MESSAGE: usize = 512;

/// Starts a test case (host → guest).
pub const CASE_MAGIC: u8 = 0xC5;
/// Starts a result (guest → host).
pub const RESULT_MAGIC: u8 = 0x5C;
/// The guest is ready for its first case (guest → host, once, Bochs only).
pub const READY_MAGIC: u8 = 0xA5;

/// The I/O base of the UART that carries cases on Bochs.
pub const COM2: u16 = 0x2f8;
/// The port the executor writes the mailbox address to on KVM (`out dx,
/// eax`): "the result is in the mailbox, give me the next case".
pub const DOORBELL_PORT: u16 = 0xf5;

/// The mailbox layout on KVM: 8 KiB of guest RAM, 4 KiB-aligned, below
/// 4 GiB.
pub mod mailbox {
    /// Bytes in the mailbox.
    pub const SIZE: usize = 8192;
    /// `u32` LE: the length of the case that follows (the host writes it).
    pub const CASE_LEN: usize = 0;
    /// The case bytes.
    pub const CASE: usize = 8;
    /// `u32` LE: the length of the result frame that follows (the guest
    /// writes it; 0 before the first case).
    pub const RESULT_LEN: usize = 4096;
    /// The result frame bytes (a [`super::ResultFrame`] encoding).
    pub const RESULT: usize = 4096 + 8;
}

/// What the monitor's invariant check found ([`CheckReport::verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MonitorVerdict {
    /// Every invariant held.
    Intact = 0,
    /// A locked region's bytes changed: subject = region id, expected /
    /// actual = checksums.
    RegionChanged = 1,
    /// A region locked at the baseline is no longer locked (invariant 8):
    /// subject = region id.
    RegionUnlocked = 2,
    /// The policy state differs from the baseline: subject = which part
    /// (see [`PolicyPart`]), expected / actual = fingerprints.
    PolicyChanged = 3,
    /// A view grants more than the policy allows: subject = context,
    /// expected = guest-physical page, actual = the view's permissions.
    ViewTooPermissive = 4,
    /// A pinned CR bit is clear in the guest's CR: subject = 0 or 4,
    /// expected = pinned bits, actual = the CR value.
    CrPinLost = 5,
    /// A locked MSR holds another value: subject = MSR index, expected =
    /// the locked value, actual = the value.
    MsrChanged = 6,
    /// The monitor's exit handling reported something unexpected since
    /// the last check (an exit reason no handler expects): subject = the
    /// exit reason.
    UnexpectedExit = 7,
}

impl MonitorVerdict {
    /// Decodes [`CheckReport::verdict`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Intact,
            1 => Self::RegionChanged,
            2 => Self::RegionUnlocked,
            3 => Self::PolicyChanged,
            4 => Self::ViewTooPermissive,
            5 => Self::CrPinLost,
            6 => Self::MsrChanged,
            7 => Self::UnexpectedExit,
            _ => return None,
        })
    }

    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Intact => "intact",
            Self::RegionChanged => "locked region changed",
            Self::RegionUnlocked => "locked region unlocked",
            Self::PolicyChanged => "policy state changed",
            Self::ViewTooPermissive => "view grants more than the policy",
            Self::CrPinLost => "pinned CR bit lost",
            Self::MsrChanged => "locked MSR changed",
            Self::UnexpectedExit => "unexpected exit",
        }
    }
}

/// The parts of the policy fingerprint ([`MonitorVerdict::PolicyChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PolicyPart {
    /// Regions: range, kind, lock.
    Regions = 0,
    /// CR pins.
    Pins = 1,
    /// MSR locks.
    Msrs = 2,
    /// The descriptor-table lock.
    DescriptorTables = 3,
    /// Gates.
    Gates = 4,
    /// Live contexts.
    Contexts = 5,
    /// Protected pages.
    ProtectedPages = 6,
    /// The current context (the check runs in the trusted one).
    Current = 7,
}

/// The audit log as the monitor mirrors it into the executor's page
/// (registered with [`CALL_BASELINE`]): rewritten at the baseline and at
/// the end of every VM exit that wrote audit records, so the executor
/// judges each operation's records by reading memory instead of with an
/// AuditCount and an AuditRead (two VM exits) per operation. The executor
/// still compares `total` with the `audit_total` of every [`CheckReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct AuditMirror {
    /// Records written since the run started (what AuditCount answers).
    pub total: u64,
    /// The newest record (all zero before the first).
    pub newest: crate::policy::AuditRecord,
}

impl AuditMirror {
    /// No record yet.
    pub const EMPTY: Self = Self {
        total: 0,
        newest: crate::policy::AuditRecord::EMPTY,
    };
}

const _: () = assert!(core::mem::size_of::<AuditMirror>() == 72);

/// What [`CALL_CHECK`] writes to the guest's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct CheckReport {
    /// A [`MonitorVerdict`] code.
    pub verdict: u32,
    /// What the verdict is about (see each verdict).
    pub subject: u32,
    /// The value the baseline holds.
    pub expected: u64,
    /// The value found.
    pub actual: u64,
    /// VM exits since the last check.
    pub exits: u64,
    /// Audit records written since the run started (what AuditCount
    /// answers): the executor compares it with its [`AuditMirror`].
    pub audit_total: u64,
    /// Valid entries of `hits`.
    pub hits: u32,
    /// Coverage indices hit since the last check were dropped because
    /// `hits` was full.
    pub dropped: u32,
    /// Distinct coverage indices (below [`MONITOR_MAP_SIZE`]) hit since
    /// the last check, in the order first hit.
    pub hit: [u16; MAX_HITS],
}

impl CheckReport {
    /// An empty, intact report.
    pub const EMPTY: Self = Self {
        verdict: 0,
        subject: 0,
        expected: 0,
        actual: 0,
        exits: 0,
        audit_total: 0,
        hits: 0,
        dropped: 0,
        hit: [0; MAX_HITS],
    };
}

/// How a case ended, as the executor saw it ([`ResultHeader::verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CaseVerdict {
    /// Every oracle held.
    Pass = 0,
    /// An operation had an outcome the executor's model forbids (a write
    /// to locked memory that succeeded, a missing or extra audit record,
    /// a switch that skipped its gate, ...).
    GuestOracle = 1,
    /// The monitor's check reported a violation ([`MonitorVerdict`]).
    MonitorOracle = 2,
    /// The monitor did not answer the Version call after the case.
    MonitorDead = 3,
    /// The executor could not restore the state for the next case.
    ResetFailed = 4,
}

impl CaseVerdict {
    /// Decodes [`ResultHeader::verdict`].
    pub const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0 => Self::Pass,
            1 => Self::GuestOracle,
            2 => Self::MonitorOracle,
            3 => Self::MonitorDead,
            4 => Self::ResetFailed,
            _ => return None,
        })
    }

    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::GuestOracle => "guest oracle",
            Self::MonitorOracle => "monitor oracle",
            Self::MonitorDead => "monitor dead",
            Self::ResetFailed => "reset failed",
        }
    }
}

/// The fixed part of a result frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResultHeader {
    /// A [`CaseVerdict`] code.
    pub verdict: u8,
    /// Operations the case decoded to.
    pub ops_total: u16,
    /// Operations that ran (a gate may end a case early).
    pub ops_run: u16,
    /// VM exits the monitor counted during the case (0 without one).
    pub exits: u32,
    /// Coverage indices that follow.
    pub hits: u16,
    /// Bytes of message that follow the indices.
    pub message: u16,
}

impl ResultHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 13;
}

/// Why a frame did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or its counts announce.
    Truncated,
    /// More bytes than the header announces.
    TrailingBytes,
    /// A count above the protocol's limit.
    TooLong,
    /// The verdict code is not a [`CaseVerdict`].
    BadVerdict,
    /// A coverage index at or above [`MAP_SIZE`].
    BadIndex,
}

impl FrameError {
    /// A short description for error messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Truncated => "truncated result frame",
            Self::TrailingBytes => "result frame longer than its header says",
            Self::TooLong => "result frame count above the protocol limit",
            Self::BadVerdict => "unknown case verdict",
            Self::BadIndex => "coverage index outside the map",
        }
    }
}

/// A decoded result frame (borrowing the bytes it came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultFrame<'a> {
    /// The header.
    pub header: ResultHeader,
    hits: &'a [u8],
    /// The violation message (UTF-8 from the executor; empty on a pass).
    pub message: &'a [u8],
}

impl<'a> ResultFrame<'a> {
    /// Encodes a frame into `out`; returns the bytes used, or `None` when
    /// `out` is too small or a count is above the limits (the header's
    /// `hits` and `message` are taken from the slices).
    pub fn encode(
        header: ResultHeader,
        hits: &[u16],
        message: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        if hits.len() > MAX_HITS + GUEST_MAP_SIZE / 8 || message.len() > MAX_MESSAGE {
            return None;
        }
        let len = ResultHeader::SIZE + 2 * hits.len() + message.len();
        let out = out.get_mut(..len)?;
        out[0] = header.verdict;
        out[1..3].copy_from_slice(&header.ops_total.to_le_bytes());
        out[3..5].copy_from_slice(&header.ops_run.to_le_bytes());
        out[5..9].copy_from_slice(&header.exits.to_le_bytes());
        out[9..11].copy_from_slice(&(hits.len() as u16).to_le_bytes());
        out[11..13].copy_from_slice(&(message.len() as u16).to_le_bytes());
        let (idx, msg) = out[ResultHeader::SIZE..].split_at_mut(2 * hits.len());
        for (d, h) in idx.chunks_exact_mut(2).zip(hits) {
            d.copy_from_slice(&h.to_le_bytes());
        }
        msg.copy_from_slice(message);
        Some(len)
    }

    /// Decodes exactly `bytes` (the frame, without magic and length).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let head = bytes
            .get(..ResultHeader::SIZE)
            .ok_or(FrameError::Truncated)?;
        let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
        let header = ResultHeader {
            verdict: head[0],
            ops_total: u16_at(1),
            ops_run: u16_at(3),
            exits: u32::from_le_bytes([head[5], head[6], head[7], head[8]]),
            hits: u16_at(9),
            message: u16_at(11),
        };
        if CaseVerdict::from_raw(header.verdict).is_none() {
            return Err(FrameError::BadVerdict);
        }
        let nhits = usize::from(header.hits);
        let nmsg = usize::from(header.message);
        if nhits > MAX_HITS + GUEST_MAP_SIZE / 8 || nmsg > MAX_MESSAGE {
            return Err(FrameError::TooLong);
        }
        let want = ResultHeader::SIZE + 2 * nhits + nmsg;
        if bytes.len() < want {
            return Err(FrameError::Truncated);
        }
        if bytes.len() > want {
            return Err(FrameError::TrailingBytes);
        }
        let (hits, message) = bytes[ResultHeader::SIZE..].split_at(2 * nhits);
        let frame = Self {
            header,
            hits,
            message,
        };
        if frame.hits().any(|h| usize::from(h) >= MAP_SIZE) {
            return Err(FrameError::BadIndex);
        }
        Ok(frame)
    }

    /// The coverage indices.
    pub fn hits(&self) -> impl Iterator<Item = u16> + 'a {
        self.hits
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    }

    /// The verdict.
    pub fn verdict(&self) -> CaseVerdict {
        CaseVerdict::from_raw(self.header.verdict).unwrap_or(CaseVerdict::GuestOracle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let header = ResultHeader {
            verdict: CaseVerdict::GuestOracle as u8,
            ops_total: 7,
            ops_run: 3,
            exits: 0x1234_5678,
            hits: 0,
            message: 0,
        };
        let hits = [0u16, 17, 4095, 8191];
        let mut buf = [0u8; 64];
        let n = ResultFrame::encode(header, &hits, b"text write ok", &mut buf).unwrap();
        assert_eq!(n, ResultHeader::SIZE + 8 + 13);
        let f = ResultFrame::decode(&buf[..n]).unwrap();
        assert_eq!(f.header.ops_run, 3);
        assert_eq!(f.header.exits, 0x1234_5678);
        assert_eq!(f.hits().collect::<Vec<_>>(), hits);
        assert_eq!(f.message, b"text write ok");
        assert_eq!(f.verdict(), CaseVerdict::GuestOracle);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let mut buf = [0u8; 64];
        let n = ResultFrame::encode(ResultHeader::default(), &[1, 2], b"", &mut buf).unwrap();
        assert_eq!(
            ResultFrame::decode(&buf[..n - 1]),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            ResultFrame::decode(&buf[..n + 1]),
            Err(FrameError::TrailingBytes)
        );
        assert_eq!(ResultFrame::decode(&buf[..4]), Err(FrameError::Truncated));
        let mut bad = buf;
        bad[0] = 99;
        assert_eq!(ResultFrame::decode(&bad[..n]), Err(FrameError::BadVerdict));
        let mut bad = buf;
        bad[ResultHeader::SIZE..ResultHeader::SIZE + 2]
            .copy_from_slice(&(MAP_SIZE as u16).to_le_bytes());
        assert_eq!(ResultFrame::decode(&bad[..n]), Err(FrameError::BadIndex));
        let mut bad = buf;
        bad[11..13].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(ResultFrame::decode(&bad[..n]), Err(FrameError::TooLong));
    }

    #[test]
    fn encode_refuses_small_buffers_and_long_messages() {
        let mut small = [0u8; ResultHeader::SIZE + 1];
        assert_eq!(
            ResultFrame::encode(ResultHeader::default(), &[1], b"", &mut small),
            None
        );
        let mut big = [0u8; MAX_RESULT + 64];
        let long = [b'x'; MAX_MESSAGE + 1];
        assert_eq!(
            ResultFrame::encode(ResultHeader::default(), &[], &long, &mut big),
            None
        );
    }

    #[test]
    fn verdict_codes_round_trip() {
        for v in 0..=8u32 {
            if let Some(m) = MonitorVerdict::from_raw(v) {
                assert_eq!(m as u32, v);
                assert!(!m.name().is_empty());
            }
        }
        for v in 0..=8u8 {
            if let Some(c) = CaseVerdict::from_raw(v) {
                assert_eq!(c as u8, v);
            }
        }
        assert!(core::mem::size_of::<CheckReport>() <= 4096);
    }
}
