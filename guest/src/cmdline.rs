//! The guest's command line (the module string): `scenario=NAME`,
//! `protect=on|off` (whether the demo kernel registers and locks its
//! regions with okernel; `off` is the negative-control boot) and
//! `transport=com2|mailbox` (how `scenario=fuzz` gets its test cases),
//! `shootdown=on|off` (`scenario=smp`: whether the monitor waits for the
//! other processors after a lock; `off` names the planted-defect build
//! of the race row's negative control, `cargo xtask platform`),
//! `contexts=per-cpu|shared` (`scenario=smp`: `shared` names the
//! planted-defect build of the view-switch row's negative control),
//! `aps=parked|run` (`scenario=fuzz`: whether another processor runs the
//! guest while the executor runs its cases).

use core::fmt;

/// What the guest does once booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Print the banner and the hand-off, check it, report pass.
    Boot,
    /// Panic on purpose (tests the panic path of every runner).
    Panic,
    /// Halt forever with interrupts off (tests runner timeouts).
    Hang,
    /// Time exit round trips against a plain loop.
    Bench,
    /// Boot the demo container-host kernel and run the attack suite.
    Attacks,
    /// Boot the demo container-host kernel and run the persistent fuzz
    /// executor: test cases from the host, oracles after each.
    Fuzz,
    /// On two or more processors: start another processor with
    /// INIT-SIPI-SIPI, which okernel must prevent (`smp.rs`).
    Smp,
    /// Put the machine to sleep through ACPI with a waking vector of the
    /// guest's, which okernel must refuse (`sleep.rs`).
    Sleep,
    /// Have the floppy controller DMA a sector over a page okernel
    /// locked, which okernel must refuse (`dma.rs`).
    Dma,
    /// Write lines that start with the monitor's console mark, which
    /// okernel must drop (`forge.rs`).
    Forge,
    /// Open SMRAM, put a handler there and raise an SMI, which okernel
    /// must prevent (`smm.rs`).
    Smm,
    /// Move a PCI device's memory BAR over a page okernel locked, which
    /// okernel must refuse (`bar.rs`).
    Bar,
}

/// How `scenario=fuzz` exchanges cases and results with the host
/// (`okernel_abi::fuzz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Frames over the second UART (Bochs).
    Com2,
    /// A mailbox in guest RAM and a doorbell port (the KVM harness).
    Mailbox,
}

impl Scenario {
    /// Every scenario with its name.
    pub const ALL: [(&'static str, Scenario); 12] = [
        ("boot", Scenario::Boot),
        ("panic", Scenario::Panic),
        ("hang", Scenario::Hang),
        ("bench", Scenario::Bench),
        ("attacks", Scenario::Attacks),
        ("fuzz", Scenario::Fuzz),
        ("smp", Scenario::Smp),
        ("sleep", Scenario::Sleep),
        ("dma", Scenario::Dma),
        ("forge", Scenario::Forge),
        ("smm", Scenario::Smm),
        ("bar", Scenario::Bar),
    ];
}

/// The guest's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The scenario to run.
    pub scenario: Scenario,
    /// Whether the demo kernel registers and locks its regions with the
    /// monitor (`protect=on`, the default) or skips every registration
    /// and lock (`protect=off`: the negative-control boot).
    pub protect: bool,
    /// The fuzz transport (`transport=`, default `com2`).
    pub transport: Transport,
    /// Whether the monitor has its shootdown (`shootdown=on`, the
    /// default) or is the `planted-no-shootdown` build (`off`), where the
    /// SMP race row must see a write land after the lock returned.
    pub shootdown: bool,
    /// Whether the monitor keeps each processor's context its own
    /// (`contexts=per-cpu`, the default) or is the
    /// `planted-shared-context` build (`shared`), where the SMP
    /// view-switch row must see a write land from a processor that stayed
    /// in the context the BSP left.
    pub per_cpu_context: bool,
    /// Whether `scenario=fuzz` starts another processor that runs the
    /// guest beside the executor (`aps=run`; default `parked`: the other
    /// processors wait for a SIPI that never comes).
    pub run_aps: bool,
}

/// A planted-defect build of the monitor the SMP scenario runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// `planted-no-shootdown`: the race row must succeed.
    NoShootdown,
    /// `planted-shared-context`: the view-switch row must succeed.
    SharedContext,
}

/// Why the guest refused its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// An option the guest does not know.
    Unknown(&'a str),
    /// A scenario the guest does not have.
    UnknownScenario(&'a str),
    /// `protect=` with a value other than `on` or `off`.
    BadProtect(&'a str),
    /// `transport=` with a value other than `com2` or `mailbox`.
    BadTransport(&'a str),
    /// `shootdown=` with a value other than `on` or `off`.
    BadShootdown(&'a str),
    /// `contexts=` with a value other than `per-cpu` or `shared`.
    BadContexts(&'a str),
    /// `aps=` with a value other than `parked` or `run`.
    BadAps(&'a str),
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::Unknown(o) => write!(f, "guest: unknown command-line option `{o}`"),
            CmdlineError::UnknownScenario(s) => {
                write!(f, "guest: unknown scenario `{s}` (have:")?;
                for (name, _) in Scenario::ALL {
                    write!(f, " {name}")?;
                }
                write!(f, ")")
            }
            CmdlineError::BadProtect(v) => {
                write!(f, "guest: `protect={v}`: expected `on` or `off`")
            }
            CmdlineError::BadTransport(v) => {
                write!(f, "guest: `transport={v}`: expected `com2` or `mailbox`")
            }
            CmdlineError::BadShootdown(v) => {
                write!(f, "guest: `shootdown={v}`: expected `on` or `off`")
            }
            CmdlineError::BadContexts(v) => {
                write!(f, "guest: `contexts={v}`: expected `per-cpu` or `shared`")
            }
            CmdlineError::BadAps(v) => {
                write!(f, "guest: `aps={v}`: expected `parked` or `run`")
            }
        }
    }
}

impl Options {
    /// The planted defect `shootdown=off` or `contexts=shared` names (the
    /// SMP rows' negative controls), if any; a build has one defect, so
    /// `shootdown=off` wins if both are given.
    pub fn planted(&self) -> Option<Planted> {
        match (self.shootdown, self.per_cpu_context) {
            (false, _) => Some(Planted::NoShootdown),
            (true, false) => Some(Planted::SharedContext),
            (true, true) => None,
        }
    }

    /// Parses the guest command line; empty means `scenario=boot
    /// protect=on`.
    pub fn parse(line: &str) -> Result<Self, CmdlineError<'_>> {
        let mut opts = Options {
            scenario: Scenario::Boot,
            protect: true,
            transport: Transport::Com2,
            shootdown: true,
            per_cpu_context: true,
            run_aps: false,
        };
        for word in line.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("scenario", name)) => {
                    opts.scenario = Scenario::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|&(_, s)| s)
                        .ok_or(CmdlineError::UnknownScenario(name))?;
                }
                Some(("protect", "on")) => opts.protect = true,
                Some(("protect", "off")) => opts.protect = false,
                Some(("protect", v)) => return Err(CmdlineError::BadProtect(v)),
                Some(("transport", "com2")) => opts.transport = Transport::Com2,
                Some(("transport", "mailbox")) => opts.transport = Transport::Mailbox,
                Some(("transport", v)) => return Err(CmdlineError::BadTransport(v)),
                Some(("shootdown", "on")) => opts.shootdown = true,
                Some(("shootdown", "off")) => opts.shootdown = false,
                Some(("shootdown", v)) => return Err(CmdlineError::BadShootdown(v)),
                Some(("contexts", "per-cpu")) => opts.per_cpu_context = true,
                Some(("contexts", "shared")) => opts.per_cpu_context = false,
                Some(("contexts", v)) => return Err(CmdlineError::BadContexts(v)),
                Some(("aps", "parked")) => opts.run_aps = false,
                Some(("aps", "run")) => opts.run_aps = true,
                Some(("aps", v)) => return Err(CmdlineError::BadAps(v)),
                _ => return Err(CmdlineError::Unknown(word)),
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scenarios_and_refuses_the_unknown() {
        assert_eq!(Options::parse("").unwrap().scenario, Scenario::Boot);
        assert_eq!(
            Options::parse("scenario=hang").unwrap().scenario,
            Scenario::Hang
        );
        assert_eq!(
            Options::parse("scenario=x"),
            Err(CmdlineError::UnknownScenario("x"))
        );
        assert_eq!(Options::parse("fast"), Err(CmdlineError::Unknown("fast")));
        assert_eq!(
            CmdlineError::UnknownScenario("x").to_string(),
            "guest: unknown scenario `x` (have: boot panic hang bench attacks fuzz smp sleep dma forge smm bar)"
        );
    }

    #[test]
    fn parses_protect() {
        let o = Options::parse("scenario=attacks").unwrap();
        assert_eq!((o.scenario, o.protect), (Scenario::Attacks, true));
        let o = Options::parse("protect=off scenario=attacks").unwrap();
        assert_eq!((o.scenario, o.protect), (Scenario::Attacks, false));
        assert!(Options::parse("protect=on").unwrap().protect);
        assert_eq!(
            Options::parse("protect=maybe"),
            Err(CmdlineError::BadProtect("maybe"))
        );
        assert_eq!(
            CmdlineError::BadProtect("1").to_string(),
            "guest: `protect=1`: expected `on` or `off`"
        );
    }

    #[test]
    fn parses_shootdown() {
        assert!(Options::parse("scenario=smp").unwrap().shootdown);
        assert!(
            !Options::parse("scenario=smp shootdown=off")
                .unwrap()
                .shootdown
        );
        assert_eq!(
            Options::parse("shootdown=no"),
            Err(CmdlineError::BadShootdown("no"))
        );
    }

    #[test]
    fn parses_contexts() {
        assert!(Options::parse("scenario=smp").unwrap().per_cpu_context);
        assert!(
            !Options::parse("scenario=smp contexts=shared")
                .unwrap()
                .per_cpu_context
        );
        assert_eq!(
            Options::parse("contexts=one"),
            Err(CmdlineError::BadContexts("one"))
        );
    }

    #[test]
    fn parses_aps() {
        assert!(!Options::parse("scenario=fuzz").unwrap().run_aps);
        assert!(Options::parse("scenario=fuzz aps=run").unwrap().run_aps);
        assert_eq!(Options::parse("aps=all"), Err(CmdlineError::BadAps("all")));
    }

    #[test]
    fn parses_transport() {
        let o = Options::parse("scenario=fuzz").unwrap();
        assert_eq!((o.scenario, o.transport), (Scenario::Fuzz, Transport::Com2));
        let o = Options::parse("scenario=fuzz transport=mailbox").unwrap();
        assert_eq!(o.transport, Transport::Mailbox);
        assert_eq!(
            Options::parse("transport=usb"),
            Err(CmdlineError::BadTransport("usb"))
        );
        assert_eq!(
            CmdlineError::BadTransport("usb").to_string(),
            "guest: `transport=usb`: expected `com2` or `mailbox`"
        );
    }
}
