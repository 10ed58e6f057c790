//! Reports: pure functions from recorded data to bytes. Never calls the engine or the client.

pub mod console;
pub mod kv_csv;
pub mod sweep_csv;
