//! runbook
