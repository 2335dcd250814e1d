//! The MySQL/MariaDB executor against a real server: mysql.connector-style rendering, error
//! text, per-task database isolation, statement timeout, and the table hash computed by the
//! server matching both the dev set's gold `answer_md5` and our Rust hash over SQLite.
//!
//! Needs `EDGEACT_TEST_MYSQL=mysql://user:pass@127.0.0.1:3306` (`scripts/ci-mariadb.sh start`
//! provides one); every test prints why it skips when unset.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgeact_tools::sql::{format_hash_answer, MysqlBackend, SqlBackend, SqlLimits, SqliteBackend, TaskTable};

fn url() -> Option<String> {
    match std::env::var("EDGEACT_TEST_MYSQL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipping: EDGEACT_TEST_MYSQL is not set (run scripts/ci-mariadb.sh start)");
            None
        }
    }
}

/// The dbbench dev tasks (`$EDGEACT_AGENTBENCH_DATA`, default `../shared/agentbench/data`), or
/// `None` with the reason printed.
fn dev_tasks() -> Option<Vec<serde_json::Value>> {
    let base = std::env::var("EDGEACT_AGENTBENCH_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/agentbench/data").into());
    let path = PathBuf::from(base).join("dbbench/dev.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} not found (set EDGEACT_AGENTBENCH_DATA)", path.display());
        return None;
    };
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    Some(lines.map(|l| serde_json::from_str(l).unwrap()).collect())
}

fn demo_table() -> TaskTable {
    serde_json::from_str(
        r#"{"table_name": "US Ambassadors", "table_info": {"columns": [
            {"name": "Representative", "type": "TEXT"}, {"name": "Presentation of Credentials", "type": "TEXT"},
            {"name": "Termination of Mission", "type": "TEXT"}, {"name": "Floors", "type": "INT"}],
          "rows": [["Dabney H. Maury", "January 20, 1887", "June 22, 1889", "12"],
                   ["Checco D'Angelo", "March 19, 1998", "August 15, 2000", "26"],
                   ["Nobody", null, "x", 7]]}}"#,
    )
    .unwrap()
}

fn backend(url: &str) -> MysqlBackend {
    let mut b = MysqlBackend::connect(
        url,
        SqlLimits {
            statement_timeout: Duration::from_secs(2),
        },
    )
    .unwrap();
    b.setup_table(&demo_table()).unwrap();
    b
}

#[test]
fn sql_mysql_renders_like_mysql_connector() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    let mut q = |s: &str| b.execute(s).unwrap();
    assert_eq!(
        q("SELECT `Presentation of Credentials` FROM `US Ambassadors` WHERE `Termination of Mission` = 'August 15, 2000'"),
        "[('March 19, 1998',)]"
    );
    assert_eq!(q("SELECT COUNT(*) FROM `US Ambassadors`"), "[(3,)]");
    assert_eq!(
        q("SELECT Representative FROM `US Ambassadors` WHERE Floors = '26'"),
        "[(\"Checco D'Angelo\",)]"
    );
    // SUM/AVG over TEXT are DOUBLE in MySQL; over integers they are DECIMAL.
    assert_eq!(
        q("SELECT SUM(Floors), AVG(Floors) FROM `US Ambassadors`"),
        "[(45.0, 15.0)]"
    );
    assert_eq!(
        q("SELECT SUM(1), 59.555, NULL"),
        "[(Decimal('1'), Decimal('59.555'), None)]"
    );
    assert_eq!(
        q("SELECT DATE('2020-01-02'), CAST('2020-01-02 03:04:05' AS DATETIME)"),
        "[(datetime.date(2020, 1, 2), datetime.datetime(2020, 1, 2, 3, 4, 5))]"
    );
    assert_eq!(q("SELECT * FROM `US Ambassadors` WHERE 0"), "[]");
    assert_eq!(q("UPDATE `US Ambassadors` SET Floors = '8' WHERE Floors = '7'"), "[]");
    assert_eq!(q("INSERT INTO `US Ambassadors` (Representative) VALUES ('New')"), "[]");
    assert_eq!(q("SELECT COUNT(*) FROM `US Ambassadors`;"), "[(4,)]");
    let err = q("SELEC nothing");
    assert!(
        err.starts_with("1064 (42000): You have an error in your SQL syntax"),
        "{err}"
    );
    // MySQL says `in 'where clause'`, MariaDB 10.11 `in 'SELECT'`: the backend passes the server's text through.
    let err = q("SELECT x FROM `US Ambassadors` WHERE x = 1");
    assert!(err.starts_with("1054 (42S22): Unknown column 'x' in '"), "{err}");
    let long = q("SELECT seq FROM seq_1_to_5000");
    assert!(
        long.ends_with("[TRUNCATED]") && long.starts_with("[(1,), (2,)"),
        "{long}"
    );
}

#[test]
fn sql_mysql_isolation_and_cleanup() {
    let Some(url) = url() else { return };
    let mut a = backend(&url);
    let mut b = backend(&url);
    let (da, db) = (a.database().unwrap().to_string(), b.database().unwrap().to_string());
    assert_ne!(da, db);
    a.execute("DELETE FROM `US Ambassadors`").unwrap();
    assert_eq!(b.execute("SELECT COUNT(*) FROM `US Ambassadors`").unwrap(), "[(3,)]");
    // The test user's grants cover only edgeact_* databases.
    let r = a.execute("SELECT * FROM mysql.user").unwrap();
    assert!(r.starts_with("1142 (42000)") || r.starts_with("1044 (42000)"), "{r}");
    let r = a.execute("CREATE DATABASE other_db").unwrap();
    assert!(r.starts_with("1044 (42000)"), "{r}");
    a.teardown().unwrap();
    let r = b.execute(&format!("SHOW DATABASES LIKE '{da}'")).unwrap();
    assert_eq!(r, "[]", "dropped after the task");
    drop(b);
    let mut c = backend(&url);
    let r = c.execute(&format!("SHOW DATABASES LIKE '{db}'")).unwrap();
    assert_eq!(r, "[]", "dropped when the backend is dropped");
}

#[test]
fn sql_mysql_statement_timeout() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    let t = Instant::now();
    let r = b.execute("SELECT SLEEP(30)").unwrap();
    // MariaDB's max_statement_time makes SLEEP return 1 early; heavier queries get error 1969.
    assert!(r == "[(1,)]" || r.contains("max_statement_time"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(8), "took {:?}", t.elapsed());
    let r = b
        .execute("SELECT COUNT(*) FROM seq_1_to_100000 a, seq_1_to_100000 b WHERE a.seq + b.seq = 3")
        .unwrap();
    assert!(r.contains("max_statement_time") || r.contains("interrupted"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    assert_eq!(b.execute("SELECT 1").unwrap(), "[(1,)]");
}

/// A statement that turns the server-side limit off runs into the client's read timeout; the
/// server thread running it is then killed, not left spinning past the task.
#[test]
fn sql_mysql_a_statement_past_every_limit_is_killed_on_the_server() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    if !b.is_mariadb() {
        eprintln!("skipping: SET STATEMENT ... FOR is MariaDB's");
        return;
    }
    let r = b
        .execute("SET STATEMENT max_statement_time = 0 FOR SELECT BENCHMARK(9000000000000, MD5('edgeact-kill'))")
        .unwrap();
    assert!(r.starts_with("2013 (HY000): Lost connection"), "{r}");
    // The query text below does not contain the statement's own marker.
    let running = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                   WHERE INFO LIKE CONCAT('%edgeact', '-kill%')";
    let t = Instant::now();
    loop {
        let r = b.execute(running).unwrap();
        if r == "[(0,)]" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "still running: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.execute("SELECT 1").unwrap(), "[(1,)]");
}

/// A result streamed slowly (a row a second with the server's limit turned off: each row
/// arrives before the read timeout) or millions of rows long was read to its end: hours. The
/// client stops at its deadline, and the server thread is killed.
#[test]
fn sql_mysql_results_are_read_no_further_than_the_deadline() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    if !b.is_mariadb() {
        eprintln!("skipping: SET STATEMENT ... FOR and seq_ tables are MariaDB's");
        return;
    }
    let t = Instant::now();
    let r = b
        .execute("SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP(1), REPEAT('x', 40000) FROM seq_1_to_100")
        .unwrap();
    assert!(r.starts_with("2013 (HY000): Lost connection"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    let t = Instant::now();
    let r = b
        .execute("SET STATEMENT max_statement_time = 0 FOR SELECT REPEAT('x', 1000) FROM seq_1_to_100000000")
        .unwrap();
    assert!(r.starts_with("2013 (HY000): Lost connection"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    // Rows past the cut of a result that ends in time are still read: the statement completes.
    let r = b.execute("SELECT REPEAT('x', 1000) FROM seq_1_to_20000").unwrap();
    assert!(r.starts_with("[('xxx") && r.len() <= 820, "{r}");
    assert_eq!(b.execute("SELECT 1").unwrap(), "[(1,)]");
}

/// The server's own hash query agrees with the gold `answer_md5` of every INSERT/UPDATE dev
/// task after its gold SQL, and with the Rust hash the SQLite backend computes.
#[test]
fn sql_mysql_table_hash_matches_dev_gold_and_sqlite() {
    let Some(url) = url() else { return };
    let Some(tasks) = dev_tasks() else { return };
    let mut my = MysqlBackend::connect(&url, SqlLimits::default()).unwrap();
    let mut checked = 0;
    for task in &tasks {
        if !matches!(task["type"][0].as_str(), Some("INSERT" | "UPDATE" | "DELETE")) {
            continue;
        }
        let t: TaskTable = serde_json::from_value(task["table"].clone()).unwrap();
        let mut lite = SqliteBackend::default();
        my.setup_table(&t).unwrap();
        lite.setup_table(&t).unwrap();
        assert_eq!(
            my.table_hash(&t).unwrap(),
            lite.table_hash(&t).unwrap(),
            "{}: initial hash",
            t.table_name
        );
        for sql in task["label"].as_array().unwrap() {
            assert_eq!(my.execute(sql.as_str().unwrap()).unwrap(), "[]");
            lite.execute(sql.as_str().unwrap()).unwrap();
        }
        let h = my.table_hash(&t).unwrap();
        assert_eq!(
            format_hash_answer(h.as_deref()),
            task["answer_md5"].as_str().unwrap(),
            "{}",
            t.table_name
        );
        assert_eq!(h, lite.table_hash(&t).unwrap(), "{}: final hash", t.table_name);
        checked += 1;
    }
    eprintln!("mysql table hash: {checked} dev mutation tasks match answer_md5 and the SQLite hash");
    assert!(checked >= 40);
}

/// Dev task 5 (an empty column name) and task 3 (a header with a literal backslash) on a real
/// server, set up as AgentBench did: the refused `CREATE TABLE` leaves the task without its
/// table, and the escaped header keeps its doubled backslash.
#[test]
fn sql_mysql_dev_tables_set_up_as_agentbench_did() {
    let Some(url) = url() else { return };
    let Some(tasks) = dev_tasks() else { return };
    let mut b = MysqlBackend::connect(&url, SqlLimits::default()).unwrap();
    let t5: TaskTable = serde_json::from_value(tasks[5]["table"].clone()).unwrap();
    b.setup_table(&t5).unwrap();
    // The database shows under the table's name, as AgentBench named it.
    assert_eq!(
        b.execute("SELECT COUNT(*) FROM historic_sites").unwrap(),
        format!("1146 (42S02): Table '{}.historic_sites' doesn't exist", t5.table_name)
    );
    let t3: TaskTable = serde_json::from_value(tasks[3]["table"].clone()).unwrap();
    b.setup_table(&t3).unwrap();
    let n = t3.table_info.rows.len();
    assert_eq!(
        b.execute(r"SELECT COUNT(`Height\\nft / m`) FROM skyscrapers_in_Columbus")
            .unwrap(),
        format!("[({n},)]")
    );
    let r = b
        .execute(r"SELECT COUNT(`Height\nft / m`) FROM skyscrapers_in_Columbus")
        .unwrap();
    assert!(r.starts_with("1054 (42S22): Unknown column"), "{r}");
    // A ragged row: the table exists and is empty; a JSON null is stored as the text 'None'.
    let t: TaskTable = serde_json::from_str(
        r#"{"table_name": "t", "table_info": {"columns": [{"name": "a"}, {"name": "b"}],
            "rows": [["1", null], ["3"]]}}"#,
    )
    .unwrap();
    b.setup_table(&t).unwrap();
    assert_eq!(b.execute("SELECT COUNT(*) FROM t").unwrap(), "[(0,)]");
    let t: TaskTable = serde_json::from_str(
        r#"{"table_name": "t", "table_info": {"columns": [{"name": "a"}, {"name": "b"}], "rows": [["1", null]]}}"#,
    )
    .unwrap();
    b.setup_table(&t).unwrap();
    assert_eq!(b.execute("SELECT b FROM t").unwrap(), "[('None',)]");
}

/// AgentBench's MySQL 8 ran without strict mode: an UPDATE comparing a TEXT column with a number
/// applies (with warnings) where MariaDB's default strict mode refused it with error 1292, and
/// the gold hashes are of the updated tables.
#[test]
fn sql_mysql_non_strict_update_applies_as_on_agentbench() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    let r = b
        .execute("UPDATE `US Ambassadors` SET `Termination of Mission` = 'gone' WHERE Floors = 26")
        .unwrap();
    assert_eq!(r, "[]");
    assert_eq!(
        b.execute("SELECT Representative FROM `US Ambassadors` WHERE `Termination of Mission` = 'gone'")
            .unwrap(),
        "[(\"Checco D'Angelo\",)]"
    );
    // A non-numeric text compared with a number: a warning, not an error, without strict mode.
    b.execute("INSERT INTO `US Ambassadors` (Representative, Floors) VALUES ('Odd', 'n/a')")
        .unwrap();
    let r = b
        .execute("UPDATE `US Ambassadors` SET Floors = '16' WHERE Floors = 12")
        .unwrap();
    assert_eq!(r, "[]");
    assert_eq!(
        b.execute("SELECT COUNT(*) FROM `US Ambassadors` WHERE Floors = '16'")
            .unwrap(),
        "[(1,)]"
    );
    let r = b.execute("SELECT @@SESSION.sql_mode").unwrap();
    assert!(!r.contains("STRICT"), "{r}");
    assert!(r.contains("ONLY_FULL_GROUP_BY"), "{r}");
}

/// MySQL's default `group_concat_max_len` (1024) cut AgentBench's results and hashes; MariaDB's
/// default is 1 MiB.
#[test]
fn sql_mysql_group_concat_is_cut_at_1024() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    assert_eq!(
        b.execute("SELECT LENGTH(GROUP_CONCAT(seq)) FROM seq_1_to_1000")
            .unwrap(),
        "[(1024,)]"
    );
}

/// AgentBench named the database after the table, and the model saw that name in errors and in
/// `SELECT DATABASE()`; the internal `edgeact_<hex>` name never shows.
#[test]
fn sql_mysql_observations_name_the_database_as_agentbench_did() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    let internal = b.database().unwrap().to_string();
    let r = b.execute("SELECT * FROM nosuch").unwrap();
    assert_eq!(r, "1146 (42S02): Table 'US Ambassadors.nosuch' doesn't exist");
    assert_eq!(b.execute("SELECT DATABASE()").unwrap(), "[('US Ambassadors',)]");
    let r = b
        .execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        .unwrap();
    assert_eq!(r, "[('US Ambassadors', 'US Ambassadors')]");
    for sql in [
        "SELECT * FROM nosuch",
        "SELECT DATABASE()",
        "SHOW TABLES",
        "DROP TABLE nosuch",
    ] {
        let r = b.execute(sql).unwrap();
        assert!(!r.contains(&internal), "{sql} → {r}");
    }
    // Two tasks with the same table at once still get separate databases.
    let mut other = backend(&url);
    assert_ne!(other.database(), b.database());
    assert_eq!(other.execute("SELECT DATABASE()").unwrap(), "[('US Ambassadors',)]");
}

/// AgentBench reconnected and re-selected the database before every statement and committed
/// after it: a user variable, a temporary table, an open transaction or the model's own `USE`
/// does not reach the next statement (BEGIN, UPDATE, ROLLBACK keeps the update).
#[test]
fn sql_mysql_each_statement_has_a_session_of_its_own() {
    let Some(url) = url() else { return };
    let mut b = backend(&url);
    b.execute("SET @n := 5").unwrap();
    assert_eq!(b.execute("SELECT @n").unwrap(), "[(None,)]");
    b.execute("BEGIN").unwrap();
    b.execute("UPDATE `US Ambassadors` SET Floors = '1'").unwrap();
    b.execute("ROLLBACK").unwrap();
    assert_eq!(
        b.execute("SELECT DISTINCT Floors FROM `US Ambassadors`").unwrap(),
        "[('1',)]"
    );
    b.execute("CREATE TEMPORARY TABLE scratch (a INT)").unwrap();
    assert!(b.execute("SELECT * FROM scratch").unwrap().starts_with("1146"));
    b.execute("USE information_schema").unwrap();
    assert_eq!(b.execute("SELECT DATABASE()").unwrap(), "[('US Ambassadors',)]");
}
