//! The floor for large files into the object store: `object_store`'s own
//! multipart upload of every file in a folder, with the part size and
//! parts in flight intake uses, to the store of `INTAKE_TEST_S3` (and the
//! `AWS_*` variables). Prints the seconds it took; `benches/scaleout.sh`
//! sets it beside intake's ingest of the same files.
//!
//! `cargo bench --bench s3_raw -- DIR`

use std::io::Read;
use std::time::Instant;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, WriteMultipart};

fn main() {
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench s3_raw -- DIR");
        std::process::exit(2);
    };
    let Ok(bucket) = std::env::var("INTAKE_TEST_S3") else {
        eprintln!("skipped: INTAKE_TEST_S3 is not set");
        return;
    };
    let bucket = bucket.trim_start_matches("s3://").to_owned();
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .expect("an S3 store from the environment");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the folder")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    let started = Instant::now();
    let mut bytes = 0u64;
    for (i, path) in files.iter().enumerate() {
        let mut f = std::fs::File::open(path).expect("a file");
        let key = Key::from(format!("raw/{}/{i}", std::process::id()));
        let upload = rt.block_on(store.put_multipart(&key)).expect("an upload");
        let mut w = {
            let _in = rt.enter();
            WriteMultipart::new_with_chunk_size(upload, 8 << 20)
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).expect("reading");
            if n == 0 {
                break;
            }
            bytes += n as u64;
            {
                let _in = rt.enter();
                w.write(&buf[..n]);
            }
            rt.block_on(w.wait_for_capacity(2)).expect("a part");
        }
        rt.block_on(w.finish()).expect("the upload's end");
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{secs:.3} s for {bytes} bytes in {} files", files.len());
}
