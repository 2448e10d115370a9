//! The Rust toolchain the build needs: the targets and components pinned
//! in `rust-toolchain.toml`, looked for in the active toolchain's sysroot
//! and added with rustup when missing, saying so.
//!
//! rustup installs a toolchain file's targets and components only when it
//! installs the toolchain itself; a machine that already has the pinned
//! release without `x86_64-unknown-none` or `rust-src` fails the first
//! bare-metal build with "can't find crate for `core`". The sysroot is the
//! ground truth (it is what rustc reads), rustup the way to mend it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What `rust-toolchain.toml` pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// The release (`channel`).
    pub channel: String,
    /// Compilation targets besides the host's.
    pub targets: Vec<String>,
    /// rustup components.
    pub components: Vec<String>,
}

/// Reads the keys xtask relies on from a `rust-toolchain.toml` text:
/// `channel = "..."`, `targets = [...]`, `components = [...]` in the
/// `[toolchain]` table (one line each, as the file is written).
pub fn parse(text: &str) -> Result<Pinned, String> {
    let mut channel = None;
    let mut targets = Vec::new();
    let mut components = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "channel" => channel = Some(value.trim_matches('"').to_string()),
            "targets" => targets = string_list(value)?,
            "components" => components = string_list(value)?,
            _ => {}
        }
    }
    let channel = channel.ok_or("rust-toolchain.toml has no `channel`")?;
    Ok(Pinned {
        channel,
        targets,
        components,
    })
}

fn string_list(value: &str) -> Result<Vec<String>, String> {
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| format!("rust-toolchain.toml: `{value}` is not a one-line list"))?;
    Ok(inner
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// One thing the pinned toolchain lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// A compilation target's standard library.
    Target(String),
    /// A component (`rust-src`, `rustfmt`, `clippy`).
    Component(String),
}

/// Where in a sysroot a component's files are; `None` for components
/// xtask does not know (they are taken as present).
fn component_path(sysroot: &Path, component: &str) -> Option<PathBuf> {
    Some(match component {
        "rust-src" => sysroot.join("lib/rustlib/src/rust/library"),
        "rustfmt" => sysroot.join("bin/rustfmt"),
        "clippy" => sysroot.join("bin/cargo-clippy"),
        _ => return None,
    })
}

/// What of `pinned` the toolchain at `sysroot` lacks.
pub fn missing(pinned: &Pinned, sysroot: &Path) -> Vec<Missing> {
    let targets = pinned
        .targets
        .iter()
        .filter(|t| !sysroot.join("lib/rustlib").join(t).join("lib").is_dir())
        .map(|t| Missing::Target(t.clone()));
    let components = pinned
        .components
        .iter()
        .filter(|c| component_path(sysroot, c).is_some_and(|p| !p.exists()))
        .map(|c| Missing::Component(c.clone()));
    targets.chain(components).collect()
}

/// The rustup commands that add `missing` to `channel`.
pub fn install_commands(channel: &str, missing: &[Missing]) -> Vec<Vec<String>> {
    let targets: Vec<String> = missing
        .iter()
        .filter_map(|m| match m {
            Missing::Target(t) => Some(t.clone()),
            Missing::Component(_) => None,
        })
        .collect();
    let components: Vec<String> = missing
        .iter()
        .filter_map(|m| match m {
            Missing::Component(c) => Some(c.clone()),
            Missing::Target(_) => None,
        })
        .collect();
    let mut commands = Vec::new();
    for (verb, names) in [("target", targets), ("component", components)] {
        if !names.is_empty() {
            let mut cmd: Vec<String> = ["rustup", verb, "add", "--toolchain", channel]
                .iter()
                .map(|s| s.to_string())
                .collect();
            cmd.extend(names);
            commands.push(cmd);
        }
    }
    commands
}

/// The pinned toolchain as this workspace's `rust-toolchain.toml` says.
pub fn pinned() -> Result<Pinned, String> {
    let path = crate::images::root().join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text)
}

/// The sysroot of the toolchain cargo uses in this workspace.
pub fn sysroot() -> Result<PathBuf, String> {
    let out = Command::new("rustc")
        .current_dir(crate::images::root())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run `rustc --print sysroot`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The toolchain's state for `cargo xtask doctor`: the version line and
/// what is missing.
pub fn state() -> Result<(String, Pinned, Vec<Missing>), String> {
    let pinned = pinned()?;
    let version = Command::new("rustc")
        .current_dir(crate::images::root())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("rustc: {e}"));
    let missing = missing(&pinned, &sysroot()?);
    Ok((version, pinned, missing))
}

/// Makes sure the pinned targets and components are installed: adds the
/// missing ones with rustup, saying so, or names the command to run.
pub fn ensure() -> Result<(), String> {
    let pinned = pinned()?;
    let missing = missing(&pinned, &sysroot()?);
    if missing.is_empty() {
        return Ok(());
    }
    let commands = install_commands(&pinned.channel, &missing);
    let shown: Vec<String> = commands.iter().map(|c| c.join(" ")).collect();
    if !crate::on_path("rustup") {
        return Err(format!(
            "the Rust toolchain lacks what rust-toolchain.toml pins ({}), and rustup \
             is not on the PATH to add it; install rustup, or run: {}",
            describe(&missing),
            shown.join(" && ")
        ));
    }
    eprintln!(
        "xtask: the toolchain lacks {} (pinned in rust-toolchain.toml); adding with rustup",
        describe(&missing)
    );
    for (cmd, line) in commands.iter().zip(&shown) {
        eprintln!("xtask: {line}");
        let ok = Command::new(&cmd[0])
            .args(&cmd[1..])
            .current_dir(crate::images::root())
            .status()
            .map(|s| s.success())
            .map_err(|e| format!("cannot run rustup: {e}"))?;
        if !ok {
            return Err(format!("`{line}` failed (see its output above)"));
        }
    }
    let still = self::missing(&pinned, &sysroot()?);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "rustup reported success but the toolchain still lacks {}",
            describe(&still)
        ))
    }
}

/// `target x86_64-unknown-none, component rust-src`.
pub fn describe(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| match m {
            Missing::Target(t) => format!("target {t}"),
            Missing::Component(c) => format!("component {c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"[toolchain]
channel = "1.95.0"
targets = ["x86_64-unknown-none"]
components = ["rust-src", "rustfmt", "clippy"]
profile = "minimal"
"#;

    #[test]
    fn reads_the_pinned_file() {
        let p = parse(FILE).unwrap();
        assert_eq!(p.channel, "1.95.0");
        assert_eq!(p.targets, ["x86_64-unknown-none"]);
        assert_eq!(p.components, ["rust-src", "rustfmt", "clippy"]);
        assert!(parse("[toolchain]\n").unwrap_err().contains("channel"));
        assert!(parse("channel = \"1\"\ntargets = [\n").is_err());
    }

    #[test]
    fn the_workspace_file_parses() {
        let p = pinned().unwrap();
        assert!(p.targets.iter().any(|t| t == crate::images::TARGET));
        assert!(p.components.iter().any(|c| c == "rust-src"));
    }

    #[test]
    fn finds_what_a_sysroot_lacks_and_the_commands_that_add_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = parse(FILE).unwrap();
        assert_eq!(
            missing(&p, root),
            [
                Missing::Target("x86_64-unknown-none".into()),
                Missing::Component("rust-src".into()),
                Missing::Component("rustfmt".into()),
                Missing::Component("clippy".into()),
            ]
        );
        std::fs::create_dir_all(root.join("lib/rustlib/x86_64-unknown-none/lib")).unwrap();
        std::fs::create_dir_all(root.join("lib/rustlib/src/rust/library")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/rustfmt"), "").unwrap();
        let left = missing(&p, root);
        assert_eq!(left, [Missing::Component("clippy".into())]);
        assert_eq!(
            install_commands("1.95.0", &left),
            [vec![
                "rustup",
                "component",
                "add",
                "--toolchain",
                "1.95.0",
                "clippy"
            ]]
        );
        std::fs::write(root.join("bin/cargo-clippy"), "").unwrap();
        assert!(missing(&p, root).is_empty());
        let both = [
            Missing::Target("t".into()),
            Missing::Component("rust-src".into()),
        ];
        let cmds = install_commands("1.95.0", &both);
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].join(" "), "rustup target add --toolchain 1.95.0 t");
        assert_eq!(describe(&both), "target t, component rust-src");
    }
}
