//! fieldvox: a real-time voice-and-knowledge server for field technicians.

pub mod app;
pub mod audio;
pub mod auth;
pub mod backends;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod llm;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod rag;
pub mod rtc;
pub mod session;
pub mod store;
pub mod vector;
pub mod voice;
pub mod workers;
