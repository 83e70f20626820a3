//! End-to-end scenarios with real `rampart` processes on loopback, on each store.
//! Modules follow capabilities.

mod api;
mod battery;
mod enrollment;
mod events;
mod policy;
mod ransomware;
mod replicas;
mod selfprotect;
mod up;
