//! What the Linux guest's `/init` checks from user space, as pure
//! functions over what the kernel shows (`/proc/cmdline`, `/proc/iomem`,
//! `/proc/cpuinfo`); `main.rs` gathers the inputs and prints the
//! `OKERNEL-CHECK` lines of the run-result protocol.

/// What the run must show, from `okernel.expect=` on the kernel command
/// line (the test harness puts it there; Linux ignores dotted parameters
/// of modules it does not have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Under the okernel monitor: VMX hidden, the signature visible, the
    /// monitor's memory neither RAM nor readable.
    Monitor,
    /// okernel's loader with `mode=direct` (no monitor): the negative
    /// control, where the monitor's memory is readable.
    Direct,
    /// No okernel at all (QEMU booting Linux itself): the baseline.
    Bare,
}

/// A physical address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// The value of `key=` on a kernel command line.
pub fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// `okernel.expect=` of `cmdline`.
pub fn expect(cmdline: &str) -> Result<Expect, String> {
    match param(cmdline, "okernel.expect") {
        Some("monitor") => Ok(Expect::Monitor),
        Some("direct") => Ok(Expect::Direct),
        Some("bare") => Ok(Expect::Bare),
        Some(other) => Err(format!(
            "okernel.expect={other} is not monitor, direct or bare"
        )),
        None => Err("no okernel.expect= on the kernel command line".into()),
    }
}

/// `okernel.workload=SECONDS`: how long the exit-count workload runs
/// (`cargo xtask bench linux`); none without it.
pub fn workload_seconds(cmdline: &str) -> Option<u64> {
    param(cmdline, "okernel.workload")?
        .parse()
        .ok()
        .filter(|s| *s > 0)
}

/// The monitor's exit counters as the client shows them in
/// `/proc/okernel-exits`: `total N`, then `REASON COUNT` lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExitCounts {
    /// All exits.
    pub total: u64,
    /// (basic exit reason, exits) for every reason with exits.
    pub by_reason: Vec<(u16, u64)>,
}

impl ExitCounts {
    /// Parses the file; `None` when it is not in that form.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let total = lines.next()?.strip_prefix("total ")?.parse().ok()?;
        let by_reason = lines
            .map(|l| {
                let (r, n) = l.split_once(' ')?;
                Some((r.parse().ok()?, n.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { total, by_reason })
    }

    /// The exits of `reason`.
    pub fn get(&self, reason: u16) -> u64 {
        self.by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// What happened between `before` and `self`, less `reads` VMCALL
    /// exits (the reads of the file themselves) of `vmcall`.
    pub fn since(&self, before: &Self, vmcall: u16, reads: u64) -> Self {
        let by_reason = self
            .by_reason
            .iter()
            .map(|&(r, n)| {
                let d = n.saturating_sub(before.get(r));
                (
                    r,
                    if r == vmcall {
                        d.saturating_sub(reads)
                    } else {
                        d
                    },
                )
            })
            .filter(|(_, n)| *n != 0)
            .collect();
        Self {
            total: self
                .total
                .saturating_sub(before.total)
                .saturating_sub(reads),
            by_reason,
        }
    }

    /// As a JSON object's members: `"total":N,"by_reason":{"R":N,...}`.
    pub fn json(&self) -> String {
        let reasons: Vec<String> = self
            .by_reason
            .iter()
            .map(|(r, n)| format!("\"{r}\":{n}"))
            .collect();
        format!(
            "\"total\":{},\"by_reason\":{{{}}}",
            self.total,
            reasons.join(",")
        )
    }
}

/// One audit record as the client shows it in `/proc/okernel-audit` (a
/// JSON line: `{"seq":N,"kind":K,"action":A,"ctx":C,"gpa":"0x..",
/// "gva":"0x..","access":X,...}`): the fields an attack row checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLine {
    /// Its sequence number.
    pub seq: u64,
    /// `okernel_abi::policy::AuditKind` as a number.
    pub kind: u32,
    /// The guest-physical address, or the CR number or MSR index.
    pub gpa: u64,
    /// The access bits (1 read, 2 write, 4 execute).
    pub access: u64,
}

impl AuditLine {
    /// Parses one line; `None` when a field is missing.
    pub fn parse(line: &str) -> Option<Self> {
        let field = |name: &str| -> Option<&str> {
            let key = format!("\"{name}\":");
            let rest = &line[line.find(&key)? + key.len()..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim_matches('"'))
        };
        Some(Self {
            seq: field("seq")?.parse().ok()?,
            kind: field("kind")?.parse().ok()?,
            gpa: hex(field("gpa")?)?,
            access: field("access")?.parse().ok()?,
        })
    }

    /// The records of `text` (the whole file) newer than `after`.
    pub fn newer(text: &str, after: Option<u64>) -> Vec<Self> {
        text.lines()
            .filter_map(Self::parse)
            .filter(|r| after.is_none_or(|a| r.seq > a))
            .collect()
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// `okernel.test_image=START-END` (hex, end exclusive): where the harness
/// says okernel's image was loaded.
pub fn test_image(cmdline: &str) -> Option<Range> {
    let (a, b) = param(cmdline, "okernel.test_image")?.split_once('-')?;
    let r = Range {
        start: hex(a)?,
        end: hex(b)?,
    };
    (r.start < r.end).then_some(r)
}

/// The top-level `System RAM` ranges of `/proc/iomem` (inclusive ends
/// there; exclusive here). Unreadable addresses (all zero, as an
/// unprivileged reader sees them) give an empty list.
pub fn system_ram(iomem: &str) -> Vec<Range> {
    iomem
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            let (range, name) = l.split_once(" : ")?;
            if name.trim() != "System RAM" {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let r = Range {
                start: hex(a)?,
                end: hex(b)? + 1,
            };
            (r.end > 1).then_some(r)
        })
        .collect()
}

/// The range of the `/proc/iomem` entry named `name` (at any depth, e.g.
/// `Kernel code`), rounded out to whole 4 KiB pages: what the client
/// module registers.
pub fn iomem_pages(iomem: &str, name: &str) -> Option<Range> {
    iomem.lines().find_map(|l| {
        let (range, n) = l.trim_start().split_once(" : ")?;
        if n.trim() != name {
            return None;
        }
        let (a, b) = range.split_once('-')?;
        let (start, last) = (hex(a)?, hex(b)?);
        let r = Range {
            start: start & !0xfff,
            end: (last + 1).next_multiple_of(0x1000),
        };
        (start < last).then_some(r)
    })
}

/// The address of symbol `name` in `/proc/kallsyms` text (`None`: absent,
/// or hidden as 0 by `kptr_restrict`).
pub fn kallsyms(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (addr, _kind, sym) = (f.next()?, f.next()?, f.next()?);
        (sym == name && f.next().is_none())
            .then(|| u64::from_str_radix(addr, 16).ok())
            .flatten()
            .filter(|&a| a != 0)
    })
}

/// The linear range `[start, end)` between two symbols of
/// `/proc/kallsyms` text.
fn symbol_range(kallsyms_text: &str, start: &str, end: &str) -> Option<Range> {
    let start = kallsyms(kallsyms_text, start)?;
    let end = kallsyms(kallsyms_text, end)?;
    (start < end).then_some(Range { start, end })
}

/// The linear range of the kernel's jump-label table
/// (`__start___jump_table`..`__stop___jump_table`) in `/proc/kallsyms`.
pub fn jump_table(kallsyms_text: &str) -> Option<Range> {
    symbol_range(kallsyms_text, "__start___jump_table", "__stop___jump_table")
}

/// The linear range of the kernel's inline static-call sites table
/// (`__start_static_call_sites`..`__stop_static_call_sites`, in
/// ro-after-init data) in `/proc/kallsyms`.
pub fn static_call_sites(kallsyms_text: &str) -> Option<Range> {
    symbol_range(
        kallsyms_text,
        "__start_static_call_sites",
        "__stop_static_call_sites",
    )
}

/// The linear range of the kernel's static-call trampolines
/// (`.static_call.text`: `__static_call_text_start`..
/// `__static_call_text_end`, in text) in `/proc/kallsyms`.
pub fn static_call_tramps(kallsyms_text: &str) -> Option<Range> {
    symbol_range(
        kallsyms_text,
        "__static_call_text_start",
        "__static_call_text_end",
    )
}

/// One entry of `__static_call_sites` (`{s32 addr; s32 key;}`, each
/// relative to its own field's address), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticCallSite {
    /// The 5-byte site in text.
    pub addr: u64,
    /// The `struct static_call_key` (`__SCK__<name>`), flags cleared.
    pub key: u64,
    /// Key bit 0: a tail call (`jmp`), not a `call`.
    pub tail: bool,
    /// Key bit 1: the site lies in init text (freed after boot).
    pub init: bool,
}

impl StaticCallSite {
    /// Decodes the entry at `entry` from its first 8 bytes.
    pub fn decode(entry: u64, bytes: &[u8]) -> Option<Self> {
        let field = |i: usize| -> Option<i64> {
            Some(i64::from(i32::from_le_bytes(
                bytes.get(i..i + 4)?.try_into().ok()?,
            )))
        };
        let addr = entry.wrapping_add_signed(field(0)?);
        let key = (entry + 4).wrapping_add_signed(field(4)?);
        Some(Self {
            addr,
            key: key & !3,
            tail: key & 1 != 0,
            init: key & 2 != 0,
        })
    }
}

/// The sites of the static call whose key is at `key`, at most `max`,
/// decoded from the `__static_call_sites` table `table` with `read` (the
/// 8 bytes at an address). The kernel sorts the table by key at boot
/// (`static_call_sort_entries`) and stores a vmlinux key's first site in
/// the key itself (`key->sites`, bit 0 set): `hint` is that entry,
/// trusted only where it decodes to `key`; otherwise a binary search of
/// the sorted table finds the first.
pub fn static_call_sites_of(
    table: Range,
    key: u64,
    hint: Option<u64>,
    max: usize,
    read: &mut dyn FnMut(u64) -> Option<[u8; 8]>,
) -> Result<Vec<StaticCallSite>, String> {
    let count = (table.end - table.start) / 8;
    let mut entry = |i: u64| -> Result<StaticCallSite, String> {
        let at = table.start + 8 * i;
        read(at)
            .and_then(|b| StaticCallSite::decode(at, &b))
            .ok_or_else(|| format!("cannot read the static-call site entry at {at:#x}"))
    };
    let hinted = hint
        .filter(|h| (table.start..table.end).contains(h) && (h - table.start).is_multiple_of(8))
        .map(|h| (h - table.start) / 8);
    let first = match hinted {
        Some(i) if entry(i)?.key == key => i,
        _ => {
            let (mut lo, mut hi) = (0, count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if entry(mid)?.key < key {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        }
    };
    let mut sites = Vec::new();
    for i in first..count.min(first + max as u64) {
        let s = entry(i)?;
        if s.key != key {
            break;
        }
        sites.push(s);
    }
    Ok(sites)
}

/// The first site a vmlinux static-call key names in its own 16 bytes
/// (`{void *func; union {unsigned long type; struct static_call_site
/// *sites; ...}}`: bit 0 of the second word set = a sites pointer).
pub fn static_call_key_sites(key: &[u8]) -> Option<u64> {
    let word = u64::from_le_bytes(key.get(8..16)?.try_into().ok()?);
    (word & 1 != 0).then_some(word & !1)
}

/// The kernel's `.bss` (`__bss_start`..`__bss_stop`) in `/proc/kallsyms`:
/// writable kernel data, more than 16 MiB of it in Debian's kernel.
pub fn bss(kallsyms_text: &str) -> Option<Range> {
    symbol_range(kallsyms_text, "__bss_start", "__bss_stop")
}

/// A redirection of the `call rel32` or `jmp rel32` (`e8`/`e9`) at `at`,
/// whose first 8 bytes are `old`, into `data`: the 8 bytes to store and
/// the new target. The target is the old one plus or minus a multiple of
/// 16 MiB (the nearest that lies in `data`), so that only the rel32's top
/// byte changes: a write made a byte at a time (the vulnerability's)
/// passes through no other form than the final one. (Were the low bytes
/// to change first, each intermediate form would be a branch somewhere
/// into text.) `None`: not a call or jump, or no such target.
pub fn redirect_rel32(at: u64, old: &[u8], data: Range) -> Option<(u64, u64)> {
    let mut b: [u8; 8] = old.get(..8)?.try_into().ok()?;
    if b[0] != 0xe8 && b[0] != 0xe9 {
        return None;
    }
    let rel = i64::from(i32::from_le_bytes(b[1..5].try_into().ok()?));
    let next = at.wrapping_add(5);
    let (rel, target) = (1..=8i64)
        .flat_map(|k| [k, -k])
        .filter_map(|k| i32::try_from(rel + (k << 24)).ok())
        .map(|r| (r, next.wrapping_add_signed(i64::from(r))))
        .find(|&(_, t)| data.start <= t && t < data.end)?;
    b[1..5].copy_from_slice(&rel.to_le_bytes());
    Some((u64::from_le_bytes(b), target))
}

/// A gadget's answer `old O new N` (hex): the value before and the value
/// read back after the write (the gadget has restored the old one since).
pub fn old_new(answer: &str) -> Option<(u64, u64)> {
    let mut f = answer.split_whitespace();
    match (f.next()?, f.next()?, f.next()?, f.next()?, f.next()) {
        ("old", o, "new", n, None) => Some((hex(o)?, hex(n)?)),
        _ => None,
    }
}

/// Bytes of a hex dump (`0a1b...`); `None` if it is not one.
pub fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The patch site of the `__jump_table` entry at `entry` whose first 16
/// bytes are `bytes` (`{s32 code; s32 target; long key}`, each offset
/// relative to its own field's address).
pub fn jump_site(entry: u64, bytes: &[u8]) -> Option<u64> {
    let code = i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    Some(entry.wrapping_add_signed(i64::from(code)))
}

/// An illegal form for a jump-label site whose first 8 bytes are `site`:
/// `jmp .+2` (`eb 00`) over its first two bytes, the rest kept. Neither
/// the NOP nor a jump to the entry's target (which is never the next
/// instruction), and every changed byte lies in the site (2 or 5 bytes).
pub fn illegal_jump_form(site: &[u8]) -> Option<u64> {
    let mut b: [u8; 8] = site.get(..8)?.try_into().ok()?;
    b[0] = 0xeb;
    b[1] = 0x00;
    Some(u64::from_le_bytes(b))
}

/// Whether `/proc/cpuinfo` lists the `vmx` flag for any CPU.
pub fn cpuinfo_has_vmx(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx"))
}

/// One check line's JSON (the run-result protocol's `OKERNEL-CHECK`).
pub fn check_json(check: &str, invariant: u8, ok: bool, observed: &str) -> String {
    let escaped: String = observed
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect();
    format!(
        "{{\"check\":\"{check}\",\"invariant\":{invariant},\"ok\":{ok},\"observed\":\"{escaped}\"}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_parse_and_filter() {
        let text = "{\"seq\":7,\"kind\":1,\"action\":2,\"ctx\":0,\"gpa\":\"0x1a2b000\",\"gva\":\"0xffffffff81000000\",\"access\":2,\"rip\":\"0x1\",\"qualification\":\"0x2\"}\n\
{\"seq\":8,\"kind\":3,\"action\":2,\"ctx\":0,\"gpa\":\"0xc0000082\",\"gva\":\"0x0\",\"access\":2,\"rip\":\"0x1\",\"qualification\":\"0x0\"}\n";
        let all = AuditLine::newer(text, None);
        assert_eq!(
            all[0],
            AuditLine {
                seq: 7,
                kind: 1,
                gpa: 0x1a2b000,
                access: 2
            }
        );
        assert_eq!(AuditLine::newer(text, Some(7)).len(), 1);
        assert_eq!(AuditLine::newer(text, Some(8)).len(), 0);
        assert_eq!(AuditLine::parse("{\"seq\":1}"), None);
    }

    #[test]
    fn exit_counts_parse_and_subtract_the_reads() {
        assert_eq!(workload_seconds("a okernel.workload=10 b"), Some(10));
        assert_eq!(workload_seconds("okernel.workload=0"), None);
        assert_eq!(workload_seconds("okernel.workload=x"), None);
        assert_eq!(workload_seconds("quiet"), None);
        let before = ExitCounts::parse("total 1100\n10 1000\n18 100\n").unwrap();
        let after = ExitCounts::parse("total 1500\n10 1200\n18 280\n31 20\n").unwrap();
        let d = after.since(&before, 18, 80);
        assert_eq!(d.total, 320);
        assert_eq!(d.by_reason, [(10, 200), (18, 100), (31, 20)]);
        assert_eq!(
            d.json(),
            "\"total\":320,\"by_reason\":{\"10\":200,\"18\":100,\"31\":20}"
        );
        assert_eq!(ExitCounts::parse(""), None);
        assert_eq!(ExitCounts::parse("total x\n"), None);
        assert_eq!(ExitCounts::parse("total 1\n10\n"), None);
    }

    const IOMEM: &str = "00000000-00000fff : Reserved
00001000-0009efff : System RAM
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-001fffff : Reserved
00200000-1ffeffff : System RAM
  01000000-01e00000 : Kernel code
";

    #[test]
    fn finds_the_jump_table_in_kallsyms() {
        let k = "ffffffff82439090 D __start___jump_table\nffffffff82462dd0 D __stop___jump_table\nffffffff81000000 T _stext\n";
        assert_eq!(
            jump_table(k),
            Some(Range {
                start: 0xffff_ffff_8243_9090,
                end: 0xffff_ffff_8246_2dd0
            })
        );
        // kptr_restrict hides addresses as zeros; a module symbol has a
        // fourth field.
        let hidden =
            "0000000000000000 D __start___jump_table\n0000000000000000 D __stop___jump_table\n";
        assert_eq!(jump_table(hidden), None);
        assert_eq!(kallsyms("ffffffffc0001000 t foo [okernel]\n", "foo"), None);
        assert_eq!(jump_table(""), None);
    }

    #[test]
    fn finds_the_static_call_tables_in_kallsyms() {
        let k = "ffffffff82b3a1d8 D __start_static_call_sites\n\
ffffffff82b4e4a0 D __stop_static_call_sites\n\
ffffffff81e00000 T __static_call_text_start\n\
ffffffff81e00520 T __static_call_text_end\n";
        assert_eq!(
            static_call_sites(k),
            Some(Range {
                start: 0xffff_ffff_82b3_a1d8,
                end: 0xffff_ffff_82b4_e4a0
            })
        );
        assert_eq!(
            static_call_tramps(k),
            Some(Range {
                start: 0xffff_ffff_81e0_0000,
                end: 0xffff_ffff_81e0_0520
            })
        );
        assert_eq!(
            static_call_sites(
                "0000000000000000 D __start_static_call_sites\n0000000000000000 D __stop_static_call_sites\n"
            ),
            None
        );
        assert_eq!(static_call_tramps(""), None);
    }

    /// A `__static_call_sites` entry at `at` for `site` and `key` with
    /// flag bits `flags`.
    fn sc_entry(at: u64, site: u64, key: u64, flags: u64) -> [u8; 8] {
        let a = site.wrapping_sub(at) as i32;
        let k = (key | flags).wrapping_sub(at + 4) as i32;
        let mut b = [0; 8];
        b[..4].copy_from_slice(&a.to_le_bytes());
        b[4..].copy_from_slice(&k.to_le_bytes());
        b
    }

    #[test]
    fn decodes_static_call_sites_and_finds_a_keys_sites() {
        let start = 0xffff_ffff_82b3_a1d8u64;
        let e = sc_entry(start, 0xffff_ffff_8100_1234, 0xffff_ffff_8260_0040, 1);
        assert_eq!(
            StaticCallSite::decode(start, &e),
            Some(StaticCallSite {
                addr: 0xffff_ffff_8100_1234,
                key: 0xffff_ffff_8260_0040,
                tail: true,
                init: false
            })
        );
        let init = sc_entry(start, 0xffff_ffff_8300_0000, 0xffff_ffff_8260_0040, 2);
        assert!(StaticCallSite::decode(start, &init).unwrap().init);
        assert_eq!(StaticCallSite::decode(start, &[0; 4]), None);
        // A table sorted by key, as the kernel leaves it: keys 0x10,
        // 0x20 (three sites), 0x30, at 0xffffffff82600000 + key.
        let key = |k: u64| 0xffff_ffff_8260_0000 + k;
        let keys = [0x10, 0x20, 0x20, 0x20, 0x30];
        let table = Range {
            start,
            end: start + 8 * keys.len() as u64,
        };
        let mut reads = 0;
        let mut read = |at: u64| {
            reads += 1;
            let i = usize::try_from((at - start) / 8).ok()?;
            Some(sc_entry(
                at,
                0xffff_ffff_8100_0000 + i as u64 * 0x100,
                key(*keys.get(i)?),
                0,
            ))
        };
        let found = static_call_sites_of(table, key(0x20), None, 8, &mut read).unwrap();
        assert_eq!(
            found.iter().map(|s| s.addr).collect::<Vec<_>>(),
            [
                0xffff_ffff_8100_0100,
                0xffff_ffff_8100_0200,
                0xffff_ffff_8100_0300
            ]
        );
        // The key's own pointer is used where it decodes to the key, a
        // wrong one is not (the search finds the first anyway).
        let hinted = static_call_sites_of(table, key(0x20), Some(start + 8), 1, &mut read);
        assert_eq!(hinted.unwrap()[0].addr, 0xffff_ffff_8100_0100);
        let wrong = static_call_sites_of(table, key(0x20), Some(start + 32), 1, &mut read);
        assert_eq!(wrong.unwrap()[0].addr, 0xffff_ffff_8100_0100);
        assert_eq!(
            static_call_sites_of(table, key(0x30), None, 8, &mut read)
                .unwrap()
                .len(),
            1
        );
        assert!(
            static_call_sites_of(table, key(0x28), None, 8, &mut read)
                .unwrap()
                .is_empty()
        );
        assert!(
            static_call_sites_of(table, key(0x40), None, 8, &mut read)
                .unwrap()
                .is_empty()
        );
        assert!(static_call_sites_of(table, key(0x20), None, 8, &mut |_| None).is_err());
        // The key: `func`, then the sites pointer with bit 0 set.
        let mut k = [0u8; 16];
        k[8..].copy_from_slice(&(start + 8 + 1).to_le_bytes());
        assert_eq!(static_call_key_sites(&k), Some(start + 8));
        k[8] &= !1;
        assert_eq!(static_call_key_sites(&k), None, "a module list, not sites");
    }

    fn bss_range() -> Range {
        Range {
            start: 0xffff_ffff_8331_0000,
            end: 0xffff_ffff_8440_0000,
        }
    }

    #[test]
    fn forms_rel32_redirections_and_reads_the_preemption_model() {
        // A trampoline at 0xffffffff81e000e0 jumping to 0xffffffff812603e0;
        // .bss from 0xffffffff83310000 to 0xffffffff84400000.
        let at = 0xffff_ffff_81e0_00e0u64;
        let tramp = [0xe9, 0xfb, 0x02, 0x46, 0xff, 0x0f, 0xb9, 0xcc];
        let data = bss_range();
        // + 48 MiB: only the rel32's top byte changes.
        assert_eq!(
            redirect_rel32(at, &tramp, data).map(|(v, t)| (v.to_le_bytes(), t)),
            Some((
                [0xe9, 0xfb, 0x02, 0x46, 0x02, 0x0f, 0xb9, 0xcc],
                0xffff_ffff_8426_03e0
            ))
        );
        // The nearest such target: -16 MiB where that lies in the range.
        let below = Range {
            start: 0xffff_ffff_8000_0000,
            end: 0xffff_ffff_8100_0000,
        };
        assert_eq!(
            redirect_rel32(at, &tramp, below).map(|(_, t)| t),
            Some(0xffff_ffff_8026_03e0)
        );
        // A call keeps its opcode.
        let call = [0xe8, 0x00, 0x01, 0x00, 0x00, 0x90, 0x90, 0x90];
        assert_eq!(
            redirect_rel32(0xffff_ffff_8100_0000, &call, data)
                .map(|(v, _)| v.to_le_bytes()[..5].to_vec()),
            Some(vec![0xe8, 0x00, 0x01, 0x00, 0x03])
        );
        // Not a call or jump; no target in reach; too short.
        let ret = [0xc3, 0xcc, 0xcc, 0xcc, 0xcc, 0x0f, 0xb9, 0xcc];
        assert_eq!(redirect_rel32(at, &ret, data), None);
        let tiny = Range {
            start: 0xffff_ffff_8400_0000,
            end: 0xffff_ffff_8400_1000,
        };
        assert_eq!(redirect_rel32(at, &tramp, tiny), None);
        assert_eq!(redirect_rel32(at, &tramp[..5], data), None);
        let k = "ffffffff83310000 B __bss_start\nffffffff84400000 B __bss_stop\n";
        assert_eq!(bss(k), Some(bss_range()));
    }

    #[test]
    fn decodes_gadget_answers_and_jump_entries() {
        assert_eq!(
            old_new("old 80050033 new 80040033"),
            Some((0x8005_0033, 0x8004_0033))
        );
        assert_eq!(old_new("old 1 new"), None);
        assert_eq!(old_new("ok"), None);
        assert_eq!(hex_bytes("0a1B"), Some(vec![0x0a, 0x1b]));
        assert_eq!(hex_bytes("0a1"), None);
        assert_eq!(hex_bytes("zz"), None);
        // code = -0x100 from the entry, target and key after it.
        let entry = 0xffff_ffff_8243_9090;
        let mut bytes = (-0x100i32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 12]);
        assert_eq!(jump_site(entry, &bytes), Some(entry - 0x100));
        assert_eq!(jump_site(entry, &[1, 2]), None);
        let nop5 = [0x0f, 0x1f, 0x44, 0x00, 0x00, 0x90, 0x90, 0x90];
        assert_eq!(
            illegal_jump_form(&nop5).map(u64::to_le_bytes),
            Some([0xeb, 0x00, 0x44, 0x00, 0x00, 0x90, 0x90, 0x90])
        );
    }

    #[test]
    fn reads_the_command_line() {
        let line =
            "console=ttyS0 quiet okernel.expect=monitor okernel.test_image=0x100000-0x180000";
        assert_eq!(expect(line), Ok(Expect::Monitor));
        assert_eq!(
            test_image(line),
            Some(Range {
                start: 0x10_0000,
                end: 0x18_0000
            })
        );
        assert!(expect("quiet").is_err());
        assert!(
            expect("okernel.expect=maybe")
                .unwrap_err()
                .contains("maybe")
        );
        assert_eq!(test_image("okernel.test_image=0x2000-0x1000"), None);
        assert_eq!(param("aokernel.expect=x", "okernel.expect"), None);
    }

    #[test]
    fn finds_system_ram_at_the_top_level_only() {
        let ram = system_ram(IOMEM);
        assert_eq!(
            ram,
            [
                Range {
                    start: 0x1000,
                    end: 0x9_f000
                },
                Range {
                    start: 0x20_0000,
                    end: 0x1fff_0000
                }
            ]
        );
        let monitor = Range {
            start: 0x10_0000,
            end: 0x1f_0000,
        };
        assert!(!ram.iter().any(|r| r.overlaps(&monitor)));
        assert!(ram.iter().any(|r| r.overlaps(&Range {
            start: 0x1f_f000,
            end: 0x20_1000
        })));
        assert!(system_ram("00000000-00000000 : System RAM\n").is_empty());
    }

    #[test]
    fn kernel_ranges_are_rounded_to_pages() {
        assert_eq!(
            iomem_pages(IOMEM, "Kernel code"),
            Some(Range {
                start: 0x100_0000,
                end: 0x1e0_1000
            })
        );
        assert_eq!(iomem_pages(IOMEM, "Kernel rodata"), None);
        assert_eq!(
            iomem_pages("00000000-00000000 : Kernel code\n", "Kernel code"),
            None,
            "zeroed addresses (no privilege) are no range"
        );
    }

    #[test]
    fn cpuinfo_flags_and_json() {
        assert!(cpuinfo_has_vmx("flags\t\t: fpu vme vmx sse\n"));
        assert!(!cpuinfo_has_vmx(
            "flags\t\t: fpu vme svm\nvmx flags\t: ept\n"
        ));
        assert_eq!(
            check_json("a", 1, true, "x \"y\"\n"),
            "{\"check\":\"a\",\"invariant\":1,\"ok\":true,\"observed\":\"x \\\"y\\\" \"}"
        );
    }
}
