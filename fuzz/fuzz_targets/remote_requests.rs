//! Untrusted bytes → a remote API request (method, request target with its
//! query string, body) → every parser the server applies before acting:
//! routing, `?wait=`, the execute body into a plan, the `POST /remote/task`
//! body. The first byte picks the method; the next line is the target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesos_hook_executor::remote::parse_request;

const METHODS: [&[u8]; 5] = [b"GET", b"POST", b"DELETE", b"PUT", b"PATCH"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let method = METHODS[usize::from(pick) % METHODS.len()];
    let (target, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(nl) => (&rest[..nl], &rest[nl + 1..]),
        None => (rest, &[][..]),
    };
    // Weight the targets towards the routes that parse something.
    let target = String::from_utf8_lossy(target);
    let target = match pick / 64 {
        0 => format!("/remote/task{target}"),
        1 => format!("/remote/execute{target}"),
        2 => format!("/remote/{target}"),
        _ => target.into_owned(),
    };
    let _ = parse_request(method, &target, body);
});
