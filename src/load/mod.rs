//! The load client: prompts, the closed loop, SSE parsing, raw records. Knows only an endpoint URL, not how
//! the server was started.

pub mod client;
pub mod prompt;
pub mod sse;
