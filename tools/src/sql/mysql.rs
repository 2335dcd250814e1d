//! The MySQL/MariaDB executor, for evaluation parity with AgentBench (whose observations are
//! MySQL's types and error messages as mysql.connector renders them).
//!
//! Each task gets its own database `edgeact_<16 hex digits>` holding the table under its exact
//! name (backtick-quoted), every column `TEXT`; the database is dropped afterwards. Containment
//! is the server's: connect as a user whose grants cover only `edgeact\_%` databases (see
//! `scripts/ci-mariadb.sh`), so a task file's table name can never pick, reuse or drop another
//! database, and two tasks with the same table never share one. AgentBench named the database
//! after the table, and the model saw that name in errors (`Table 'US Ambassadors.x' doesn't
//! exist`) and in `SELECT DATABASE()`: every observation shows the table's name where the
//! server wrote the internal one ([`MysqlBackend::database`] gives the internal name). Limits of
//! this scheme: SQL that qualifies a table with the AgentBench database name
//! (`` `T`.`T` ``) does not resolve, and tasks running at the same time under the same server
//! user can see each other's `edgeact_…` databases (use one server per evaluation run).
//!
//! Session settings are those AgentBench's MySQL 8 server ran with: its default `sql_mode`
//! without `STRICT_TRANS_TABLES` ([`AGENTBENCH_SQL_MODE`]; strict mode rejects updates such as
//! `WHERE text_col = 16` over non-numeric text, which the gold tables applied) and
//! `group_concat_max_len` 1024 (MariaDB's default is 1 MiB; the gold hashes were cut at 1024).
//!
//! Statements are limited by `max_statement_time` (MariaDB) or `max_execution_time` (MySQL,
//! SELECT only), and by a socket read timeout a little longer than that, after which the
//! connection is replaced. The server does not check those limits inside one string function
//! (MariaDB 10.11 ran a `LIKE` over 8 MB for 47 s against a 2 s limit): the task goes on after
//! the read timeout, but the server finishes the call on its own time.
//!
//! Rendering follows mysql.connector's conversions: integer types → `int`, `DECIMAL` →
//! `Decimal('…')`, `FLOAT`/`DOUBLE` → `float`, `DATE`/`DATETIME`/`TIME` → `datetime` objects,
//! binary strings → `bytes`, text → `str`; errors → `{errno} ({sqlstate}): {message}`.

use std::time::{Duration, Instant};

use mysql::consts::ColumnType;
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Value};

use super::render::{truncate_db_output, PyValue, RowsRenderer};
use super::{cell_text, Result, SqlBackend, SqlError, SqlLimits, TaskTable};

/// MySQL 8's default `sql_mode` less `STRICT_TRANS_TABLES`, which AgentBench's server ran with;
/// MariaDB accepts the same list.
pub const AGENTBENCH_SQL_MODE: &str =
    "ONLY_FULL_GROUP_BY,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";

/// MySQL's default `group_concat_max_len`, which the table hash of the gold answers relied on.
pub const AGENTBENCH_GROUP_CONCAT_MAX_LEN: u32 = 1024;

/// The `binary` character set id: such string columns come back as `bytes`.
const BINARY_CHARSET: u16 = 63;
/// How long past the statement deadline the client waits for the server's own timeout error
/// before giving up on the statement itself.
const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// Quotes a MySQL identifier with backticks.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The MySQL/MariaDB backend.
pub struct MysqlBackend {
    opts: Opts,
    conn: Conn,
    limits: SqlLimits,
    mariadb: bool,
    database: Option<String>,
    /// The name AgentBench gave the database (the table's name), shown in its place.
    shown_database: String,
}

impl std::fmt::Debug for MysqlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlBackend")
            .field("database", &self.database)
            .field("mariadb", &self.mariadb)
            .finish()
    }
}

impl MysqlBackend {
    /// Connects to `mysql://user:pass@host:port` (a database path in the URL is ignored: each
    /// task creates its own).
    pub fn connect(url: &str, limits: SqlLimits) -> Result<Self> {
        let opts = Opts::from_url(url).map_err(|e| SqlError::BadUrl(format!("{url}: {e}")))?;
        let read_timeout = limits.statement_timeout + CLIENT_GRACE;
        let opts: Opts = OptsBuilder::from_opts(opts)
            .db_name(None::<String>)
            .read_timeout(Some(read_timeout))
            .write_timeout(Some(read_timeout))
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
            .into();
        let (conn, mariadb) = Self::open(&opts, limits)?;
        Ok(Self {
            opts,
            conn,
            limits,
            mariadb,
            database: None,
            shown_database: String::new(),
        })
    }

    fn open(opts: &Opts, limits: SqlLimits) -> Result<(Conn, bool)> {
        let mut conn = Conn::new(opts.clone())?;
        let mariadb = conn.server_version().0 >= 10
            || conn
                .query_first::<String, _>("SELECT VERSION()")?
                .is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"));
        conn.query_drop("SET NAMES utf8mb4")?;
        conn.query_drop(format!(
            "SET SESSION sql_mode = '{AGENTBENCH_SQL_MODE}', \
             SESSION group_concat_max_len = {AGENTBENCH_GROUP_CONCAT_MAX_LEN}"
        ))?;
        let secs = limits.statement_timeout.as_secs_f64();
        if mariadb {
            conn.query_drop(format!("SET SESSION max_statement_time = {secs}"))?;
        } else {
            conn.query_drop(format!("SET SESSION max_execution_time = {}", (secs * 1000.0) as u64))?;
        }
        Ok((conn, mariadb))
    }

    /// Whether the server is MariaDB.
    pub fn is_mariadb(&self) -> bool {
        self.mariadb
    }

    /// The current task's database name on the server (observations show the table's name in
    /// its place, as AgentBench named the database).
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// Gives up on the statement the connection is running: starts over on a fresh connection,
    /// so the session stays usable, and ends the statement on the server, which goes on with a
    /// statement whose client left (a `BENCHMARK` loop under `SET STATEMENT max_statement_time
    /// = 0 FOR`, MySQL's `DO`, which `max_execution_time` does not cover, a result still being
    /// sent). It may be gone already.
    fn abandon_statement(&mut self) -> Result<()> {
        let stuck = self.conn.connection_id();
        self.reconnect()?;
        let _ = self.conn.query_drop(format!("KILL {stuck}"));
        Ok(())
    }

    /// Reconnects after a dropped connection and re-selects the task's database.
    fn reconnect(&mut self) -> Result<()> {
        let (conn, _) = Self::open(&self.opts, self.limits)?;
        self.conn = conn;
        if let Some(db) = &self.database {
            self.conn.query_drop(format!("USE {}", quote_ident(db)))?;
        }
        Ok(())
    }

    fn value_to_py(v: Value, col: &mysql::Column) -> PyValue {
        let bytes = match v {
            Value::NULL => return PyValue::None,
            Value::Bytes(b) => b,
            Value::Int(i) => return PyValue::Int(i as i128),
            Value::UInt(u) => return PyValue::Int(u as i128),
            Value::Float(f) => return PyValue::Float(f as f64),
            Value::Double(f) => return PyValue::Float(f),
            other => other.as_sql(true).into_bytes(),
        };
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        use ColumnType::*;
        match col.column_type() {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_INT24
            | MYSQL_TYPE_YEAR => text()
                .trim()
                .parse::<i128>()
                .map(PyValue::Int)
                .unwrap_or_else(|_| PyValue::Str(text())),
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => PyValue::Decimal(text()),
            MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => text()
                .trim()
                .parse::<f64>()
                .map(PyValue::Float)
                .unwrap_or_else(|_| PyValue::Str(text())),
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => parse_date(&text()).unwrap_or_else(|| PyValue::Str(text())),
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_TIMESTAMP2 => {
                parse_datetime(&text()).unwrap_or_else(|| PyValue::Str(text()))
            }
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => parse_time(&text()).unwrap_or_else(|| PyValue::Str(text())),
            MYSQL_TYPE_BIT => PyValue::Int(bytes.iter().fold(0i128, |a, &b| (a << 8) | b as i128)),
            _ if col.character_set() == BINARY_CHARSET => PyValue::Bytes(bytes),
            _ => PyValue::Str(text()),
        }
    }

    /// Runs one statement and renders its first result set; `Err` is a tool failure, MySQL
    /// errors become `Ok` observation text. Rows past the observation's cut are read and
    /// dropped (the statement completes, as AgentBench read it to its end), but only until
    /// `deadline`: a result streamed a row a second, or millions of rows, kept the client
    /// reading for hours. Then the rest is left unread ([`Read::TimedOut`]: the session must
    /// be replaced).
    fn run_statement(&mut self, sql: &str, deadline: Instant) -> std::result::Result<Read, mysql::Error> {
        let mut result = self.conn.query_iter(sql)?;
        let columns: Vec<mysql::Column> = result.columns().as_ref().to_vec();
        let mut out = RowsRenderer::new(1000);
        let mut full = false;
        // Only the first result set is shown (the harness ran one statement per call).
        for row in result.by_ref() {
            let row = row?;
            if Instant::now() > deadline {
                // Dropping the result would read it to its end (this leaks its few bytes of
                // column metadata, once per timed-out statement).
                std::mem::forget(result);
                return Ok(Read::TimedOut);
            }
            if full || columns.is_empty() {
                continue;
            }
            let vals: Vec<PyValue> = row
                .unwrap()
                .into_iter()
                .zip(columns.iter())
                .map(|(v, c)| Self::value_to_py(v, c))
                .collect();
            full = !out.push_row(&vals);
        }
        drop(result);
        Ok(Read::Whole(out.finish()))
    }
}

/// How much of a statement's result [`MysqlBackend::run_statement`] read.
enum Read {
    /// All of it (rendered up to the observation's cut): the observation text.
    Whole(String),
    /// Rows until the deadline; the server may still be sending the rest.
    TimedOut,
}

fn parse_date(s: &str) -> Option<PyValue> {
    let mut it = s.trim().splitn(3, '-');
    let year = it.next()?.parse().ok()?;
    let month = it.next()?.parse().ok()?;
    let day = it.next()?.parse().ok()?;
    // mysql.connector returns None for zero dates, which Python's date cannot hold.
    if month == 0 || day == 0 {
        return Some(PyValue::None);
    }
    Some(PyValue::Date { year, month, day })
}

fn parse_datetime(s: &str) -> Option<PyValue> {
    let (d, t) = s.trim().split_once(' ')?;
    let PyValue::Date { year, month, day } = parse_date(d)? else {
        return Some(PyValue::None);
    };
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let mut it = hms.splitn(3, ':');
    let hour = it.next()?.parse().ok()?;
    let minute = it.next()?.parse().ok()?;
    let second = it.next()?.parse().ok()?;
    let micros = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6].parse().ok()?
    };
    Some(PyValue::DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
    })
}

fn parse_time(s: &str) -> Option<PyValue> {
    let s = s.trim();
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.splitn(3, ':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next()?.parse().ok()?;
    let us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6].parse().ok()?
    };
    let total = ((h * 60 + m) * 60 + sec) * 1_000_000 + us;
    Some(PyValue::TimeDelta(if neg { -total } else { total }))
}

impl SqlBackend for MysqlBackend {
    fn setup_table(&mut self, table: &TaskTable) -> Result<()> {
        self.teardown()?;
        let db = format!("edgeact_{:016x}", rand::random::<u64>());
        self.conn
            .query_drop(format!("CREATE DATABASE {} CHARACTER SET utf8mb4", quote_ident(&db)))?;
        self.database = Some(db.clone());
        self.shown_database = table.table_name.clone();
        self.conn.query_drop(format!("USE {}", quote_ident(&db)))?;
        let names: Vec<String> = table.column_names().iter().map(|c| quote_ident(c)).collect();
        let cols: Vec<String> = names.iter().map(|c| format!("{c} TEXT")).collect();
        let tname = quote_ident(&table.table_name);
        match self
            .conn
            .query_drop(format!("CREATE TABLE {tname} ({})", cols.join(", ")))
        {
            Ok(()) => {}
            // AgentBench ignored a refused CREATE TABLE: the task runs without its table.
            Err(mysql::Error::MySqlError(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        // AgentBench inserted every row in one statement: a ragged row left the table empty.
        let marks = vec!["?"; names.len()].join(", ");
        let sql = format!("INSERT INTO {tname} ({}) VALUES ({marks})", names.join(", "));
        let mut tx = self.conn.start_transaction(mysql::TxOpts::default())?;
        for row in table.inserted_rows() {
            let values: Vec<Value> = row.iter().map(|v| Value::Bytes(cell_text(v).into_bytes())).collect();
            tx.exec_drop(&sql, values)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn execute(&mut self, sql: &str) -> Result<String> {
        if self.database.is_none() {
            return Err(SqlError::NoTable);
        }
        // As AgentBench: a fresh session for each statement (its `conn.reconnect()` and `use`
        // before every one), committed after it. Session variables, temporary tables, an open
        // transaction and the model's own `USE` do not carry over to the next statement.
        self.reconnect()?;
        let deadline = Instant::now() + self.limits.statement_timeout + CLIENT_GRACE;
        let result = self.run_statement(sql, deadline);
        if let Ok(Read::Whole(_)) = result {
            let _ = self.conn.query_drop("COMMIT");
        }
        let text = match result {
            Ok(Read::Whole(t)) => t,
            Ok(Read::TimedOut) => {
                // The connection is mid-result.
                self.abandon_statement()?;
                format!(
                    "2013 (HY000): Lost connection to MySQL server during query (statement exceeded the {} s time limit)",
                    self.limits.statement_timeout.as_secs_f64()
                )
            }
            Err(mysql::Error::MySqlError(e)) => format!("{} ({}): {}", e.code, e.state, e.message),
            Err(e @ (mysql::Error::IoError(_) | mysql::Error::CodecError(_))) => {
                // Read timeout past the server-side limit (an I/O error inside the packet
                // codec), or a dropped connection.
                self.abandon_statement()?;
                format!("2013 (HY000): Lost connection to MySQL server during query ({e})")
            }
            Err(e) => return Err(e.into()),
        };
        let text = match &self.database {
            Some(db) => text.replace(db.as_str(), &self.shown_database),
            None => text,
        };
        Ok(truncate_db_output(&text))
    }

    fn table_hash(&mut self, table: &TaskTable) -> Result<Option<String>> {
        if self.database.is_none() {
            return Err(SqlError::NoTable);
        }
        // In a session of its own, as AgentBench's hash query was (the model's last statement
        // may have changed its session: `group_concat_max_len`, a temporary table's name).
        self.reconnect()?;
        let cols: Vec<String> = table.column_names().iter().map(|c| quote_ident(c)).collect();
        // The harness's query, verbatim in structure, under the session's group_concat_max_len
        // of 1024 as on AgentBench's MySQL.
        let sql = format!(
            "SELECT md5(group_concat(rowhash ORDER BY rowhash)) AS hash FROM \
             (SELECT substring(md5(concat_ws(',', {})), 1, 5) AS rowhash FROM {}) AS sub",
            cols.join(", "),
            quote_ident(&table.table_name)
        );
        let h: Option<Option<String>> = self.conn.query_first(sql)?;
        Ok(h.flatten())
    }

    fn teardown(&mut self) -> Result<()> {
        if let Some(db) = self.database.take() {
            self.conn
                .query_drop(format!("DROP DATABASE IF EXISTS {}", quote_ident(&db)))?;
        }
        Ok(())
    }
}

impl Drop for MysqlBackend {
    fn drop(&mut self) {
        // Best effort: a failure here leaves one `edgeact_…` database behind, nothing else.
        let _ = self.teardown();
    }
}
