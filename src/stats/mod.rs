//! Statistics: pure functions of recorded data (fits now; quantiles, intervals and knees with the load).

pub mod fit;
pub mod kv;
pub mod summary;
pub mod sweep;
