//! The `citysec` binary: argv, tracing, exit codes.

fn main() {}
