//! The gRPC services, and how they are put together behind the auth interceptors.

mod crud;
mod daemon;
mod delete;
mod errors;
mod mailbox;
mod probe;
mod resources;
pub mod snapshot;
mod undecodable;

pub use resources::Resources;
pub use undecodable::RejectUndecodable;
