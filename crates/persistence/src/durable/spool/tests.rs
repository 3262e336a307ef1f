//! The spool's own tests: appends, reopening, segments.

use super::*;
use uuid::Uuid;
use voice_proxy_domain::CallOutcome;
use voice_proxy_domain::CallRecord;

fn call(n: u8) -> Record {
    Record::Call(CallRecord {
        id: voice_proxy_domain::CallId::new(),
        conversation_uuid: Some(format!("CON-{n}")),
        uuid: None,
        pairing_id: None,
        caller: None,
        proxy_number: None,
        callee: None,
        outcome: voice_proxy_domain::CallOutcome::Anonymous,
        started_at: chrono::Utc::now(),
        endpoint_type: None,
    })
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("vp-spool-{}", Uuid::new_v4()))
}

fn read_all(dir: &Path) -> Vec<Record> {
    let mut read = Vec::new();
    for (_, path) in list_segments(dir).unwrap() {
        read.extend(read_segment(&path).unwrap().records);
    }
    read
}

#[test]
fn concurrent_appends_are_each_whole_and_in_their_order_after_a_reopen() {
    let dir = temp_dir();
    // Small segments, so that appends move on to new ones many times.
    let spool = Arc::new(Spool::open(&dir, 4096).unwrap());
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                let mine: Vec<Record> = (0..50).map(|_| call(t)).collect();
                for pair in mine.chunks(2) {
                    spool.append(pair.to_vec()).unwrap();
                }
                mine
            })
        })
        .collect();
    let written: Vec<Vec<Record>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(spool.depth(), 400);
    drop(spool);
    assert!(list_segments(&dir).unwrap().len() > 10);
    let reopened = Spool::open(&dir, 4096).unwrap();
    assert_eq!(reopened.depth(), 400);
    let read = read_all(&dir);
    for mine in written {
        let order: Vec<&Record> = read.iter().filter(|r| mine.contains(r)).collect();
        assert_eq!(order, mine.iter().collect::<Vec<_>>());
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn appended_records_survive_a_reopen_and_a_torn_line_is_skipped() {
    let dir = temp_dir();
    let spool = Spool::open(&dir, DEFAULT_SEGMENT_BYTES).unwrap();
    let records = vec![call(1), call(2)];
    spool.append(records.clone()).unwrap();
    assert_eq!(spool.depth(), 2);
    // A crash in the middle of the next append leaves half a line before the zeros.
    let (_, path) = list_segments(&dir).unwrap().pop().unwrap();
    let end = fs::read(&path)
        .unwrap()
        .iter()
        .position(|&b| b == 0)
        .unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"{\"call\": {\"id\": ", end as u64).unwrap();
    drop(spool);
    let reopened = Spool::open(&dir, DEFAULT_SEGMENT_BYTES).unwrap();
    assert_eq!(reopened.depth(), 2);
    assert_eq!(read_segment(&path).unwrap().records, records);
    fs::remove_dir_all(dir).unwrap();
}

/// Segments left by earlier versions are read by this one: the records' format (the
/// outcome as its name, the ids as UUID strings, `endpoint_type` absent before issue 11).
#[test]
fn records_written_by_earlier_versions_are_read() {
    let dir = temp_dir();
    fs::create_dir_all(&dir).unwrap();
    let lines = [
        r#"{"call":{"id":"01a20aca-a7bd-710b-befd-7b128b03ffa2","conversation_uuid":"CON-1","uuid":"CON-1-in","pairing_id":"01a20aca-0000-7000-8000-000000000001","caller":"16465550101","proxy_number":"12125550123","callee":"16465550102","outcome":"routed","started_at":"2026-11-24T10:00:00Z"}}"#,
        r#"{"call":{"id":"01a20aca-a7bd-710b-befd-7b128b03ffa3","conversation_uuid":"CON-2","uuid":null,"pairing_id":null,"caller":null,"proxy_number":"12125550123","callee":null,"outcome":"unsupported_caller","started_at":"2026-11-26T10:00:00Z","endpoint_type":"sip"}}"#,
        r#"{"event":{"payload":{"uuid":"CON-1-in","conversation_uuid":"CON-1","status":"started"},"received_at":"2026-11-24T10:00:01Z"}}"#,
    ];
    let path = dir.join("segment-000000000001.jsonl");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let read = read_segment(&path).unwrap();
    assert!(read.unreadable.is_empty(), "{:?}", read.unreadable);
    let [
        Record::Call(first),
        Record::Call(second),
        Record::Event(event),
    ] = read.records.as_slice()
    else {
        panic!("{:?}", read.records);
    };
    assert_eq!(first.outcome, CallOutcome::Routed);
    assert_eq!(
        first.pairing_id.map(|p| p.to_string()).as_deref(),
        Some("01a20aca-0000-7000-8000-000000000001")
    );
    assert_eq!(first.endpoint_type, None);
    assert_eq!(second.outcome, CallOutcome::UnsupportedCaller);
    assert_eq!(second.endpoint_type.as_deref(), Some("sip"));
    assert_eq!(event.payload["status"], "started");
    // And what this version writes reads back the same.
    let again: Vec<Record> = read
        .records
        .iter()
        .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
        .collect();
    assert_eq!(again, read.records);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_folder_in_use_by_another_spool_is_refused_until_that_one_is_closed() {
    let dir = temp_dir();
    let first = Spool::open(&dir, 4096).unwrap();
    first.append(vec![call(1)]).unwrap();
    let second = Spool::open(&dir, 4096).err().expect("the folder is taken");
    assert_eq!(second.kind(), std::io::ErrorKind::ResourceBusy);
    assert!(
        second
            .to_string()
            .contains("in use by another voice-proxy process"),
        "{second}"
    );
    // The first spool's record is untouched, and the folder is free once it is closed.
    assert_eq!(first.depth(), 1);
    drop(first);
    assert_eq!(Spool::open(&dir, 4096).unwrap().depth(), 1);
}

#[test]
fn a_whole_line_that_is_not_a_record_is_told_apart_from_a_torn_one() {
    let dir = temp_dir();
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("segment-000000000001.jsonl");
    let good = serde_json::to_string(&call(1)).unwrap();
    let foreign = r#"{"call":{"outcome":"not-an-outcome"}}"#;
    fs::write(&path, format!("{good}\n{foreign}\n{{\"call\": {{\"id")).unwrap();
    let read = read_segment(&path).unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.unreadable, [foreign], "the torn last line is not kept");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn appends_write_over_a_segment_given_its_full_size_up_front() {
    let dir = temp_dir();
    let size = 64 * 1024;
    let spool = Spool::open(&dir, size).unwrap();
    spool.append(vec![call(1)]).unwrap();
    let (_, first) = list_segments(&dir).unwrap().pop().unwrap();
    let meta = fs::metadata(&first).unwrap();
    assert_eq!(meta.len(), size, "the segment is zero-filled to its size");
    for _ in 0..20 {
        spool.append(vec![call(2)]).unwrap();
    }
    assert_eq!(
        fs::metadata(&first).unwrap().len(),
        size,
        "appends do not grow the file"
    );
    assert_eq!(list_segments(&dir).unwrap().len(), 1);
    assert_eq!(read_all(&dir).len(), 21);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_prepared_spare_is_where_appends_go_once_the_segment_is_full() {
    let dir = temp_dir();
    let spool = Spool::open(&dir, 4096).unwrap();
    spool.append(vec![call(1)]).unwrap();
    spool.prepare_spare().unwrap();
    spool.prepare_spare().unwrap();
    let segments = list_segments(&dir).unwrap();
    assert_eq!(
        segments.len(),
        2,
        "one spare, however often it is asked for"
    );
    let spare = segments[1].1.clone();
    assert_eq!(read_segment(&spare).unwrap().records, vec![]);
    let mut appended = 1;
    while list_segments(&dir).unwrap().len() == 2 && appended < 100 {
        spool.append(vec![call(3)]).unwrap();
        appended += 1;
    }
    assert!(
        !read_segment(&spare).unwrap().records.is_empty(),
        "the append that filled the first segment went to the spare"
    );
    assert_eq!(read_all(&dir).len(), appended);
    spool.seal_for_exit();
    fs::remove_dir_all(dir).unwrap();
}
