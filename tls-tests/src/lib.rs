//! Nothing: this crate holds tests only (tests/).
