//! The panic record the hook writes to stderr inside a component.

use std::sync::{Arc, Mutex};

#[test]
fn panic_record_starts_with_marker_and_ends_with_location() {
    let captured = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = captured.clone();
    let me = std::thread::current().id();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Other tests run concurrently; keep only this thread's panics.
        if std::thread::current().id() == me {
            sink.lock()
                .unwrap()
                .push(cairn_sdk::__private::panic_record(info));
        }
    }));
    let line = line!() + 1;
    let _ = std::panic::catch_unwind(|| panic!("exploded: {}\nsecond line", 42));
    let _ = std::panic::catch_unwind(|| std::panic::panic_any(7_u8));
    std::panic::set_hook(previous);

    let records = captured.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:?}");
    let expected = format!(
        "cairn:panic: exploded: 42\nsecond line (at {}:{line}:",
        file!()
    );
    assert!(records[0].starts_with(&expected), "{:?}", records[0]);
    assert!(records[0].ends_with(")\n"), "{:?}", records[0]);
    assert!(
        records[1].starts_with("cairn:panic: Box<dyn Any> (at "),
        "{:?}",
        records[1]
    );
    assert_eq!(cairn_sdk::panic::PANIC_MARKER, "cairn:panic:");
}
