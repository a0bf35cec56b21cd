//! The integration tests, in one binary: each test binary links the whole crate with the Azure
//! SDK, so one link instead of seven. Run one part with a filter, e.g. `cargo test --test it
//! sim::` or `cargo test --test it discord::`.

mod support;

mod alerts;
mod arm_examples;
mod bastion;
mod changes;
mod cli;
mod discord;
mod fake_discord;
mod fix;
mod gates;
mod house;
mod metrics;
mod network_path;
mod replicas;
mod runbook;
mod serve;
mod sim;
mod standby;
mod watch;
