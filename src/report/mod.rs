//! Reports: pure functions from recorded data to bytes. Never calls the engine or the client.

pub mod charts;
pub mod compare;
pub mod console;
pub mod context;
pub mod derive;
pub mod kv_csv;
pub mod markdown;
pub mod sweep_csv;
