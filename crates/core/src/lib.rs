//! deskmail-core (being built).
