//! rdp-doctor: Microsoft's "Troubleshoot Remote Desktop connections to an Azure VM" runbook,
//! run against Azure Resource Manager from a terminal or a chat room.
//!
//! See ARCHITECTURE.md for the map.

pub mod azure;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod discord;
pub mod domain;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod runbook;
pub mod sim;
mod spans;
pub mod store;
pub mod telemetry;
