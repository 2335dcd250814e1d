//! SQL executor tests, one binary: embedded SQLite ([`sqlite`]) and a MySQL/MariaDB server
//! ([`mysql`], skipped unless `EDGEACT_TEST_MYSQL` names one) on the dbbench dev tables.

mod mysql;
mod sqlite;
