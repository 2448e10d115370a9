//! `okernel-vmfuzz`: the VM fuzz driver's command line (`--help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ExitCode::from(okernel_vmfuzz::cli::main(&args))
}
