//! The emulator against a real hyper client over TCP.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1, header::HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::codec::Decoder;

use super::*;
use crate::{
    agent::recordio::RecordIoCodec,
    proto::v1::{check_info, CheckStatusInfo},
};

const T: Duration = Duration::from_secs(5);
const PB: &str = "application/x-protobuf";

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

async fn send(
    sender: &mut Sender,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> hyper::Response<Incoming> {
    sender.ready().await.expect("connection ready");
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    tokio::time::timeout(T, sender.send_request(req))
        .await
        .expect("response in time")
        .expect("response")
}

/// POST and read the whole (non-streaming) answer.
async fn post(
    sender: &mut Sender,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, String) {
    let resp = send(sender, "POST", AGENT, headers, body).await;
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(T, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn post_pb(sender: &mut Sender, call: &Call) -> (StatusCode, String) {
    let (status, _, body) = post(sender, &[("content-type", PB)], call.encode_to_vec()).await;
    (status, body)
}

const AGENT: &str = "/slave(1)/api/v1/executor";

fn call_of(kind: call::Type) -> Call {
    Call {
        executor_id: ExecutorId {
            value: DEFAULT_EXECUTOR_ID.to_owned(),
        },
        framework_id: FrameworkId {
            value: DEFAULT_FRAMEWORK_ID.to_owned(),
        },
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

fn subscribe_call(sub: call::Subscribe) -> Call {
    Call {
        subscribe: Some(sub),
        ..call_of(call::Type::Subscribe)
    }
}

fn status(task: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: TaskId {
            value: task.to_owned(),
        },
        state: state as i32,
        uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
        source: Some(task_status::Source::Executor as i32),
        executor_id: Some(ExecutorId {
            value: DEFAULT_EXECUTOR_ID.to_owned(),
        }),
        timestamp: Some(1.0),
        ..Default::default()
    }
}

fn update_call(status: TaskStatus) -> Call {
    Call {
        update: Some(call::Update { status }),
        ..call_of(call::Type::Update)
    }
}

/// The client side of a SUBSCRIBE stream.
struct Stream {
    _sender: Sender,
    body: Incoming,
    buf: BytesMut,
    codec: RecordIoCodec,
    json: bool,
}

impl Stream {
    async fn open(addr: SocketAddr, accept: &str) -> (Self, HeaderMap) {
        Self::open_with(addr, accept, call::Subscribe::default()).await
    }

    async fn open_with(addr: SocketAddr, accept: &str, sub: call::Subscribe) -> (Self, HeaderMap) {
        let mut sender = connect(addr).await;
        let resp = send(
            &mut sender,
            "POST",
            AGENT,
            &[("content-type", PB), ("accept", accept)],
            subscribe_call(sub).encode_to_vec(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let (parts, body) = resp.into_parts();
        let json = parts
            .headers
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        (
            Self {
                _sender: sender,
                body,
                buf: BytesMut::new(),
                codec: RecordIoCodec::default(),
                json,
            },
            parts.headers,
        )
    }

    /// Next event, or `None` at EOF.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(record) = self.codec.decode(&mut self.buf).expect("valid recordio") {
                return Some(if self.json {
                    serde_json::from_slice(&record).expect("json event")
                } else {
                    Event::decode(record).expect("protobuf event")
                });
            }
            match tokio::time::timeout(T, self.body.frame())
                .await
                .expect("event in time")
            {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }

    async fn next_type(&mut self) -> event::Type {
        let ev = self.next().await.expect("an event, not EOF");
        event::Type::try_from(ev.r#type.unwrap_or_default()).expect("known event type")
    }
}

#[tokio::test]
async fn status_codes_follow_the_handler_order() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    let mut c = connect(emu.addr()).await;
    let sub = subscribe_call(call::Subscribe::default()).encode_to_vec();

    emu.set_starting(true);
    assert_eq!(
        post_pb(&mut c, &subscribe_call(call::Subscribe::default()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    emu.set_starting(false);
    emu.set_containerizer_recovering(true);
    let (code, body) = post_pb(&mut c, &subscribe_call(call::Subscribe::default())).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Agent has not finished recovery"
        )
    );
    emu.set_containerizer_recovering(false);

    let resp = send(
        &mut c,
        "POST",
        "/other",
        &[("content-type", PB)],
        sub.clone(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let _ = resp.into_body().collect().await;

    let resp = send(&mut c, "GET", "/api/v1/executor", &[], Vec::new()).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        resp.headers().get("allow").map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        &body[..],
        b"405 Method Not Allowed. Expecting one of { 'POST' }, but received 'GET'."
    );

    let (code, headers, body) = post(&mut c, &[], sub.clone()).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present"
        )
    );
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain; charset=utf-8"[..])
    );

    let (code, _, body) = post(&mut c, &[("content-type", PB)], vec![0xff, 0xff, 0xff]).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Failed to parse body into Call protobuf"
        )
    );

    // A missing required field (executor_id) fails protobuf parsing too.
    let mut no_executor = Vec::new();
    prost::encoding::message::encode(
        2,
        &FrameworkId {
            value: DEFAULT_FRAMEWORK_ID.to_owned(),
        },
        &mut no_executor,
    );
    prost::encoding::int32::encode(3, &(call::Type::Subscribe as i32), &mut no_executor);
    prost::encoding::message::encode(4, &call::Subscribe::default(), &mut no_executor);
    let (code, _, body) = post(&mut c, &[("content-type", PB)], no_executor).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Failed to parse body into Call protobuf"
        )
    );

    let (code, _, body) = post(
        &mut c,
        &[("content-type", "application/json")],
        b"{nope".to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body.starts_with("Failed to parse body into JSON: "),
        "{body}"
    );
    let (code, _, body) = post(
        &mut c,
        &[("content-type", "application/json")],
        br#"{"type":"SUBSCRIBE"}"#.to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body.starts_with("Failed to convert JSON into Call protobuf: "),
        "{body}"
    );

    let json_heartbeat = br#"{"type":"HEARTBEAT","executor_id":{"value":"unused"},"framework_id":{"value":"unused"}}"#.to_vec();
    let (code, _, body) = post(
        &mut c,
        &[("content-type", "application/json; charset=utf-8")],
        json_heartbeat.clone(),
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Expecting 'Content-Type' of application/json or application/x-protobuf"
        )
    );
    // HEARTBEAT is accepted before any id check, even unsubscribed.
    let (code, _, body) = post(
        &mut c,
        &[("content-type", "application/json")],
        json_heartbeat,
    )
    .await;
    assert_eq!((code, body.as_str()), (StatusCode::ACCEPTED, ""));

    for accept in [
        "application/recordio",
        "application/json;q=0, application/x-protobuf;q=0",
    ] {
        let (code, _, body) = post(
            &mut c,
            &[("content-type", PB), ("accept", accept)],
            sub.clone(),
        )
        .await;
        assert_eq!(
            (code, body.as_str()),
            (
                StatusCode::NOT_ACCEPTABLE,
                "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'"
            )
        );
    }

    let (code, body) = post_pb(&mut c, &update_call(status("t1", TaskState::TaskRunning))).await;
    assert_eq!(
        (code, body.as_str()),
        (StatusCode::FORBIDDEN, "Executor is not subscribed")
    );
    let mut wrong = update_call(status("t1", TaskState::TaskRunning));
    wrong.framework_id.value = "other".to_owned();
    assert_eq!(
        post_pb(&mut c, &wrong).await,
        (
            StatusCode::BAD_REQUEST,
            "Framework cannot be found".to_owned()
        )
    );
    let mut wrong = subscribe_call(call::Subscribe::default());
    wrong.executor_id.value = "other".to_owned();
    assert_eq!(
        post_pb(&mut c, &wrong).await,
        (
            StatusCode::BAD_REQUEST,
            "Executor cannot be found".to_owned()
        )
    );

    let (_stream, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(
        post_pb(&mut c, &call_of(call::Type::Unknown)).await,
        (
            StatusCode::NOT_IMPLEMENTED,
            "501 Not Implemented.".to_owned()
        )
    );
    let message = Call {
        message: Some(call::Message {
            data: b"hi".to_vec(),
        }),
        ..call_of(call::Type::Message)
    };
    assert_eq!(
        post_pb(&mut c, &message).await,
        (StatusCode::ACCEPTED, String::new())
    );
    assert_eq!(emu.messages(), vec![b"hi".to_vec()]);
    assert!(
        emu.violations().iter().any(|v| v.contains("415")),
        "{:?}",
        emu.violations()
    );
    let statuses: Vec<u16> = emu.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses.first(), Some(&404));
}

#[tokio::test]
async fn validation_failures_name_the_reason() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    let mut c = connect(emu.addr()).await;
    let prefix = "Failed to validate Executor::Call: ";
    let with_status = |f: &dyn Fn(&mut TaskStatus)| {
        let mut s = status("t1", TaskState::TaskRunning);
        f(&mut s);
        update_call(s)
    };
    let cases: Vec<(Call, String)> = vec![
        (Call { r#type: None, ..call_of(call::Type::Heartbeat) }, "Expecting 'type' to be present".into()),
        (Call { r#type: Some(77), ..call_of(call::Type::Heartbeat) }, "Expecting 'type' to be present".into()),
        (call_of(call::Type::Subscribe), "Expecting 'subscribe' to be present".into()),
        (call_of(call::Type::Update), "Expecting 'update' to be present".into()),
        (call_of(call::Type::Message), "Expecting 'message' to be present".into()),
        (with_status(&|s| s.uuid = None), "Expecting 'uuid' to be present".into()),
        (with_status(&|s| s.uuid = Some(vec![0x40; 15])), "Not a valid UUID".into()),
        (
            with_status(&|s| {
                let mut v7 = uuid::Uuid::new_v4().as_bytes().to_vec();
                v7[6] = 0x70 | (v7[6] & 0x0f);
                s.uuid = Some(v7);
            }),
            "Not a valid UUID".into(),
        ),
        (
            with_status(&|s| s.executor_id = Some(ExecutorId { value: "x".into() })),
            "ExecutorID in Call: executor-1 does not match ExecutorID in TaskStatus: x".into(),
        ),
        (
            with_status(&|s| s.source = None),
            "Received Call from executor executor-1 of framework framework-1 with invalid source, expecting 'SOURCE_EXECUTOR'".into(),
        ),
        (
            with_status(&|s| s.source = Some(task_status::Source::Master as i32)),
            "Received Call from executor executor-1 of framework framework-1 with invalid source, expecting 'SOURCE_EXECUTOR'".into(),
        ),
        (
            with_status(&|s| s.state = TaskState::TaskStaging as i32),
            "Received TASK_STAGING from executor executor-1 of framework framework-1 which is not allowed".into(),
        ),
        (with_status(&|s| s.check_status = Some(CheckStatusInfo::default())), "CheckStatusInfo must specify 'type'".into()),
        (
            with_status(&|s| {
                s.check_status = Some(CheckStatusInfo { r#type: Some(check_info::Type::Http as i32), ..Default::default() });
            }),
            "Expecting 'http' to be set for HTTP check's status".into(),
        ),
    ];
    for (call, reason) in cases {
        let (code, body) = post_pb(&mut c, &call).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{reason}");
        assert_eq!(body, format!("{prefix}{reason}"));
    }
    assert!(emu.violations().iter().any(|v| v.contains("TASK_STAGING")));
}

#[test]
fn accept_negotiation_prefers_json_and_honours_q0() {
    use server::accepts;
    let json = "application/json";
    assert!(accepts(None, json) && accepts(Some(""), json) && accepts(Some("*/*"), json));
    assert!(!accepts(Some(PB), json) && accepts(Some(PB), PB));
    assert!(accepts(
        Some("application/*;q=0.1, application/x-protobuf"),
        json
    ));
    assert!(!accepts(Some("application/json;q=0, */*"), json));
    assert!(accepts(Some("application/json;q=0, */*"), PB));
    assert!(
        !accepts(Some("application/recordio"), json) && !accepts(Some("application/recordio"), PB)
    );
}

#[tokio::test]
async fn subscribe_sends_subscribed_then_queued_launch() {
    let opts = EmulatorOptions {
        capabilities: vec![framework_info::capability::Type::TaskKillingState],
        ..EmulatorOptions::default()
    };
    let emu = AgentEmulator::start(opts).await.expect("start");
    emu.launch(TaskInfo {
        agent_id: AgentId::default(),
        executor: None,
        ..task_info("t1", None)
    });
    assert!(!emu.stream_open());

    let (mut stream, headers) = Stream::open(emu.addr(), PB).await;
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(PB.as_bytes())
    );
    let ev = stream.next().await.expect("SUBSCRIBED");
    let subscribed = ev.subscribed.expect("subscribed payload");
    assert_eq!(
        subscribed.framework_info.id.map(|i| i.value).as_deref(),
        Some(DEFAULT_FRAMEWORK_ID)
    );
    assert_eq!(subscribed.framework_info.capabilities.len(), 1);
    assert_eq!(
        subscribed.agent_info.id.map(|i| i.value).as_deref(),
        Some(DEFAULT_AGENT_ID)
    );
    assert_eq!(
        subscribed.agent_info.port,
        Some(i32::from(emu.addr().port()))
    );
    assert!(subscribed.container_id.is_some());
    let launch = stream
        .next()
        .await
        .expect("LAUNCH")
        .launch
        .expect("launch payload");
    assert_eq!(launch.task.task_id.value, "t1");
    assert_eq!(launch.task.agent_id.value, DEFAULT_AGENT_ID);
    assert!(launch.task.executor.is_some());
    assert!(emu.stream_open());
    assert_eq!(emu.executor_phase(), ExecutorPhase::Running);
    emu.wait_subscribed(1, T).await.expect("subscribed");

    // JSON is chosen whenever acceptable; the records are JSON events.
    let (mut json_stream, headers) =
        Stream::open(emu.addr(), "application/x-protobuf, */*;q=0.1").await;
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    assert_eq!(json_stream.next_type().await, event::Type::Subscribed);
}

#[tokio::test]
async fn updates_are_acknowledged_deduplicated_and_first_terminal_wins() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    emu.launch(emu.task_info("t1", None));
    let (mut stream, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(stream.next_type().await, event::Type::Subscribed);
    assert_eq!(stream.next_type().await, event::Type::Launch);
    let mut c = connect(emu.addr()).await;

    let running = status("t1", TaskState::TaskRunning);
    for _ in 0..2 {
        assert_eq!(
            post_pb(&mut c, &update_call(running.clone())).await.0,
            StatusCode::ACCEPTED
        );
        let ack = stream
            .next()
            .await
            .expect("ACK")
            .acknowledged
            .expect("ack payload");
        assert_eq!(
            (ack.task_id.value.as_str(), Some(&ack.uuid)),
            ("t1", running.uuid.as_ref())
        );
    }
    assert!(emu.status_log()[1].duplicate);

    for state in [TaskState::TaskFinished, TaskState::TaskFailed] {
        let s = status("t1", state);
        assert_eq!(
            post_pb(&mut c, &update_call(s.clone())).await.0,
            StatusCode::ACCEPTED
        );
        let ack = stream
            .next()
            .await
            .expect("ACK")
            .acknowledged
            .expect("ack payload");
        assert_eq!(Some(&ack.uuid), s.uuid.as_ref());
    }
    assert!(emu.status_log()[3].after_terminal);
    assert_eq!(
        emu.states("t1"),
        vec![TaskState::TaskRunning, TaskState::TaskFinished]
    );
    assert_eq!(emu.updates().len(), 4);

    // A foreign agent_id: 202, never ACKed (the next event is our heartbeat).
    let mut foreign = status("t1", TaskState::TaskRunning);
    foreign.agent_id = Some(AgentId {
        value: "elsewhere".to_owned(),
    });
    assert_eq!(
        post_pb(&mut c, &update_call(foreign)).await.0,
        StatusCode::ACCEPTED
    );
    emu.heartbeat();
    assert_eq!(stream.next_type().await, event::Type::Heartbeat);
    assert!(emu.violations().iter().any(|v| v.contains("elsewhere")));

    // Withheld ACKs come out when released; injected failures are not processed.
    emu.withhold_acks(true);
    let starting = status("t2", TaskState::TaskStarting);
    assert_eq!(
        post_pb(&mut c, &update_call(starting.clone())).await.0,
        StatusCode::ACCEPTED
    );
    emu.fail_next_updates(503, 1);
    assert_eq!(
        post_pb(&mut c, &update_call(status("t2", TaskState::TaskRunning)))
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    emu.heartbeat();
    assert_eq!(stream.next_type().await, event::Type::Heartbeat);
    emu.withhold_acks(false);
    let ack = stream
        .next()
        .await
        .expect("released ACK")
        .acknowledged
        .expect("ack payload");
    assert_eq!(Some(&ack.uuid), starting.uuid.as_ref());
    assert_eq!(emu.states("t2"), vec![TaskState::TaskStarting]);
    let state = emu
        .wait_state("t1", TaskState::TaskFinished, T)
        .await
        .expect("finished");
    assert_eq!(state.uuid.map(|u| u.len()), Some(16));
}

#[tokio::test]
async fn a_new_subscribe_closes_the_previous_stream() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    let (mut first, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(first.next_type().await, event::Type::Subscribed);
    let (mut second, _) = Stream::open(emu.addr(), PB).await;
    assert!(
        first.next().await.is_none(),
        "first stream must end with EOF"
    );
    assert_eq!(second.next_type().await, event::Type::Subscribed);
    emu.wait_subscribed(2, T).await.expect("two subscriptions");
    assert!(emu.stream_open());

    emu.close_stream();
    assert!(second.next().await.is_none());
    assert!(!emu.stream_open());

    // After shutdown() a SUBSCRIBE only gets SHUTDOWN, then EOF.
    emu.shutdown();
    let (mut third, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(third.next_type().await, event::Type::Shutdown);
    assert!(third.next().await.is_none());
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[tokio::test]
async fn resubscribe_processes_unacked_updates_and_loses_unlisted_tasks() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    for id in ["t1", "t2", "t3"] {
        emu.launch(emu.task_info(id, None));
    }
    let (mut stream, _) = Stream::open(emu.addr(), PB).await;
    for _ in 0..4 {
        stream.next().await.expect("SUBSCRIBED / LAUNCH");
    }
    let mut c = connect(emu.addr()).await;
    let running = status("t1", TaskState::TaskRunning);
    assert_eq!(
        post_pb(&mut c, &update_call(running.clone())).await.0,
        StatusCode::ACCEPTED
    );
    stream.next().await.expect("ACK");

    let mut bad = status("t3", TaskState::TaskRunning);
    bad.uuid = Some(vec![1, 2, 3]);
    let sub = call::Subscribe {
        unacknowledged_tasks: vec![emu.task_info("t3", None)],
        unacknowledged_updates: vec![
            call::Update {
                status: running.clone(),
            },
            call::Update { status: bad },
        ],
    };
    let (mut again, _) = Stream::open_with(emu.addr(), PB, sub).await;
    assert_eq!(again.next_type().await, event::Type::Subscribed);
    let ack = again
        .next()
        .await
        .expect("re-ACK")
        .acknowledged
        .expect("ack payload");
    assert_eq!(Some(&ack.uuid), running.uuid.as_ref());

    // t2 was launched, never updated and not listed: the agent marks it lost.
    assert_eq!(emu.states("t2"), vec![TaskState::TaskLost]);
    let lost = emu
        .status_log()
        .into_iter()
        .find(|r| r.status.task_id.value == "t2")
        .expect("t2 record");
    assert_eq!(lost.origin, StatusOrigin::Agent);
    assert_eq!(
        lost.status.reason,
        Some(task_status::Reason::AgentRestarted as i32)
    );
    assert!(emu.states("t3").is_empty());
    assert!(
        emu.violations().iter().any(|v| v.contains("invalid uuid")),
        "{:?}",
        emu.violations()
    );
}

#[tokio::test]
async fn a_request_on_the_subscribe_connection_is_a_violation() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    let mut raw = TcpStream::connect(emu.addr()).await.expect("connect");
    let request = |body: &[u8]| {
        let mut r =
            format!("POST {AGENT} HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\nAccept: {PB}\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        r.extend_from_slice(body);
        r
    };
    raw.write_all(&request(
        &subscribe_call(call::Subscribe::default()).encode_to_vec(),
    ))
    .await
    .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(T, raw.read(&mut buf))
        .await
        .expect("read in time")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    emu.wait_subscribed(1, T).await.expect("subscribed");

    raw.write_all(&request(&call_of(call::Type::Heartbeat).encode_to_vec()))
        .await
        .expect("write");
    emu.wait_for(T, |e| {
        e.violations()
            .into_iter()
            .find(|v| v.contains("arrived on the open SUBSCRIBE connection"))
    })
    .await
    .expect("violation recorded");
}

#[tokio::test]
async fn restart_refuses_connections_then_recovers() {
    let opts = EmulatorOptions {
        checkpoint: true,
        ..EmulatorOptions::default()
    };
    let emu = AgentEmulator::start(opts).await.expect("start");
    let (mut stream, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(stream.next_type().await, event::Type::Subscribed);

    let restarting = emu.clone();
    let restart = tokio::spawn(async move {
        restarting
            .restart(Duration::from_millis(500), Duration::from_millis(1500))
            .await
    });
    assert!(stream.next().await.is_none(), "stream ends on restart");
    emu.wait_for(T, |e| (!e.stream_open()).then_some(()))
        .await
        .expect("stream closed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(emu.addr()).await.is_err(),
        "connections refused while down"
    );
    restart
        .await
        .expect("restart task")
        .expect("listening again");

    let mut c = connect(emu.addr()).await;
    let update = update_call(status("t1", TaskState::TaskRunning));
    assert_eq!(
        post_pb(&mut c, &update).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(emu.executor_phase(), ExecutorPhase::Registering);
    let (mut again, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(again.next_type().await, event::Type::Subscribed);
    assert_eq!(
        post_pb(&mut c, &update).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(post_pb(&mut c, &update).await.0, StatusCode::ACCEPTED);
    assert_eq!(again.next_type().await, event::Type::Acknowledged);
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
}

#[tokio::test]
async fn missed_reregistration_and_lost_framework_after_restart() {
    let opts = EmulatorOptions {
        checkpoint: true,
        ..EmulatorOptions::default()
    };
    let emu = AgentEmulator::start(opts).await.expect("start");
    emu.enforce_reregistration(true);
    emu.launch(emu.task_info("t1", None));
    let (mut stream, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(stream.next_type().await, event::Type::Subscribed);
    assert_eq!(stream.next_type().await, event::Type::Launch);
    emu.restart(Duration::from_millis(50), Duration::from_millis(200))
        .await
        .expect("restart");
    emu.wait_for(T, |e| {
        (e.executor_phase() == ExecutorPhase::Gone).then_some(())
    })
    .await
    .expect("destroyed");
    assert_eq!(emu.states("t1"), vec![TaskState::TaskLost]);
    let mut c = connect(emu.addr()).await;
    let sub = subscribe_call(call::Subscribe::default());
    assert_eq!(
        post_pb(&mut c, &sub).await,
        (
            StatusCode::BAD_REQUEST,
            "Executor cannot be found".to_owned()
        )
    );

    // Without checkpointing the agent does not recover the framework at all.
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    emu.restart(Duration::from_millis(50), Duration::from_millis(50))
        .await
        .expect("restart");
    let mut c = connect(emu.addr()).await;
    assert_eq!(
        post_pb(&mut c, &sub).await,
        (
            StatusCode::BAD_REQUEST,
            "Framework cannot be found".to_owned()
        )
    );
}

#[tokio::test]
async fn auth_token_is_required_and_env_is_complete() {
    let opts = EmulatorOptions {
        auth_token: Some("sekrit".to_owned()),
        checkpoint: true,
        ..EmulatorOptions::default()
    };
    let emu = AgentEmulator::start(opts).await.expect("start");
    let mut c = connect(emu.addr()).await;
    let (code, headers, _) = post(
        &mut c,
        &[("content-type", PB)],
        call_of(call::Type::Heartbeat).encode_to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&br#"Bearer realm="mesos-agent-executor""#[..])
    );
    let (code, _, _) = post(
        &mut c,
        &[("content-type", PB), ("authorization", "Bearer sekrit")],
        call_of(call::Type::Heartbeat).encode_to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);

    let env: HashMap<String, String> = emu.executor_env().into_iter().collect();
    let port = emu.addr().port();
    assert_eq!(
        env.get("MESOS_SLAVE_PID"),
        Some(&format!("slave(1)@127.0.0.1:{port}"))
    );
    assert_eq!(env.get("MESOS_CHECKPOINT").map(String::as_str), Some("1"));
    assert_eq!(
        env.get("MESOS_SUBSCRIPTION_BACKOFF_MAX")
            .map(String::as_str),
        Some("2secs")
    );
    assert_eq!(
        env.get("MESOS_EXECUTOR_AUTHENTICATION_TOKEN")
            .map(String::as_str),
        Some("sekrit")
    );
    assert!(!env.contains_key("MESOS_DOMAIN_SOCKET"));
}

#[tokio::test]
async fn unix_socket_serves_only_the_agent_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.sock");
    let opts = EmulatorOptions {
        unix_socket: Some(path.clone()),
        checkpoint: false,
        ..EmulatorOptions::default()
    };
    let emu = AgentEmulator::start(opts).await.expect("start");
    let env: HashMap<String, String> = emu.executor_env().into_iter().collect();
    assert_eq!(
        env.get("MESOS_DOMAIN_SOCKET"),
        Some(&path.display().to_string())
    );
    assert!(!env.contains_key("MESOS_RECOVERY_TIMEOUT"));

    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = call_of(call::Type::Heartbeat).encode_to_vec();
    let resp = send(
        &mut sender,
        "POST",
        "/api/v1/executor",
        &[("content-type", PB)],
        body.clone(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let _ = resp.into_body().collect().await;
    let resp = send(&mut sender, "POST", AGENT, &[("content-type", PB)], body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        emu.calls().last().map(|c| c.transport),
        Some(Transport::Unix)
    );
}

/// Seen under a real agent (tests/mesos `framework_teardown`): after a
/// framework teardown the agent sends SHUTDOWN and answers the executor's
/// updates 202 but ignores them, never acknowledging.
#[tokio::test]
async fn teardown_shuts_down_and_ignores_updates_without_ack() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    emu.launch(emu.task_info("t1", None));
    let (mut stream, _) = Stream::open(emu.addr(), PB).await;
    assert_eq!(stream.next_type().await, event::Type::Subscribed);
    assert_eq!(stream.next_type().await, event::Type::Launch);
    let mut c = connect(emu.addr()).await;
    let running = status("t1", TaskState::TaskRunning);
    assert_eq!(
        post_pb(&mut c, &update_call(running)).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(stream.next_type().await, event::Type::Acknowledged);

    emu.teardown_framework();
    assert_eq!(stream.next_type().await, event::Type::Shutdown);
    assert_eq!(emu.executor_phase(), ExecutorPhase::Terminating);
    let killed = status("t1", TaskState::TaskKilled);
    assert_eq!(
        post_pb(&mut c, &update_call(killed)).await.0,
        StatusCode::ACCEPTED
    );
    // No ACK: the next event is the heartbeat sent after the update.
    emu.heartbeat();
    assert_eq!(stream.next_type().await, event::Type::Heartbeat);
    let last = emu.status_log().pop().expect("the update was recorded");
    assert!(last.framework_terminating && !last.effective());
    assert_eq!(emu.states("t1"), vec![TaskState::TaskRunning]);
}

/// Seen under a real agent (tests/mesos): the executor's `PATH` is the
/// containerizer's fixed one, not the agent's (or the test runner's).
#[tokio::test]
async fn executor_path_is_the_containerizers_not_inherited() {
    let emu = AgentEmulator::start(EmulatorOptions::default())
        .await
        .expect("start");
    let env: HashMap<String, String> = emu
        .executor_env_in(std::path::Path::new("/sandbox"))
        .into_iter()
        .collect();
    assert_eq!(env.get("PATH").map(String::as_str), Some(CONTAINER_PATH));
    assert_eq!(
        env.get("PATH").map(String::as_str),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    );
}

#[test]
fn sandbox_output_is_appended_as_the_agents_logger_opens_it() {
    use std::{io::Write, os::fd::AsRawFd};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stdout");
    std::fs::write(&path, "fetcher line\n").expect("fetcher output");
    let mut file = open_sandbox_output(&path).expect("open");
    let fdinfo =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).expect("fdinfo");
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
        .expect("flags in fdinfo");
    assert_eq!(flags & libc::O_ACCMODE, libc::O_WRONLY, "{fdinfo}");
    assert_eq!(flags & libc::O_APPEND, libc::O_APPEND, "{fdinfo}");
    file.write_all(b"task line\n").expect("write");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "fetcher line\ntask line\n"
    );
    let fresh = dir.path().join("stderr");
    drop(open_sandbox_output(&fresh).expect("created when missing"));
    assert!(fresh.is_file());
}
