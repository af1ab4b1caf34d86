//! Commands under a program re-executed as their supervisor (here `eventor-agent`): what
//! runs where no dedicated supervisor lies next to the program, as on a host that got only
//! the agent.

const PROGRAM: &str = env!("CARGO_BIN_EXE_eventor-agent");

#[path = "supervised/cases.rs"]
mod cases;
#[path = "supervised/procs.rs"]
mod procs;
