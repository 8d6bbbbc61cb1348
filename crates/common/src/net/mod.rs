//! Networking: what the IO-model demos and their benchmark share.
