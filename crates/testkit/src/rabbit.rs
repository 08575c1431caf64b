//! RabbitMQ vhost per test (being built).
