//! The load client: prompts, the closed loop, SSE parsing, raw records. Knows only an endpoint URL, not how
//! the server was started.

pub mod answer;
pub mod arrival;
pub mod client;
pub mod dataset;
pub mod error;
pub mod lengths;
pub mod open;
pub mod prompt;
pub mod session;
pub mod sse;
pub mod text;
pub mod threads;
pub mod trace;
