//! The audit log: a fixed-size ring of structured records of every denied
//! guest operation (invariant 10). No allocation; when full, the oldest
//! record is overwritten and counted as dropped.
//!
//! The exit that denies an operation only stores its binary record
//! ([`AuditRing::record`]) and, when the console is to show it, queues a
//! binary [`Line`] (the record itself, by value). Nothing is formatted or
//! written to the UART there: the lines are formatted and printed by
//! [`AuditRing::print_pending`], which the exit layer calls where the
//! console is used anyway — before a byte the guest sends to the shared
//! UART (so the lines keep their place among the guest's), before the
//! monitor's own lines, and at the end of the run — and on the tick of the
//! VMX-preemption timer the exit layer arms while lines wait (so they come
//! out, one a tick, when the guest prints nothing). The exit that denies
//! an operation so costs the same whether or not a serial line is
//! attached (issue 14: a 300-byte line is about 26 ms at 115200 baud);
//! the UART's time is deferred to those points, not removed. When the
//! queue is full ([`QUEUE`]) the exit prints the waiting lines first, so
//! nothing is lost and a flood costs what it did before; without the
//! timer, and before a write the monitor performs (a reset or sleep port
//! may end the machine), the lines are printed at once; a monitor fault
//! prints them before its report (`crate::launch::print_unprinted_audit_lines`).

use bitflags::bitflags;
use okernel_abi::policy as abi;

bitflags! {
    /// An access type (EPT-violation qualification bits 2:0 for the access,
    /// 5:3 for what the EPT entry allowed; SDM Vol. 3C §28.2.1, Table 28-7).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Access: u8 {
        /// Data read.
        const READ = 1 << 0;
        /// Data write.
        const WRITE = 1 << 1;
        /// Instruction fetch.
        const EXECUTE = 1 << 2;
    }
}

impl Access {
    /// "RWX" with dashes for missing rights, for logs.
    pub fn letters(self) -> [u8; 3] {
        [
            if self.contains(Access::READ) {
                b'R'
            } else {
                b'-'
            },
            if self.contains(Access::WRITE) {
                b'W'
            } else {
                b'-'
            },
            if self.contains(Access::EXECUTE) {
                b'X'
            } else {
                b'-'
            },
        ]
    }
}

/// What was denied and what the monitor did about it: the ABI's types,
/// so the record the monitor keeps and the one `AuditRead` copies out
/// name the same things. What `gpa` and `qualification` hold for each
/// kind: `docs/policy.md`, "Audit".
pub use okernel_abi::policy::{AuditAction, AuditKind};

/// One denied operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number, from 0, over the whole run (gaps = dropped).
    pub seq: u64,
    /// What was denied.
    pub kind: AuditKind,
    /// The context (EPT view) the guest ran in; 0 = base view.
    pub context: u16,
    /// The guest-physical address (see [`AuditKind`] for other kinds).
    pub gpa: u64,
    /// The guest-linear address, when the processor reported one.
    pub gva: Option<u64>,
    /// The attempted access.
    pub access: Access,
    /// What the EPT entry allowed.
    pub allowed: Access,
    /// The raw exit qualification.
    pub qualification: u64,
    /// Guest RIP of the denied instruction.
    pub rip: u64,
    /// Guest CR3 at the time.
    pub cr3: u64,
    /// What the monitor did.
    pub action: AuditAction,
}

impl core::fmt::Display for AuditRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let a = self.access.letters();
        let p = self.allowed.letters();
        write!(
            f,
            "audit #{} {} ctx={} gpa={:#x} gva=",
            self.seq,
            self.kind.name(),
            self.context,
            self.gpa
        )?;
        match self.gva {
            Some(v) => write!(f, "{v:#x}")?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " access={} allowed={} rip={:#x} cr3={:#x} qual={:#x} action={}",
            core::str::from_utf8(&a).unwrap_or("???"),
            core::str::from_utf8(&p).unwrap_or("???"),
            self.rip,
            self.cr3,
            self.qualification,
            self.action.name()
        )
    }
}

impl AuditRecord {
    /// The record as the `AuditRead` hypercall copies it into guest memory.
    pub fn to_abi(&self) -> abi::AuditRecord {
        abi::AuditRecord {
            sequence: self.seq,
            kind: self.kind as u32,
            action: self.action as u32,
            context: self.context.into(),
            gpa: self.gpa,
            gva: self.gva.unwrap_or(0),
            access: self.access.bits().into(),
            rip: self.rip,
            qualification: self.qualification,
        }
    }

    /// The record as one JSON object (no spaces, no newline), for the
    /// console's `OKERNEL-AUDIT: ` lines. Addresses and values are strings
    /// of hexadecimal digits (`"0x…"`) so no parser loses bits above 2^53;
    /// `gva` is `null` when the processor reported none.
    pub fn json(&self) -> Json<'_> {
        Json(self)
    }

    /// What makes two records the same on the console: everything but
    /// the sequence number, the RIP, the linear address and CR3.
    const fn signature(&self) -> Signature {
        Signature {
            kind: self.kind,
            context: self.context,
            gpa: self.gpa,
            qualification: self.qualification,
            action: self.action,
        }
    }
}

/// An [`AuditRecord`] displayed as JSON ([`AuditRecord::json`]).
#[derive(Debug, Clone, Copy)]
pub struct Json<'a>(&'a AuditRecord);

impl core::fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let r = self.0;
        let a = r.access.letters();
        let p = r.allowed.letters();
        write!(
            f,
            "{{\"seq\":{},\"kind\":\"{}\",\"ctx\":{},\"gpa\":\"{:#x}\",\"gva\":",
            r.seq,
            r.kind.name(),
            r.context,
            r.gpa
        )?;
        match r.gva {
            Some(v) => write!(f, "\"{v:#x}\"")?,
            None => f.write_str("null")?,
        }
        write!(
            f,
            ",\"access\":\"{}\",\"allowed\":\"{}\",\"rip\":\"{:#x}\",\"cr3\":\"{:#x}\",\"qual\":\"{:#x}\",\"action\":\"{}\"}}",
            core::str::from_utf8(&a).unwrap_or("???"),
            core::str::from_utf8(&p).unwrap_or("???"),
            r.rip,
            r.cr3,
            r.qualification,
            r.action.name()
        )
    }
}

/// Distinct records printed to the console before the console thins out
/// ([`AuditRing::record`]): more than any run of the attack suite makes.
pub const PRINT_ALL: u64 = 1024;

/// Whether the distinct record numbered `n` (from 0) goes to the console.
pub const fn printed(n: u64) -> bool {
    n < PRINT_ALL || n.is_power_of_two()
}

/// The number of records the monitor keeps.
pub const AUDIT_CAPACITY: usize = 64;

/// The part of a record that says what was attempted
/// ([`AuditRecord::signature`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    kind: AuditKind,
    context: u16,
    gpa: u64,
    qualification: u64,
    action: AuditAction,
}

/// How many distinct records the console remembers to fold repeats into
/// ([`AuditRing::record`]).
const RECENT: usize = 16;

/// The console lines waiting to be printed, at most: more than the
/// attack suite or a Linux boot queues between two bytes of guest output.
/// A line that finds the queue full is not lost: the exit that queues it
/// prints the waiting ones first (back-pressure: a flood of distinct
/// denials costs what it did when every line was printed in its exit,
/// and the console shows what it showed then), and counts them
/// ([`AuditRing::printed_in_exit`]).
pub const QUEUE: usize = 32;

/// One line the console owes ([`AuditRing::print_pending`]): binary
/// until printed. `Display` gives the line's text, without the logger's
/// prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A record: `OKERNEL-AUDIT: ` and its JSON ([`AuditRecord::json`]).
    Record(AuditRecord),
    /// Record `seq` repeats record `of`, `repeats` times so far.
    Repeat {
        /// The repeat's sequence number.
        seq: u64,
        /// The printed record it repeats.
        of: u64,
        /// Repeats of `of` so far.
        repeats: u64,
    },
    /// `count` distinct records were not printed since record `since`.
    Unprinted {
        /// Distinct records not printed.
        count: u64,
        /// The last record printed before them.
        since: u64,
    },
    /// What the monitor did about the record queued just before.
    Note(Note),
}

/// The monitor's account of a record's consequence, printed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Context `from` stopped for `reason`; the trusted context resumed at
    /// the gate at linear address `gate`.
    Gated {
        /// The stopped context.
        from: u16,
        /// The exit reason's name.
        reason: &'static str,
        /// The gate's linear address.
        gate: u64,
    },
    /// Context `context` stopped for `reason`; the virtual CPU waits in
    /// the activity state `state` for a reset.
    Halted {
        /// The stopped context.
        context: u16,
        /// The exit reason's name.
        reason: &'static str,
        /// The activity state's name.
        state: &'static str,
    },
    /// A SIPI started a processor at vector `vector` (`crate::exit::sipi`).
    Started {
        /// The SIPI's vector.
        vector: u8,
    },
    /// A write to kernel text at `rip` refused: `why`, at `gpa`.
    PatchRefused {
        /// The writer's RIP.
        rip: u64,
        /// What was wrong with it.
        why: &'static str,
        /// The refused byte's guest-physical address.
        gpa: u64,
    },
}

impl core::fmt::Display for Line {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Line::Record(ref r) => write!(f, "OKERNEL-AUDIT: {}", r.json()),
            Line::Repeat { seq, of, repeats } => write!(
                f,
                "okernel: audit #{seq} repeats #{of} ({repeats} repeat(s) so far)"
            ),
            Line::Unprinted { count, since } => write!(
                f,
                "okernel: audit: {count} distinct record(s) not printed since #{since} (the console shows the first {PRINT_ALL} distinct records, then every power of two; AuditCount counts them all)"
            ),
            Line::Note(Note::Gated { from, reason, gate }) => write!(
                f,
                "okernel: context {from} stopped ({reason}): resumed the trusted context at gate {gate:#x}"
            ),
            Line::Note(Note::Halted {
                context,
                reason,
                state,
            }) => write!(
                f,
                "okernel: context {context} stopped ({reason}): the virtual CPU waits for a reset ({state})"
            ),
            Line::Note(Note::Started { vector }) => write!(
                f,
                "okernel: SIPI: processor starts at {:#x} (vector {vector:#04x}) in real mode, under the monitor",
                u64::from(vector) << 12
            ),
            Line::Note(Note::PatchRefused { rip, why, gpa }) => write!(
                f,
                "okernel: patch: refused write at rip {rip:#x}: {why} at gpa {gpa:#x}; old bytes restored"
            ),
        }
    }
}

/// A fixed queue of [`Line`]s, oldest first.
#[derive(Debug, Clone)]
struct LineQueue {
    lines: [Option<Line>; QUEUE],
    head: usize,
    len: usize,
}

impl LineQueue {
    const fn new() -> Self {
        Self {
            lines: [None; QUEUE],
            head: 0,
            len: 0,
        }
    }

    const fn full(&self) -> bool {
        self.len == QUEUE
    }

    /// Appends `line` to a queue that is not full.
    fn push(&mut self, line: Line) {
        debug_assert!(!self.full());
        self.lines[(self.head + self.len) % QUEUE] = Some(line);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Line> {
        if self.len == 0 {
            return None;
        }
        let line = self.lines[self.head].take();
        self.head = (self.head + 1) % QUEUE;
        self.len -= 1;
        line
    }
}

/// A record the console printed, and how often it came again since.
#[derive(Debug, Clone, Copy)]
struct Printed {
    signature: Signature,
    seq: u64,
    repeats: u64,
}

/// What [`AuditRing::record`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The record as kept (its `seq` assigned).
    pub record: AuditRecord,
    /// Whether its line goes to the console (queued).
    pub printed: bool,
}

/// A ring of the last `N` records.
#[derive(Debug, Clone)]
pub struct AuditRing<const N: usize> {
    records: [Option<AuditRecord>; N],
    next_seq: u64,
    /// The last record [`AuditRing::record`] printed.
    last_printed: u64,
    /// The last [`RECENT`] distinct records printed (round robin).
    recent: [Option<Printed>; RECENT],
    next_recent: usize,
    /// Records not folded into a recent one, so far.
    distinct: u64,
    /// Distinct records not printed since the last printed one.
    suppressed: u64,
    /// The lines the console owes.
    queue: LineQueue,
    /// Lines printed by the exit that queued a line, the queue full.
    printed_in_exit: u64,
    /// Where printed lines go: [`log_line`], or a test's capture.
    printer: fn(&Line),
}

/// Prints `line` to the console (`log::warn!`): the production printer.
pub fn log_line(line: &Line) {
    log::warn!("{line}");
}

/// The monitor's audit log.
pub type AuditLog = AuditRing<AUDIT_CAPACITY>;

impl<const N: usize> Default for AuditRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> AuditRing<N> {
    /// An empty log.
    pub const fn new() -> Self {
        Self {
            records: [None; N],
            next_seq: 0,
            last_printed: 0,
            recent: [None; RECENT],
            next_recent: 0,
            distinct: 0,
            suppressed: 0,
            queue: LineQueue::new(),
            printed_in_exit: 0,
            printer: log_line,
        }
    }

    /// Appends a record ([`Self::push`]) and queues its console line
    /// ([`Line`], printed by [`Self::print_pending`]), with two limits, so that a guest repeating
    /// a denied action (a port, an MSR, a page) cannot make the monitor
    /// spend its exits on the serial console (issue 13), nor a kernel's
    /// boot-time probes slow its boot (issue 15: Linux's 48 Super I/O
    /// probes of denied ports cost 17 % of its boot in Bochs, at two lines
    /// each):
    ///
    /// * a record the same as one of the last 16 (`RECENT`) distinct records
    ///   printed (`AuditRecord::signature`: all but its sequence number,
    ///   RIP, linear address and CR3) is folded into it: a short line
    ///   when it has repeated 1, 2, 4, 8... times;
    /// * past [`PRINT_ALL`] distinct (not folded) records, only the
    ///   distinct records whose number is a power of two are printed
    ///   ([`printed`]), each after a line counting the distinct records
    ///   not printed since. Repeats do not use up the budget, so flooding
    ///   one denied action cannot hide a different, later one; hiding one
    ///   takes more than [`PRINT_ALL`] different violations first, and the
    ///   count lines still say that records went unprinted.
    ///
    /// Every record is counted (`AuditCount`) and the last `N` are kept in
    /// the ring (`AuditRead`).
    pub fn record(&mut self, record: AuditRecord) -> Recorded {
        let r = self.push(record);
        let signature = r.signature();
        if let Some(p) = self
            .recent
            .iter_mut()
            .flatten()
            .find(|p| p.signature == signature)
        {
            p.repeats += 1;
            if p.repeats.is_power_of_two() {
                let line = Line::Repeat {
                    seq: r.seq,
                    of: p.seq,
                    repeats: p.repeats,
                };
                self.queue_line(line);
            }
            return Recorded {
                record: r,
                printed: false,
            };
        }
        let distinct = self.distinct;
        self.distinct += 1;
        if !printed(distinct) {
            self.suppressed += 1;
            return Recorded {
                record: r,
                printed: false,
            };
        }
        if self.suppressed != 0 {
            self.queue_line(Line::Unprinted {
                count: self.suppressed,
                since: self.last_printed,
            });
            self.suppressed = 0;
        }
        self.queue_line(Line::Record(r));
        self.last_printed = r.seq;
        self.recent[self.next_recent] = Some(Printed {
            signature,
            seq: r.seq,
            repeats: 0,
        });
        self.next_recent = (self.next_recent + 1) % RECENT;
        Recorded {
            record: r,
            printed: true,
        }
    }

    /// Queues `note` after the record queued last.
    pub fn note(&mut self, note: Note) {
        self.queue_line(Line::Note(note));
    }

    /// Queues `line`, printing the waiting lines first when the queue is
    /// full ([`QUEUE`]).
    fn queue_line(&mut self, line: Line) {
        if self.queue.full() {
            self.printed_in_exit += QUEUE as u64;
            self.print_pending();
        }
        self.queue.push(line);
    }

    /// Lines the exit that queued a line printed because the queue was
    /// full, over the whole run (0 unless a guest floods the console with
    /// distinct denials faster than it prints).
    pub const fn printed_in_exit(&self) -> u64 {
        self.printed_in_exit
    }

    /// Whether lines wait for the console.
    pub const fn has_pending(&self) -> bool {
        self.queue.len != 0
    }

    /// Hands the waiting lines to `emit`, oldest first, and forgets them.
    pub fn take_pending(&mut self, mut emit: impl FnMut(&Line)) {
        while let Some(line) = self.queue.pop() {
            emit(&line);
        }
    }

    /// Formats and prints the waiting lines ([`log_line`]), oldest first:
    /// with [`Self::print_next`], the only places audit lines are written
    /// to the console.
    ///
    /// Out of line, as is [`Self::print_next`]: in line, the call through
    /// the printer made every denial's exit 18 instructions dearer
    /// (`cargo xtask bench vmx`, ept-violation 582 against 564).
    #[inline(never)]
    pub fn print_pending(&mut self) {
        let printer = self.printer;
        self.take_pending(printer);
    }

    /// Formats and prints the oldest waiting line, if any.
    #[inline(never)]
    pub fn print_next(&mut self) {
        if let Some(line) = self.queue.pop() {
            (self.printer)(&line);
        }
    }

    /// Sends printed lines to `printer` instead of the console (the
    /// tests' capture).
    pub fn set_printer(&mut self, printer: fn(&Line)) {
        self.printer = printer;
    }

    /// Appends a record (its `seq` is assigned here) and returns it.
    pub fn push(&mut self, mut record: AuditRecord) -> AuditRecord {
        record.seq = self.next_seq;
        self.records[(self.next_seq % N as u64) as usize] = Some(record);
        self.next_seq += 1;
        record
    }

    /// Records written over the whole run.
    pub const fn total(&self) -> u64 {
        self.next_seq
    }

    /// Records overwritten because the ring was full.
    pub const fn dropped(&self) -> u64 {
        self.next_seq.saturating_sub(N as u64)
    }

    /// Records held now.
    pub fn len(&self) -> usize {
        self.next_seq.min(N as u64) as usize
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// The held records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &AuditRecord> + '_ {
        let start = self.dropped();
        (start..self.next_seq).filter_map(move |s| self.records[(s % N as u64) as usize].as_ref())
    }

    /// The record with sequence number `seq`, if the ring still holds it.
    pub fn get(&self, seq: u64) -> Option<&AuditRecord> {
        if seq < self.dropped() || seq >= self.next_seq {
            return None;
        }
        self.records[(seq % N as u64) as usize].as_ref()
    }

    /// The newest record.
    pub fn last(&self) -> Option<&AuditRecord> {
        self.next_seq
            .checked_sub(1)
            .and_then(|s| self.records[(s % N as u64) as usize].as_ref())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    fn rec(gpa: u64) -> AuditRecord {
        AuditRecord {
            seq: 99,
            kind: AuditKind::EptViolation,
            context: 0,
            gpa,
            gva: Some(0xffff_8000_0000_1000),
            access: Access::WRITE,
            allowed: Access::empty(),
            qualification: 0x182,
            rip: 0x20_1000,
            cr3: 0x10_0000,
            action: AuditAction::InjectGp,
        }
    }

    #[test]
    fn ring_keeps_the_newest_and_counts_drops() {
        let mut r = AuditRing::<4>::new();
        assert!(r.is_empty());
        for i in 0..6 {
            assert_eq!(r.push(rec(i)).seq, i);
        }
        assert_eq!(r.total(), 6);
        assert_eq!(r.dropped(), 2);
        assert_eq!(r.len(), 4);
        let gpas: Vec<u64> = r.iter().map(|x| x.gpa).collect();
        assert_eq!(gpas, [2, 3, 4, 5]);
        assert_eq!(r.last().map(|x| x.seq), Some(5));
    }

    #[test]
    fn a_flood_of_records_thins_out_on_the_console_but_not_in_the_ring() {
        let shown = (0..100_000u64).filter(|&s| printed(s)).count() as u64;
        // #0..#1023, then 1024, 2048, .., 65536.
        assert_eq!(shown, PRINT_ALL + 7);
        // Distinct records (a different page each).
        let mut r = AuditRing::<4>::new();
        let printed_lines = (0..5000).filter(|&i| r.record(rec(i)).printed).count() as u64;
        assert_eq!(printed_lines, PRINT_ALL + 3, "#0..#1023, 1024, 2048, 4096");
        assert_eq!(r.total(), 5000, "every record counted");
        assert_eq!(r.last().map(|x| x.gpa), Some(4999), "and kept");
        assert_eq!(r.last_printed, 4096);
    }

    #[test]
    fn repeats_cannot_hide_a_different_record() {
        // A review's attack: one denied action repeated past the budget,
        // then the real violation, then more repeats.
        let mut r = AuditRing::<64>::new();
        for _ in 0..1500 {
            r.record(rec(0x1000));
        }
        let real = r.record(rec(0xdead_0000));
        assert_eq!(real.record.seq, 1500);
        assert!(real.printed, "repeats do not use up the console's budget");
        for _ in 0..3500 {
            r.record(rec(0x1000));
        }
        assert_eq!(r.total(), 5001);
    }

    #[test]
    fn repeats_of_a_record_are_folded_into_it() {
        let mut r = AuditRing::<4>::new();
        assert!(r.record(rec(0x1000)).printed);
        // The same attempt again from elsewhere (RIP, CR3 differ): folded.
        for _ in 0..100 {
            let again = AuditRecord {
                rip: 0x30_0000,
                cr3: 0x20_0000,
                ..rec(0x1000)
            };
            assert!(!r.record(again).printed);
        }
        // A different page, a different action: printed.
        assert!(r.record(rec(0x2000)).printed);
        let refused = AuditRecord {
            action: AuditAction::Refused,
            ..rec(0x1000)
        };
        assert!(r.record(refused).printed);
        assert_eq!(r.total(), 103);
        // Past RECENT distinct records the first is forgotten: printed again.
        for i in 0..RECENT as u64 {
            assert!(r.record(rec(0x10_0000 + i * 0x1000)).printed);
        }
        assert!(r.record(rec(0x1000)).printed);
    }

    std::thread_local! {
        static PRINTED: core::cell::RefCell<Vec<std::string::String>> =
            const { core::cell::RefCell::new(Vec::new()) };
    }

    fn capture(line: &Line) {
        PRINTED.with(|p| p.borrow_mut().push(line.to_string()));
    }

    fn pending(r: &mut AuditRing<64>) -> Vec<std::string::String> {
        let mut lines = Vec::new();
        r.take_pending(|l| lines.push(l.to_string()));
        lines
    }

    #[test]
    fn lines_wait_as_binary_until_the_console_prints_them() {
        let mut r = AuditRing::<64>::new();
        assert!(!r.has_pending());
        assert!(r.record(rec(0x1000)).printed);
        r.note(Note::PatchRefused {
            rip: 0x20_1000,
            why: "a byte outside every patch site",
            gpa: 0x1000,
        });
        // Repeats 1 and 2 print a count; 3 does not.
        for _ in 0..3 {
            assert!(!r.record(rec(0x1000)).printed);
        }
        assert!(r.has_pending());
        assert_eq!(
            r.queue.pop(),
            Some(Line::Record(AuditRecord {
                seq: 0,
                ..rec(0x1000)
            })),
            "the record itself, by value"
        );
        assert_eq!(
            pending(&mut r),
            [
                "okernel: patch: refused write at rip 0x201000: a byte outside every patch site at gpa 0x1000; old bytes restored",
                "okernel: audit #1 repeats #0 (1 repeat(s) so far)",
                "okernel: audit #2 repeats #0 (2 repeat(s) so far)",
            ]
        );
        assert!(!r.has_pending() && pending(&mut r).is_empty());
        // The record's line: the JSON the runners parse.
        r.record(rec(0x2000));
        assert_eq!(
            pending(&mut r),
            [
                "OKERNEL-AUDIT: {\"seq\":4,\"kind\":\"ept-violation\",\"ctx\":0,\"gpa\":\"0x2000\",\"gva\":\"0xffff800000001000\",\"access\":\"-W-\",\"allowed\":\"---\",\"rip\":\"0x201000\",\"cr3\":\"0x100000\",\"qual\":\"0x182\",\"action\":\"inject-#GP\"}"
            ]
        );
    }

    #[test]
    fn a_full_queue_prints_in_the_exit_and_loses_nothing() {
        let mut r = AuditRing::<64>::new();
        r.set_printer(capture);
        // Distinct records, the console never printing between them: the
        // 33rd finds the queue full and prints the 32 waiting lines.
        for i in 0..40 {
            assert!(r.record(rec(0x1000 * (i + 1))).printed);
            assert!(r.queue.len <= QUEUE);
        }
        assert_eq!(r.printed_in_exit(), QUEUE as u64);
        let printed = PRINTED.with(|p| p.borrow().clone());
        assert_eq!(printed.len(), QUEUE, "printed, not thrown away");
        for (i, l) in printed.iter().enumerate() {
            assert!(l.contains(&std::format!("\"seq\":{i},")), "{l}");
        }
        let lines = pending(&mut r);
        assert_eq!(lines.len(), 40 - QUEUE);
        assert!(
            lines[0].contains(&std::format!("\"seq\":{QUEUE},")),
            "{}",
            lines[0]
        );
        // Notes and repeats too.
        let mut r = AuditRing::<64>::new();
        r.record(rec(0x1000));
        for _ in 0..QUEUE {
            r.note(Note::Gated {
                from: 1,
                reason: "triple-fault",
                gate: 0x1000,
            });
        }
        assert_eq!((r.printed_in_exit(), r.queue.len), (QUEUE as u64, 1));
    }

    #[test]
    fn records_print_one_line() {
        let mut r = AuditRing::<2>::new();
        let x = r.push(rec(0x10_0000));
        assert_eq!(
            x.to_string(),
            "audit #0 ept-violation ctx=0 gpa=0x100000 gva=0xffff800000001000 access=-W- \
             allowed=--- rip=0x201000 cr3=0x100000 qual=0x182 action=inject-#GP"
        );
        let mut y = x;
        y.gva = None;
        assert!(y.to_string().contains("gva=-"));
    }
}
