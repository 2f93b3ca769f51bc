//! The conformance suite of the json-guard plugin lives in `tests/suite.rs`: one list of cases, each run
//! as a test against the Rust (`../rust`), Python (`../python`) and JavaScript (`../js`) components.
