//! What skipping a Hessian value allocates, counted by a global allocator of this test
//! binary's own (one test: nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use layotto_fast_native::hessian::Decoder;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn skipping_a_value_no_reference_can_reach_builds_nothing() {
    // Two million empty lists in one list: decoded to be dropped, they took over 200 MB
    // (a value and a reference slot each) for a 2 MB input.
    let mut body = vec![0x57];
    body.extend(std::iter::repeat_n(0x78, 2_000_000));
    body.extend_from_slice(b"Z\x03end");
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut d = Decoder::new(&body);
    d.skip_value().unwrap();
    assert_eq!(d.read_string().unwrap(), "end");
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(
        peak < body.len(),
        "{peak} bytes allocated for a {}-byte input",
        body.len()
    );
}
