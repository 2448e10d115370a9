//! The guest's command line (the module string): `scenario=NAME`.

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
}

impl Scenario {
    /// Every scenario with its name.
    pub const ALL: [(&'static str, Scenario); 4] = [
        ("boot", Scenario::Boot),
        ("panic", Scenario::Panic),
        ("hang", Scenario::Hang),
        ("bench", Scenario::Bench),
    ];
}

/// The guest's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The scenario to run.
    pub scenario: Scenario,
}

/// Why the guest refused its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// An option the guest does not know.
    Unknown(&'a str),
    /// A scenario the guest does not have.
    UnknownScenario(&'a str),
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
        }
    }
}

impl Options {
    /// Parses the guest command line; empty means `scenario=boot`.
    pub fn parse(line: &str) -> Result<Self, CmdlineError<'_>> {
        let mut opts = Options {
            scenario: Scenario::Boot,
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
            "guest: unknown scenario `x` (have: boot panic hang bench)"
        );
    }
}
