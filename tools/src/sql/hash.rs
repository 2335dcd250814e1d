//! The AgentBench table hash, as MySQL computes it for INSERT/UPDATE/DELETE tasks:
//!
//! ```sql
//! SELECT md5(group_concat(rowhash ORDER BY rowhash))
//! FROM (SELECT substring(md5(concat_ws(',', col1, col2, …)), 1, 5) AS rowhash FROM t) AS sub
//! ```
//!
//! reproduced outside MySQL: `concat_ws` skips NULL cells, `group_concat` joins with `,` and is
//! cut at `group_concat_max_len` (1024 bytes by default), and `md5(NULL)` of an empty table is
//! NULL. The gold `answer_md5` is the harness's `str(fetchall())` of that query, e.g.
//! `[('09aa8fbf72f39362970f95a1276b957c',)]`.

use md5::{Digest, Md5};

/// MySQL's default `group_concat_max_len`.
pub const GROUP_CONCAT_MAX_LEN: usize = 1024;

fn md5_hex(data: &[u8]) -> String {
    let digest = Md5::digest(data);
    let mut s = String::with_capacity(32);
    for b in digest.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The 5-hex-digit hash of one row: `substring(md5(concat_ws(',', cells…)), 1, 5)`; `None`
/// cells are skipped as `concat_ws` does.
pub fn row_hash<'a>(cells: impl IntoIterator<Item = Option<&'a [u8]>>) -> String {
    let mut joined = Vec::new();
    let mut first = true;
    for c in cells.into_iter().flatten() {
        if !first {
            joined.push(b',');
        }
        joined.extend_from_slice(c);
        first = false;
    }
    md5_hex(&joined)[..5].to_string()
}

/// The table hash from the row hashes: sorted, joined by `,`, cut at `max_len` bytes, md5'd;
/// `None` when there are no rows.
pub fn table_hash_from_rowhashes(mut rowhashes: Vec<String>, max_len: usize) -> Option<String> {
    if rowhashes.is_empty() {
        return None;
    }
    // Row hashes are lowercase hex: byte order equals MySQL's collation order for them.
    rowhashes.sort_unstable();
    let mut joined = rowhashes.join(",").into_bytes();
    joined.truncate(max_len);
    Some(md5_hex(&joined))
}

/// The hash as the harness's `str(cursor.fetchall())` renders it, the form `answer_md5` holds:
/// `[('…',)]`, or `[(None,)]` for an empty table.
pub fn format_hash_answer(hash: Option<&str>) -> String {
    match hash {
        Some(h) => format!("[('{h}',)]"),
        None => "[(None,)]".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_known_vector() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        // md5("abc") from RFC 1321's test suite.
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn concat_ws_skips_null() {
        assert_eq!(row_hash([Some(&b"a"[..]), None, Some(&b"c"[..])]), md5_hex(b"a,c")[..5]);
        assert_eq!(row_hash([None::<&[u8]>]), md5_hex(b"")[..5]);
    }

    #[test]
    fn group_concat_cut_and_order() {
        let hs: Vec<String> = (0..300)
            .map(|i| md5_hex(format!("{i}").as_bytes())[..5].to_string())
            .collect();
        let mut rev = hs.clone();
        rev.reverse();
        let a = table_hash_from_rowhashes(hs.clone(), GROUP_CONCAT_MAX_LEN);
        assert_eq!(
            a,
            table_hash_from_rowhashes(rev, GROUP_CONCAT_MAX_LEN),
            "order independent"
        );
        // 300 rows × 6 bytes exceed 1024: rows sorting after the cut do not change the hash.
        let mut sorted = hs.clone();
        sorted.sort();
        let mut more = hs.clone();
        more.push("fffff".into());
        assert_eq!(a, table_hash_from_rowhashes(more, GROUP_CONCAT_MAX_LEN));
        assert_ne!(a, table_hash_from_rowhashes(hs, usize::MAX));
        assert_eq!(table_hash_from_rowhashes(vec![], 1024), None);
        assert_eq!(format_hash_answer(None), "[(None,)]");
        assert_eq!(format_hash_answer(Some("ab")), "[('ab',)]");
    }
}
