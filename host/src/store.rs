//! The embedded metadata store: one SQLite file in WAL mode with `synchronous=FULL`, its schema
//! and migrations (tracked in `PRAGMA user_version`).

use rusqlite::Connection;
use std::path::Path;

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);
CREATE TABLE versions (
    id           INTEGER PRIMARY KEY,
    org          TEXT NOT NULL REFERENCES orgs(id),
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    digest       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('private', 'public')),
    state        TEXT NOT NULL CHECK (state IN ('active', 'deprecated', 'blocked')),
    publisher    TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    description  TEXT NOT NULL,
    tags         TEXT NOT NULL,
    UNIQUE (org, name, version, revision)
);
CREATE INDEX versions_digest ON versions(digest);
CREATE TABLE installs (
    id             INTEGER PRIMARY KEY,
    org            TEXT NOT NULL REFERENCES orgs(id),
    pkg_org        TEXT NOT NULL,
    name           TEXT NOT NULL,
    version        TEXT NOT NULL,
    customisations TEXT NOT NULL,
    modified_by    TEXT,
    modified_at    INTEGER,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE TABLE instances (
    id          INTEGER PRIMARY KEY,
    org         TEXT NOT NULL REFERENCES orgs(id),
    install_id  INTEGER NOT NULL REFERENCES installs(id),
    name        TEXT NOT NULL,
    config      TEXT NOT NULL,
    secret_keys TEXT NOT NULL,
    secrets     BLOB NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE flows (
    id         INTEGER PRIMARY KEY,
    org        TEXT NOT NULL REFERENCES orgs(id),
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (org, name)
);
CREATE TABLE steps (
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    operation   TEXT NOT NULL,
    input       TEXT NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (flow_id, position)
);
CREATE INDEX steps_digest ON steps(digest);
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    org         TEXT NOT NULL REFERENCES orgs(id),
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    status      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    record      TEXT NOT NULL
);
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    org     TEXT NOT NULL,
    actor   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    before  TEXT NOT NULL,
    after   TEXT NOT NULL
);
CREATE INDEX audit_org ON audit(org, id);
"#,
    // 2: outbound origins granted to an install.
    "ALTER TABLE installs ADD COLUMN outbound TEXT NOT NULL DEFAULT '[]';",
    // 3: API tokens, stored as sha256 hashes.
    r#"
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,
    org        TEXT NOT NULL REFERENCES orgs(id),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'operator', 'viewer')),
    label      TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
"#,
];

/// Open (creating and migrating) the database at `path`.
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let conn = super::open(&path).unwrap();
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, super::MIGRATIONS.len());
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        super::open(&path).unwrap();
    }
}
