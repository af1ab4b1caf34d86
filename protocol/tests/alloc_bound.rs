//! The decoder never asks for an allocation larger than the cap, whatever the bytes: checked
//! with a global allocator that records the largest request made on the test's thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use eventor_protocol::{
    decode_frame, FrameConfig, FrameLimit, Hello, ProtocolError, ToAgent, ToCoordinator,
    WireMessage, MAGIC,
};
use proptest::collection::vec;
use proptest::prelude::*;

struct Recording;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while a thread shuts down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

const CAP: u32 = 1 << 20;

/// The largest single allocation made while decoding `bytes` as `T` (until error or need-more).
fn largest_allocation<T: WireMessage>(bytes: &[u8]) -> (usize, Option<ProtocolError>) {
    let config = FrameConfig {
        limit: FrameLimit::from_bytes(CAP as u64).unwrap(),
        ..FrameConfig::default()
    };
    let mut buf = BytesMut::from(bytes);
    LARGEST.with(|l| l.set(0));
    let error = loop {
        match decode_frame::<T>(&mut buf, &config) {
            Ok(Some(_)) => continue,
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    (LARGEST.with(Cell::get), error)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// bincode's u64 varint: the 0xfd marker, then eight little-endian bytes.
fn varint_u64(n: u64) -> Vec<u8> {
    [vec![0xfd], n.to_le_bytes().to_vec()].concat()
}

/// String lengths just over the cap, at the largest `usize`, and in between: each is refused
/// before its string is allocated.
#[test]
fn forged_string_lengths_never_allocate_beyond_the_cap() {
    for len in [CAP as u64 + 1, 1 << 40, u64::MAX >> 1, u64::MAX] {
        // ToCoordinator::Error { key: None, message: <len bytes, absent> }
        let payload = [vec![4, 0], varint_u64(len)].concat();
        let (largest, error) = largest_allocation::<ToCoordinator>(&frame(&payload));
        assert!(
            matches!(error, Some(ProtocolError::Decode { .. })),
            "{error:?}"
        );
        assert!(
            largest <= CAP as usize,
            "allocated {largest} bytes for length {len}"
        );
    }
}

/// A forged sequence length (the env of a dispatched command) is bounded too.
#[test]
fn forged_sequence_lengths_never_allocate_beyond_the_cap() {
    // ToAgent::Dispatch { key: five empty/zero fields, work: Command { "", env: <huge> } }
    let key = [0u8, 0, 0, 0, 0];
    let payload = [vec![0], key.to_vec(), vec![0, 0], varint_u64(u64::MAX >> 4)].concat();
    let (largest, error) = largest_allocation::<ToAgent>(&frame(&payload));
    assert!(error.is_some());
    assert!(largest <= CAP as usize, "allocated {largest} bytes");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_payloads_never_allocate_beyond_the_cap(
        payload in vec(any::<u8>(), 0..256),
        lengths in vec((any::<usize>(), any::<u64>()), 0..3),
    ) {
        // Random bytes with a few big varints planted where length prefixes may be read.
        let mut payload = payload;
        for (at, len) in lengths {
            let at = at % (payload.len() + 1);
            payload.splice(at..at, varint_u64(len));
        }
        let bytes = frame(&payload);
        for largest in [
            largest_allocation::<ToAgent>(&bytes).0,
            largest_allocation::<ToCoordinator>(&bytes).0,
            largest_allocation::<Hello>(&bytes).0,
        ] {
            prop_assert!(largest <= CAP as usize, "allocated {} bytes", largest);
        }
    }
}
