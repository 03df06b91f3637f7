use fuse_tests::TestSession;

#[test]
fn write_read_and_usage() {
    let s = TestSession::local(Some(1 << 20), None);
    std::fs::write(s.path("a"), b"hello").unwrap();
    assert_eq!(std::fs::read(s.path("a")).unwrap(), b"hello");
    std::fs::create_dir(s.path("d")).unwrap();
    std::os::unix::fs::symlink("a", s.path("d/l")).unwrap();
    std::fs::hard_link(s.path("a"), s.path("d/h")).unwrap();
    let names: Vec<_> = std::fs::read_dir(s.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2);
    eprintln!("used {}", s.used_bytes());
}
