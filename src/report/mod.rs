//! Reports: pure functions from recorded data to bytes. Never calls the engine or the client.

pub mod kv_csv;
