//! Tool executors for the agent loop: a persistent bash session in a Linux-namespace sandbox,
//! and SQL executors (embedded SQLite, MySQL/MariaDB over a connection).

pub mod os;
pub mod sql;
