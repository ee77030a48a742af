//! The `twilio-dialogflow` command: the allocator, then the command line.

// Every dependency in the manifest is used: CI keeps it so.
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

use std::process::ExitCode;

mod check;
mod cli;
mod erase;
mod send;
mod system_roots;

// glibc's allocator spent a fifth of the bridge's CPU on the per-request buffers of
// hyper and reqwest (malloc_consolidate on every 8 KiB read buffer); jemalloc's
// thread caches do not. See docs/benchmarks.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // SAFETY: first thing in `main`, before the runtime or anything else starts a thread.
    unsafe { system_roots::read_bundle_alone() };
    cli::main()
}
