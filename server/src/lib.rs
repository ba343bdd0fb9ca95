//! The `allegro` binary's library: config, CLI commands and the Tempo-compatible HTTP API.

#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod data_dir;
pub mod http;
pub mod receivers;
pub mod tenant;
