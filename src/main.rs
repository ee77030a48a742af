//! The `twilio-dialogflow` command: the allocator, then the library's command line.

use std::process::ExitCode;

// glibc's allocator spent a fifth of the bridge's CPU on the per-request buffers of
// hyper and reqwest (malloc_consolidate on every 8 KiB read buffer); jemalloc's
// thread caches do not. See README, Benchmarks.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    twilio_dialogflow::cli::main()
}
