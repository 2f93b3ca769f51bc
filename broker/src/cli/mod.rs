//! The `wasp` binary's subcommands other than running the broker: `wasp passwd` and
//! `wasp plugin inspect`.

pub mod inspect;
pub mod passwd;
