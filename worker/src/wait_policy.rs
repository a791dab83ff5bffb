//! How llama.cpp's OpenMP threads wait for work.
//!
//! libgomp's default is to spin before sleeping. On a machine whose cores
//! are shared (another process, the client, a second worker), spinning
//! threads take the time slices the one thread holding the work needs, and
//! generation collapses (docs/benchmarks.md, "Shared cores"). Herd runs
//! them with `OMP_WAIT_POLICY=passive` unless the variable is set. libgomp
//! reads it once, when it is loaded — before `main` — so the process sets
//! it and executes itself again, keeping its pid, arguments and
//! descriptors.

use std::os::unix::process::CommandExt;

/// The variable libgomp reads.
pub const VAR: &str = "OMP_WAIT_POLICY";

/// Makes OpenMP threads wait passively: returns at once if
/// `OMP_WAIT_POLICY` is set (by the user, or by the first run of this
/// process), else replaces the process with itself under
/// `OMP_WAIT_POLICY=passive`. Call first thing in `main`, before any
/// thread starts. If the re-execution fails, carries on as it is.
pub fn passive_or_reexec() {
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let error = command.args(args).env(VAR, "passive").exec();
    eprintln!("warning: cannot set {VAR}=passive by re-executing ({error}); continuing");
}
