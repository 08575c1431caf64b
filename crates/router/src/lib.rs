//! deskmail-router (being built).
