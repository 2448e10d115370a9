//! The image's own command line (the multiboot2 `cmdline`, PVH
//! `cmdline_paddr`): space-separated `key=value` options.
//!
//! | option     | values                                   | default |
//! |------------|------------------------------------------|---------|
//! | `log=`     | `off error warn info debug trace`        | `info`  |
//! | `mode=`    | `vmx` (under the monitor), `direct` (no monitor: the guest runs unprotected in root mode — boot-path debugging and negative controls) | `vmx` |
//!
//! Everything after a lone `--` is the guest's command line; it is used
//! when the guest module carries none (QEMU's PVH `-initrd` module has no
//! string of its own). Anything else is refused with [`CmdlineError`], so a typo never goes
//! unnoticed.

use core::fmt;
use log::LevelFilter;

/// The parsed options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options<'a> {
    /// The console log level.
    pub log: LevelFilter,
    /// How the guest is entered.
    pub mode: Mode,
    /// The guest command line given after `--` (empty when none).
    pub guest_args: &'a str,
}

/// How the loader enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In VMX non-root mode under the okernel monitor (the default).
    Vmx,
    /// Directly, in root mode, with no monitor: nothing is protected.
    Direct,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            log: LevelFilter::Info,
            mode: Mode::Vmx,
            guest_args: "",
        }
    }
}

/// Why a command line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// An option okernel does not know.
    Unknown(&'a str),
    /// A known option with a value it does not accept.
    BadValue {
        /// The option.
        option: &'a str,
        /// The value given.
        value: &'a str,
        /// The values accepted.
        expected: &'static str,
    },
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::Unknown(o) => write!(f, "unknown command-line option `{o}`"),
            CmdlineError::BadValue {
                option,
                value,
                expected,
            } => write!(
                f,
                "command-line option `{option}`: bad value `{value}` (expected {expected})"
            ),
        }
    }
}

impl<'a> Options<'a> {
    /// Parses a command line. An empty line gives the defaults.
    pub fn parse(line: &'a str) -> Result<Self, CmdlineError<'a>> {
        let mut opts = Options::default();
        let (own, guest) = split_guest_args(line);
        opts.guest_args = guest;
        for word in own.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "log" => {
                    opts.log = match value {
                        "off" => LevelFilter::Off,
                        "error" => LevelFilter::Error,
                        "warn" => LevelFilter::Warn,
                        "info" => LevelFilter::Info,
                        "debug" => LevelFilter::Debug,
                        "trace" => LevelFilter::Trace,
                        _ => {
                            return Err(CmdlineError::BadValue {
                                option: key,
                                value,
                                expected: "off, error, warn, info, debug or trace",
                            });
                        }
                    }
                }
                "mode" => {
                    opts.mode = match value {
                        "vmx" => Mode::Vmx,
                        "direct" => Mode::Direct,
                        _ => {
                            return Err(CmdlineError::BadValue {
                                option: key,
                                value,
                                expected: "vmx or direct",
                            });
                        }
                    }
                }
                _ => return Err(CmdlineError::Unknown(word)),
            }
        }
        Ok(opts)
    }
}

/// Splits `line` at the first lone `--` word.
fn split_guest_args(line: &str) -> (&str, &str) {
    for word in line.split_ascii_whitespace() {
        if word == "--" {
            // `word` is a subslice of `line`: find where it starts.
            let start = word.as_ptr() as usize - line.as_ptr() as usize;
            return (&line[..start], line[start + 2..].trim());
        }
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_levels() {
        assert_eq!(Options::parse("").unwrap(), Options::default());
        assert_eq!(
            Options::parse("  log=trace ").unwrap().log,
            LevelFilter::Trace
        );
        assert_eq!(Options::parse("log=off").unwrap().log, LevelFilter::Off);
    }

    #[test]
    fn refuses_unknown_options_and_bad_values() {
        assert_eq!(
            Options::parse("log=info verbose"),
            Err(CmdlineError::Unknown("verbose"))
        );
        let e = Options::parse("log=loud").unwrap_err();
        assert!(matches!(
            e,
            CmdlineError::BadValue {
                option: "log",
                value: "loud",
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "command-line option `log`: bad value `loud` (expected off, error, warn, info, debug or trace)"
        );
        assert!(matches!(
            Options::parse("log"),
            Err(CmdlineError::BadValue { .. })
        ));
    }

    #[test]
    fn mode_defaults_to_vmx() {
        assert_eq!(Options::parse("").unwrap().mode, Mode::Vmx);
        assert_eq!(Options::parse("mode=direct").unwrap().mode, Mode::Direct);
        assert!(matches!(
            Options::parse("mode=off"),
            Err(CmdlineError::BadValue { option: "mode", .. })
        ));
    }

    #[test]
    fn words_after_a_lone_double_dash_belong_to_the_guest() {
        let o = Options::parse("log=debug -- scenario=panic  x=--").unwrap();
        assert_eq!(o.log, LevelFilter::Debug);
        assert_eq!(o.guest_args, "scenario=panic  x=--");
        assert_eq!(Options::parse("--").unwrap().guest_args, "");
        assert_eq!(
            Options::parse("a--b").unwrap_err(),
            CmdlineError::Unknown("a--b")
        );
    }
}
