//! deskmail-mq (being built).
