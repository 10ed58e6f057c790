#[test]
fn a_line_past_the_cap_is_an_error_plain_or_packed_never_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("requests.jsonl");
    let long = vec![b'x'; (MAX_RECORD_LINE + 10) as usize];
    std::fs::write(&plain, [b"{}\n".as_slice(), &long].concat()).unwrap();
    let e = read_raw::<serde_json::Value>(&plain).err().unwrap().to_string();
    assert!(e.contains("requests.jsonl:2") && e.contains("longer than 16 MiB"), "{e}");
    std::fs::remove_file(&plain).unwrap();
    // A small gzip that unpacks to an endless line: refused at the cap, not unpacked whole.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for _ in 0..40 {
        gz.write_all(&vec![b'x'; 1 << 20]).unwrap();
    }
    std::fs::write(with_ext(&plain, "gz"), gz.finish().unwrap()).unwrap();
    let e = read_raw::<serde_json::Value>(&plain).err().unwrap().to_string();
    assert!(e.contains("requests.jsonl.gz:1") && e.contains("longer than 16 MiB"), "{e}");
}

use super::*;
use serde_json::Value;

#[test]
fn a_torn_last_line_is_tolerated_then_set_aside_before_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jsonl");
    append_jsonl(&path, &[serde_json::json!({"a": 1})], true).unwrap();
    OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"a\":").unwrap();
    let lines: Lines<Value> = parse_jsonl(&path, &std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((lines.items.len(), lines.torn), (1, true));
    append_jsonl(&path, &[serde_json::json!({"a": 2})], true).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
    assert_eq!(std::fs::read_to_string(dir.path().join("x.jsonl.torn")).unwrap(), "{\"a\":\n");
}

#[test]
fn a_bad_complete_line_or_bad_utf8_is_an_error_naming_the_line() {
    let p = Path::new("j.jsonl");
    let e = parse_jsonl::<Value>(p, b"{}\nnot json\n{}\n").err().unwrap().to_string();
    assert!(e.starts_with("j.jsonl:2: not a valid record"), "{e}");
    let e = parse_jsonl::<Value>(p, b"{}\n{\"\xff\"}\n").err().unwrap().to_string();
    assert!(e.starts_with("j.jsonl:2:3: invalid UTF-8"), "{e}");
}

#[test]
fn a_packed_document_reads_back_as_written_and_two_copies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("startup.json");
    assert_eq!(read_doc(&path).unwrap(), None);
    std::fs::write(&path, b"{\"a\": 1}\n").unwrap();
    assert_eq!(compress_doc(&path).unwrap().map(|(before, _)| before), Some(9));
    assert!(!path.exists());
    let (from, bytes) = read_doc(&path).unwrap().unwrap();
    assert_eq!((from, bytes), (with_ext(&path, "xz"), b"{\"a\": 1}\n".to_vec()));
    assert_eq!(compress_doc(&path).unwrap(), None, "nothing plain left to pack");
    std::fs::write(&path, b"{}").unwrap();
    let err = read_doc(&path).unwrap_err().to_string();
    assert!(err.contains("startup.json.xz is also present: keep one of the two"), "{err}");
    // A packed copy is never overwritten by packing another plain one: both stay.
    assert_eq!(compress_doc(&path).unwrap(), None);
    assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    assert_eq!(read_packed(&path).unwrap().unwrap().1, b"{\"a\": 1}\n".to_vec(), "the packed copy as it was");
}

#[test]
fn compressed_and_plain_parts_read_as_one_stream_and_compress_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    append_jsonl(&path, &[1, 2], false).unwrap();
    compress_raw::<u32>(&path).unwrap().unwrap();
    assert!(!path.exists() && with_ext(&path, "xz").exists());
    assert_eq!(compress_raw::<u32>(&path).unwrap(), None);
    append_jsonl(&path, &[3], false).unwrap();
    OpenOptions::new().append(true).open(&path).unwrap().write_all(b"[4").unwrap();
    assert_eq!(read_raw::<u32>(&path).unwrap(), vec![1, 2, 3]);
    compress_raw::<u32>(&path).unwrap().unwrap();
    assert_eq!(read_raw::<u32>(&path).unwrap(), vec![1, 2, 3]);
    assert_eq!(std::fs::read(dir.path().join("r.jsonl.torn")).unwrap(), b"[4\n");
}

#[test]
fn a_gzip_part_from_an_older_folder_reads_and_compresses_to_xz() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b"1\n2\n").unwrap();
    std::fs::write(with_ext(&path, "gz"), enc.finish().unwrap()).unwrap();
    append_jsonl(&path, &[3], false).unwrap();
    assert_eq!(read_raw::<u32>(&path).unwrap(), vec![1, 2, 3]);
    compress_raw::<u32>(&path).unwrap().unwrap();
    assert!(!with_ext(&path, "gz").exists() && !path.exists());
    assert_eq!(read_raw::<u32>(&path).unwrap(), vec![1, 2, 3]);
    std::fs::write(with_ext(&path, "gz"), b"").unwrap();
    let e = read_raw::<u32>(&path).err().unwrap().to_string();
    assert!(e.contains("keep one of the two"), "{e}");
}

#[test]
fn a_registered_secret_never_reaches_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-TEST-\"quoted\"-0123456789";
    assert!(forbid("short").is_err());
    forbid(key).unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.jsonl"));
    write_atomic(&a, format!("key {key} twice {key}").as_bytes()).unwrap();
    append_jsonl(&b, &[serde_json::json!({"message": format!("echoed: {key}")})], false).unwrap();
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "key [redacted] twice [redacted]");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "{\"message\":\"echoed: [redacted]\"}\n");
    // A log another process wrote, with the key split across the 1 MiB read blocks.
    let log = dir.path().join("server.log");
    let mut text = "x".repeat((1 << 20) - 5);
    text.push_str(key);
    text.push_str(" end");
    std::fs::write(&log, &text).unwrap();
    redact_file(&log).unwrap();
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(!after.contains("0123456789") && after.ends_with("[redacted] end"), "{}", &after[after.len() - 40..]);
}

#[test]
fn atomic_replace_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    write_atomic(&path, b"1").unwrap();
    write_atomic(&path, b"2").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"2");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
