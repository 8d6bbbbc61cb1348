//! Presentation: what a learner sees — lines and events, the process and thread tables from
//! `/proc`, timelines, and the flags and `main` every demo shares.

pub mod cli;
pub mod demo;
pub mod locks;
pub mod phase;
pub mod predict;
pub mod ps;
pub mod report;
pub mod sampler;
pub mod stepper;
pub mod svg;
pub mod timeline;
pub mod trace;
