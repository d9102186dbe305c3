//! bytes → RecordIO records → `Event` decode, with the input split into reads
//! at a point chosen by the first byte, exactly as the live stream decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesos_hook_executor::agent::client::decode_chunks;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let split = usize::from(split).max(1);
    let _ = decode_chunks(rest.chunks(split), 1 << 20);
});
