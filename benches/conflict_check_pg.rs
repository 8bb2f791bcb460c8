//! The conflict check against PostgreSQL: a batch of 1,000 names looked up
//! and locked the way an ingest does it (`WriteTxn::lock` in a write
//! transaction), in an index of 10^4 and of 10^6 names, against a bare
//! batched primary-key lookup (`WHERE name = ANY($1)`) of the same names on
//! the same server, in one run: the names alone (which PostgreSQL answers
//! from the index, without reading a row) and the rows. Needs `INTAKE_TEST_PG`; the indexes are
//! built once (schemas `bench_cc_*`) and kept for later runs.
//!
//! `cargo bench --bench conflict_check_pg`

use std::time::Instant;

use intake::store::{Index, PgAddress, PgIndex};

const BATCH: usize = 1000;
const ROUNDS: usize = 40;

fn name(i: u64) -> String {
    format!("d{:04}/f{i:09}.txt", i % 5000)
}

fn build(pg: &str, n: u64) -> (PgIndex, tokio_postgres::Client, tokio::runtime::Runtime) {
    let schema = format!("bench_cc_{n}");
    let url = format!("{pg}?schema={schema}");
    let index = PgIndex::open(
        PgAddress::parse(&url).expect("an address"),
        true,
        Some("/tmp"),
    )
    .expect("the index");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(
            &format!("{pg}?options=-csearch_path%3D{schema}"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("a connection");
        tokio::spawn(conn);
        client
    });
    rt.block_on(async {
        let have: i64 = client
            .query_one("SELECT count(*) FROM entries", &[])
            .await
            .expect("a count")
            .get(0);
        if have as u64 != n {
            eprintln!("building {n} names in schema {schema} (once)");
            client
                .batch_execute(&format!(
                    "TRUNCATE entries, blobs CASCADE;
                     INSERT INTO blobs (hash, size, data, created_at)
                       VALUES ('\\x{h}', 1, '\\x00', 0);
                     INSERT INTO entries (name, hash, size, session_id, ingested_at, version)
                       SELECT format('d%s/f%s.txt', lpad((i % 5000)::text, 4, '0'), lpad(i::text, 9, '0')),
                              '\\x{h}', 1, '00000000-0000-0000-0000-000000000000', 0, 1
                       FROM generate_series(0, {last}) AS i;",
                    h = "ab".repeat(32),
                    last = n - 1
                ))
                .await
                .expect("the names");
            client
                .batch_execute("VACUUM ANALYZE entries")
                .await
                .expect("a vacuum");
        }
    });
    (index, client, rt)
}

fn batch(n: u64, seed: &mut u64) -> Vec<String> {
    let mut names: Vec<String> = (0..BATCH)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            name(*seed % n)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let Ok(pg) = std::env::var("INTAKE_TEST_PG") else {
        eprintln!(
            "skipped: INTAKE_TEST_PG is not set (bash .ci/with-servers cargo bench --bench conflict_check_pg)"
        );
        return;
    };
    let small = build(&pg, 10_000);
    let large = build(&pg, 1_000_000);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let (mut s, mut l, mut bare, mut full) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let lock = |ix: &PgIndex, names: &[String]| {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let t = Instant::now();
        let mut txn = ix.begin(true).expect("a transaction");
        let found = txn.lock(&refs).expect("the lookup");
        assert_eq!(found.len(), refs.len());
        drop(txn);
        t.elapsed().as_secs_f64() * 1e6 / refs.len() as f64
    };
    // Each measurement on a batch of its own, so that none finds pages
    // another one just read.
    let bare_lookup = |sql: &str, names: &[String]| {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_, client, rt) = &large;
        let t = Instant::now();
        let rows = rt
            .block_on(client.query(sql, &[&refs]))
            .expect("the bare lookup");
        assert_eq!(rows.len(), refs.len());
        t.elapsed().as_secs_f64() * 1e6 / refs.len() as f64
    };
    for _ in 0..ROUNDS {
        s.push(lock(&small.0, &batch(10_000, &mut seed)));
        l.push(lock(&large.0, &batch(1_000_000, &mut seed)));
        let names = "SELECT name FROM entries WHERE name = ANY($1)";
        bare.push(bare_lookup(names, &batch(1_000_000, &mut seed)));
        // The same lookup returning the rows (what a check must read).
        let rows = "SELECT * FROM entries WHERE name = ANY($1)";
        full.push(bare_lookup(rows, &batch(1_000_000, &mut seed)));
    }
    let (s, l, bare, rows) = (median(s), median(l), median(bare), median(full));
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!("conflict check, batches of {BATCH} names, median of {ROUNDS}:");
    println!(
        "  10^4 names: {s:.2} µs/name; 10^6 names: {l:.2} µs/name; at 10^6, bare `SELECT name … = ANY($1)` (index only): {bare:.2} µs/name, bare `SELECT * … = ANY($1)`: {rows:.2} µs/name"
    );
    println!(
        "  10^6 / 10^4 = {:.2} (target <= 2) {}",
        l / s,
        verdict(l / s <= 2.0)
    );
    println!(
        "  10^6 / bare names = {:.2} (target <= 1.5) {}",
        l / bare,
        verdict(l / bare <= 1.5)
    );
    println!(
        "  10^6 / bare rows = {:.2} (target <= 1.5) {}",
        l / rows,
        verdict(l / rows <= 1.5)
    );
}
