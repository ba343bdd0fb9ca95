//! The `allegro` binary's library: config, CLI commands and the Tempo-compatible HTTP API.

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data_dir;
pub mod flight_sql;
pub mod grpc;
pub mod http;
pub mod jsonpb;
pub mod receivers;
pub mod tenant;
