//! azure
