//! The `rampart` command's library half: the administrator's API client, shared by the
//! command-line tools, the end-to-end tests and the benchmarks.

pub mod admin_client;
